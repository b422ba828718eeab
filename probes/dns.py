"""DNS probe: ask the gateway's resolver for the AWS endpoint names.

The resolver on port 53 is asked for the A record of every name in
``settings.dns_names``, over UDP or TCP as the rule says. With no names
configured it is asked for ``s3.amazonaws.com``, one name every gateway
needs in every region. The probe passes when every name comes back
NOERROR with at least one address.

The codec is dnspython's message layer (``make_query``, ``to_wire``,
``from_wire``, ``is_response``); the I/O is :mod:`probes.net`. Over UDP
each name has its own socket and exchange, all at once, and only a
datagram that answers its query (same id, same question, QR set) is
taken. Over TCP one connection carries the queries in turn, each framed
with the two-byte length of RFC 1035 4.2.2, as RFC 7766 keeps it.

A reply that does not parse is judged by its header: with our id and the
QR bit (RFC 1035 4.1.1) it is a broken DNS answer, ``protocol-error``;
without them it is not DNS at all (another service, or a middlebox that
answers for it), ``wrong-protocol``, with the first bytes as evidence.
Over UDP such a datagram is ignored while a good one may still come, so
this verdict waits for the deadline.

Limits: only A records are asked (no AAAA), without EDNS, so an answer
is at most 512 bytes over UDP and a truncated one (TC) with no address
fails that name rather than being retried over TCP. No DNSSEC checks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from probes.base import (
    JSONValue,
    Outcome,
    ProbeRequest,
    Reason,
    Transport,
    failed,
    passed,
    printable,
)
from probes.net import (
    Datagram,
    Rejects,
    address_of,
    open_tcp,
    udp_exchange,
    unanswered,
)

DEFAULT_NAME = "s3.amazonaws.com"
"""The name asked when no names are configured."""

# RFC 1035 4.1.1: id (2 bytes), flags (2), four counts (2 each).
_HEADER_SIZE = 12
_QR = 0x80
# Most telling first: a refusal is about this host, a SERVFAIL about the
# resolver's upstream, an NXDOMAIN about one name.
_RCODE_RANK = ("REFUSED", "SERVFAIL", "NXDOMAIN")


class DnsError(ValueError):
    """A reply that is DNS but no usable answer to our query."""


class NotDnsError(DnsError):
    """Bytes that do not even look like a DNS reply to our query."""


@dataclass(frozen=True)
class Answer:
    """What the resolver said about one name."""

    name: str
    rcode: str
    addresses: tuple[str, ...]
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.rcode == "NOERROR" and bool(self.addresses)

    def problem(self) -> str:
        """Why this answer fails, in a few words."""
        if self.rcode != "NOERROR":
            return self.rcode
        if self.truncated:
            return "truncated, no A record"
        return "no A record"


def make_query(name: str) -> dns.message.QueryMessage:
    """An A query for ``name``, with a random id."""
    try:
        return dns.message.make_query(name, dns.rdatatype.A)
    except dns.exception.DNSException as exc:
        raise DnsError(f"{name!r} is not a valid DNS name: {exc}") from exc


def frame(wire: bytes) -> bytes:
    """Prefix a message with its length for TCP (RFC 1035 4.2.2)."""
    return len(wire).to_bytes(2, "big") + wire


def looks_like_reply(query: dns.message.Message, wire: bytes) -> bool:
    """True when the header carries our id and the QR (response) bit."""
    return (
        len(wire) >= _HEADER_SIZE
        and int.from_bytes(wire[:2], "big") == query.id
        and bool(wire[2] & _QR)
    )


def read_answer(query: dns.message.QueryMessage, wire: bytes) -> Answer:
    """Decode ``wire`` as the reply to ``query``, or say why it is not."""
    reply = _decode(query, wire)
    if not isinstance(reply, dns.message.QueryMessage) or not (
        query.is_response(reply)
    ):
        raise DnsError("the reply does not answer our query (id or question)")
    name = query.question[0].name.to_text(omit_final_dot=True)
    rcode = dns.rcode.to_text(reply.rcode())
    truncated = bool(reply.flags & dns.flags.TC)
    return Answer(name, rcode, _addresses(reply), truncated)


def _decode(query: dns.message.Message, wire: bytes) -> dns.message.Message:
    try:
        return dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError) as exc:
        if looks_like_reply(query, wire):
            raise DnsError(f"malformed DNS reply: {exc}") from exc
        raise NotDnsError("not a DNS reply") from exc


def _addresses(reply: dns.message.QueryMessage) -> tuple[str, ...]:
    if reply.rcode() != dns.rcode.NOERROR:
        return ()
    try:
        chain = reply.resolve_chaining()
    except dns.exception.DNSException as exc:
        raise DnsError(f"unusable answer section: {exc}") from exc
    if chain.answer is None:
        return ()
    return tuple(str(rdata) for rdata in chain.answer)


def worst_rcode(answers: list[Answer]) -> str | None:
    """The most telling rcode among the answers, None without any."""
    codes = {answer.rcode for answer in answers}
    for code in _RCODE_RANK:
        if code in codes:
            return code
    others = sorted(codes - {"NOERROR"})
    if others:
        return others[0]
    return "NOERROR" if codes else None


# The probe: thin I/O over the codec above.


@dataclass(frozen=True)
class _Asked:
    """One name's fate: an answer, or the outcome that stopped it."""

    name: str
    result: Answer | Outcome
    rtt_ms: float | None = None


@dataclass
class _Place:
    """Where the probe asks: for details and evidence."""

    address: str
    transport: Transport
    port: int
    asked: list[_Asked] = field(default_factory=list)


async def probe(request: ProbeRequest) -> Outcome:
    """Ask the resolver for every name and judge the answers."""
    address = await address_of(request)
    if isinstance(address, Outcome):
        return address
    names = request.settings.dns_names or (DEFAULT_NAME,)
    place = _Place(address, request.transport, request.port)
    transport = str(request.transport)
    request.log.debug("dns.start", names=len(names), transport=transport)
    if request.transport is Transport.TCP:
        stop = await _ask_tcp(place, names, request)
    else:
        stop = await _ask_udp(place, names, request)
    if stop is not None:
        return stop.with_evidence(**_evidence(place)).at(address)
    return _judge(place).at(address)


async def _ask_udp(
    place: _Place, names: tuple[str, ...], request: ProbeRequest
) -> Outcome | None:
    asks = [_ask_one_udp(place, name, request) for name in names]
    place.asked.extend(await asyncio.gather(*asks))
    for asked in place.asked:
        if isinstance(asked.result, Outcome) and asked.result.reason in (
            Reason.PROTOCOL_ERROR,
            Reason.WRONG_PROTOCOL,
        ):
            return asked.result
    return None


async def _ask_one_udp(
    place: _Place,
    name: str,
    request: ProbeRequest,
) -> _Asked:
    try:
        query = make_query(name)
    except DnsError:
        return _Asked(name, _invalid_name(place, name))
    answers: list[Answer] = []
    rejects = Rejects[DnsError]()

    def accept(data: bytes) -> bool:
        try:
            answers.append(read_answer(query, data))
        except DnsError as exc:
            rejects.note(data, exc)
            return False
        return True

    request.log.debug("dns.query", name=name, transport="udp")
    result = await udp_exchange(
        place.address,
        place.port,
        query.to_wire(),
        request.deadline,
        accept=accept,
    )
    if isinstance(result, Datagram):
        request.log.debug("dns.answer", name=name, rcode=answers[0].rcode)
        return _Asked(name, answers[0], result.rtt_ms)
    if rejects.error is not None:
        garbled = _garbled(place, rejects.first, rejects.error)
        return _Asked(name, garbled.with_evidence(rejected=rejects.count))
    return _Asked(name, unanswered(result, place.address, place.port))


async def _ask_tcp(
    place: _Place, names: tuple[str, ...], request: ProbeRequest
) -> Outcome | None:
    """Ask every name over one connection; open another only when the
    resolver closes one after answering (RFC 7766 lets a server close
    connections it deems idle)."""
    pending = list(names)
    while pending:
        conn = await open_tcp(place.address, place.port, request.deadline)
        if isinstance(conn, Outcome) and _answered(place):
            # A reconnect failed: the names left share its fate.
            place.asked.extend(_Asked(left, conn) for left in pending)
            return None
        if isinstance(conn, Outcome):
            return conn
        request.log.debug("dns.connected", connect_ms=conn.connect_ms)
        reader, writer = await conn.streams()
        try:
            stop = await _ask_on(place, pending, reader, writer, request)
        finally:
            writer.close()
        if stop is not None:
            return stop
    return None


async def _ask_on(
    place: _Place,
    pending: list[str],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: ProbeRequest,
) -> Outcome | None:
    """Ask the pending names in turn on one connection. Return an outcome
    that ends the probe, or None when the names are done or the resolver
    closed the connection after answering at least once."""
    fresh = True
    while pending:
        name = pending[0]
        try:
            query = make_query(name)
        except DnsError:
            place.asked.append(_Asked(name, _invalid_name(place, name)))
            pending.pop(0)
            continue
        got = await _exchange_tcp(place, query, reader, writer, request)
        if got is None:
            return _closed(place, name) if fresh else None
        if isinstance(got, Outcome) and got.reason is Reason.TIMEOUT:
            # The deadline is spent: no later name can be asked either.
            place.asked.extend(_Asked(left, got) for left in pending)
            pending.clear()
            return None
        if isinstance(got, Outcome):
            return got
        place.asked.append(got)
        pending.pop(0)
        fresh = False
    return None


async def _exchange_tcp(
    place: _Place,
    query: dns.message.QueryMessage,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: ProbeRequest,
) -> _Asked | Outcome | None:
    """One framed query and its reply; None if the connection closed
    before any byte of a reply came."""
    loop = asyncio.get_running_loop()
    name = query.question[0].name.to_text(omit_final_dot=True)
    request.log.debug("dns.query", name=name, transport="tcp")
    started = loop.time()
    got = bytearray()
    try:
        async with asyncio.timeout_at(request.deadline.when):
            complete = await _read_reply(query, reader, writer, got)
    except TimeoutError:
        if got:
            return _garbled(place, bytes(got), _partial(query, got))
        return _no_reply(place, name, loop.time() - started)
    if not complete and not got:
        return None
    if not complete:
        return _garbled(place, bytes(got), _partial(query, got))
    try:
        answer = read_answer(query, bytes(got[2:]))
    except DnsError as exc:
        return _garbled(place, bytes(got), exc)
    request.log.debug("dns.answer", name=name, rcode=answer.rcode)
    return _Asked(name, answer, round((loop.time() - started) * 1000, 1))


async def _read_reply(
    query: dns.message.QueryMessage,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    got: bytearray,
) -> bool:
    """Send the framed query and read one framed reply into ``got``;
    False if the connection ended first. The two-byte length bounds the
    read to 65535 bytes."""
    try:
        writer.write(frame(query.to_wire()))
        await writer.drain()
        if not await _fill(reader, got, 2):
            return False
        return await _fill(reader, got, 2 + int.from_bytes(got[:2], "big"))
    except ConnectionError:
        return False


async def _fill(
    reader: asyncio.StreamReader,
    got: bytearray,
    size: int,
) -> bool:
    while len(got) < size:
        chunk = await reader.read(size - len(got))
        if not chunk:
            return False
        got += chunk
    return True


def _partial(query: dns.message.Message, got: bytearray) -> DnsError:
    if looks_like_reply(query, bytes(got[2:])):
        return DnsError("the reply stopped before its end")
    return NotDnsError("not a DNS reply")


# Verdicts.


def _judge(place: _Place) -> Outcome:
    evidence = _evidence(place)
    answers = [a for a in place.asked if isinstance(a.result, Answer)]
    if not answers:
        return _first_failure(place).with_evidence(**evidence)
    bad = [a for a in place.asked if not _resolved(a)]
    if not bad:
        return passed(_all_resolved(place, evidence["rtt_ms"]), **evidence)
    listed = ", ".join(f"{a.name} ({_problem(a.result)})" for a in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    detail = (
        f"{len(bad)} of {len(place.asked)} names failed at "
        f"{place.address}: {listed}{more}"
    )
    remedy = _remedy(place.address, evidence["rcode"])
    return failed(Reason.DNS_FAILURE, detail, remedy, **evidence)


def _resolved(asked: _Asked) -> bool:
    return isinstance(asked.result, Answer) and asked.result.ok


def _answered(place: _Place) -> bool:
    return any(isinstance(a.result, Answer) for a in place.asked)


def _first_failure(place: _Place) -> Outcome:
    """The failure to report when no name was answered: the network's
    before a name that could not be asked."""
    failures = [a.result for a in place.asked if isinstance(a.result, Outcome)]
    for failure in failures:
        if failure.reason is not Reason.NOT_CONFIGURED:
            return failure
    return failures[0]


def _all_resolved(place: _Place, rtt_ms: JSONValue) -> str:
    transport = place.transport.upper()
    if len(place.asked) == 1:
        return (
            f"the resolver at {place.address} resolved {place.asked[0].name} "
            f"over {transport} in {rtt_ms} ms"
        )
    return (
        f"the resolver at {place.address} resolved all {len(place.asked)} "
        f"names over {transport}, the slowest in {rtt_ms} ms"
    )


def _problem(result: Answer | Outcome) -> str:
    if isinstance(result, Answer):
        return result.problem()
    if result.reason is Reason.NOT_CONFIGURED:
        return "not a valid name"
    return "no answer"


def _remedy(address: str, rcode: JSONValue) -> str:
    if rcode == "REFUSED":
        return (
            f"The resolver at {address} refuses these queries: allow this "
            "host to use it, or give it a forwarder for these names."
        )
    if rcode == "SERVFAIL":
        return (
            f"The resolver at {address} cannot resolve these names: let it "
            "reach the internet's DNS servers, or have it forward to a "
            "resolver that can."
        )
    if rcode == "NOERROR":
        return (
            f"The resolver at {address} left some names unanswered or "
            "without an address: check that it reaches its upstream "
            "servers and that no private zone hides these names."
        )
    return (
        f"Make the resolver at {address} resolve these AWS names: check "
        "its forwarders and any private zone that overrides amazonaws.com."
    )


def _evidence(place: _Place) -> dict[str, JSONValue]:
    found = [a.result for a in place.asked if isinstance(a.result, Answer)]
    rtts = [a.rtt_ms for a in place.asked if a.rtt_ms is not None]
    return {
        "resolver": place.address,
        "transport": str(place.transport),
        "rcode": worst_rcode(found),
        "answers": {a.name: _answer_evidence(a) for a in place.asked},
        "rtt_ms": max(rtts) if rtts else None,
    }


def _answer_evidence(asked: _Asked) -> JSONValue:
    result = asked.result
    if not isinstance(result, Answer):
        return {"rcode": None, "addresses": [], "rtt_ms": None}
    return {
        "rcode": result.rcode,
        "addresses": list(result.addresses),
        "rtt_ms": asked.rtt_ms,
    }


def _garbled(place: _Place, data: bytes, error: DnsError) -> Outcome:
    where = f"{place.address} {place.transport.upper()} {place.port}"
    seen = printable(data, 32)
    shown: dict[str, JSONValue] = {
        "first_bytes": printable(data),
        "reply_bytes": len(data),
    }
    if isinstance(error, NotDnsError):
        return failed(
            Reason.WRONG_PROTOCOL,
            f"{where} answered with something that is not DNS: {seen}",
            f"Point the gateway at a DNS resolver: what answers on "
            f"{where} is not one, or a middlebox answers in its place.",
            **shown,
        )
    return failed(
        Reason.PROTOCOL_ERROR,
        f"{where} sent a DNS reply that cannot be used: {error}",
        f"Check the resolver at {place.address} and any DNS-inspecting "
        "firewall on the way: the replies are broken or answer another "
        "question.",
        **shown,
    )


def _closed(place: _Place, name: str) -> Outcome:
    return failed(
        Reason.PROTOCOL_ERROR,
        f"{place.address} accepted TCP {place.port} but closed the "
        f"connection without answering the query for {name}",
        f"Let the resolver at {place.address} answer DNS over TCP "
        "(RFC 7766 requires it; answers too large for UDP need it).",
    )


def _no_reply(place: _Place, name: str, waited: float) -> Outcome:
    return failed(
        Reason.TIMEOUT,
        f"the TCP connection to {place.address} port {place.port} opened "
        f"but no reply to the query for {name} came in {waited:.1f} s",
        waited_s=round(waited, 1),
    )


def _invalid_name(place: _Place, name: str) -> Outcome:
    return failed(
        Reason.NOT_CONFIGURED,
        f"{name!r} is not a valid DNS name to ask {place.address} for",
        "Correct the name in the DNS names setting.",
    )
