"""LDAP and LDAPS probes: does a domain controller's directory answer?

Both probes send one anonymous search of the root DSE (RFC 4511 4.5.1,
RFC 4512 5.1): base "", scope baseObject, filter ``(objectClass=*)``,
asking for the attributes in :data:`ROOT_DSE_ATTRIBUTES`. RFC 4513 5.1.1
lets any client read the root DSE without a bind, and Active Directory
allows it. The replies are matched by message ID; the search ends with
a SearchResultDone (RFC 4511 4.5.2) or a Notice of Disconnection (RFC
4511 4.4.1), after which the probe sends an UnbindRequest (4.3) and
closes.

- :func:`probe_ldap` runs the search in the clear, for 389/TCP;
- :func:`probe_ldaps` first runs the TLS handshake of :mod:`probes.tls`,
  with its certificate verdicts, against ``request.host`` (the name the
  certificate must carry and the SNI; an IP address sends no SNI), then
  the same search over TLS, for 636/TCP.

Any LDAP reply proves an LDAP server, so a search refused with a result
code (a server that wants a bind first) passes too, and the detail says
so. A reply that is not an LDAPMessage at all (an SSH banner, an HTTP
error, a TLS alert, a close before any reply) is ``wrong-protocol``; an
LDAPMessage out of place (another message ID, another operation) or
malformed inside is ``protocol-error``. A failed TLS handshake keeps the
reason :mod:`probes.tls` gives it, with its detail and remedy worded for
a domain controller (whose certificate usually comes from the domain's
own CA) rather than an AWS endpoint.

The codec is pure and sits on :mod:`probes.ber`: :func:`build_search`
and :func:`build_unbind` make request bytes, :func:`frame_size` sizes a
message from its first bytes, :func:`parse_message` decodes one, and
:class:`SearchReplies` follows the replies to one search.

Limits: every read is bounded: one message at most :data:`MAX_MESSAGE`
bytes (a larger length is refused before its bytes are read), at most
:data:`MAX_MESSAGES` messages per search. Controls in replies are
ignored. LDAPS takes two TLS connections, since the handshake of
:mod:`probes.tls` closes its channel once it has judged it: the first
gives the certificate verdict, the second carries the search. The
search proves that the directory answers, not that a bind (Kerberos or
NTLM, as a domain join does) would succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

from probes import ber, http, net, tls
from probes.base import (
    Evidence,
    JSONValue,
    Outcome,
    ProbeRequest,
    Reason,
    Status,
    failed,
    passed,
    printable,
)

MAX_MESSAGE = 256 * 1024
"""Bytes one LDAPMessage may take; AD's whole root DSE is about 10 KiB."""
MAX_MESSAGES = 16
"""Replies read for one search; a base search gives one entry and Done."""
MAX_VALUES = 32
"""Values of one attribute kept in the evidence."""
MAX_TEXT = 256
"""Characters of one value or diagnostic message kept in the evidence."""
_CHUNK = 16 * 1024
_FIRST_BYTES = 64
# The unbind is a courtesy (RFC 4511 4.3); it may not hold up a verdict.
_UNBIND_WAIT = 0.5

# RFC 4511 4.1.1: MessageID ::= INTEGER (0 .. maxInt); 0 is reserved for
# unsolicited notifications (4.4).
MAX_INT = 2**31 - 1
LDAP_VERSION = 3
# RFC 4511 4.4.1.
NOTICE_OF_DISCONNECTION = "1.3.6.1.4.1.1466.20036"
# [MS-ADTS] 3.1.1.3.4.3: LDAP_CAP_ACTIVE_DIRECTORY_OID in the root DSE's
# supportedCapabilities marks an Active Directory domain controller.
ACTIVE_DIRECTORY_CAPABILITY = "1.2.840.113556.1.4.800"

ROOT_DSE_ATTRIBUTES = (
    "namingContexts",
    "supportedLDAPVersion",
    "dnsHostName",
    "defaultNamingContext",
    "supportedSASLMechanisms",
    "supportedCapabilities",
    "vendorName",
    "vendorVersion",
    "serverName",
    "ldapServiceName",
)
"""RFC 4512 5.1 and [MS-ADTS] 3.1.1.3.2 root DSE attributes asked."""

# RFC 4511 4.5.1.2 and 4.5.1.3: scope baseObject, derefAliases
# neverDerefAliases.
_BASE_OBJECT = 0
_NEVER_DEREF_ALIASES = 0
# RFC 4511 4.5.1.7.5: present [7] AttributeDescription.
_PRESENT = ber.context(7)
# RFC 4511 4.1.11: controls [0] Controls, after the protocolOp.
_CONTROLS = ber.context(0, constructed=True)
# RFC 4511 4.1.10: Referral ::= [3] SEQUENCE OF URI, in an LDAPResult.
_REFERRAL = ber.context(3, constructed=True)
# RFC 4511 4.12: responseName [10], responseValue [11].
_RESPONSE_NAME = ber.context(10)
_RESPONSE_VALUE = ber.context(11)
_MESSAGE_TAG = ber.SEQUENCE.identifier()
_VERSION = re.compile(r"[0-9]{1,3}")


class Operation(IntEnum):
    """The protocolOp alternatives of RFC 4511 4.2 to 4.14, by their
    [APPLICATION n] tag."""

    bindRequest = 0
    bindResponse = 1
    unbindRequest = 2
    searchRequest = 3
    searchResEntry = 4
    searchResDone = 5
    modifyRequest = 6
    modifyResponse = 7
    addRequest = 8
    addResponse = 9
    delRequest = 10
    delResponse = 11
    modDNRequest = 12
    modDNResponse = 13
    compareRequest = 14
    compareResponse = 15
    abandonRequest = 16
    searchResRef = 19
    extendedReq = 23
    extendedResp = 24
    intermediateResponse = 25


class ResultCode(IntEnum):
    """LDAPResult's resultCode (RFC 4511 4.1.9 and appendix A)."""

    success = 0
    operationsError = 1
    protocolError = 2
    timeLimitExceeded = 3
    sizeLimitExceeded = 4
    compareFalse = 5
    compareTrue = 6
    authMethodNotSupported = 7
    strongerAuthRequired = 8
    referral = 10
    adminLimitExceeded = 11
    unavailableCriticalExtension = 12
    confidentialityRequired = 13
    saslBindInProgress = 14
    noSuchAttribute = 16
    undefinedAttributeType = 17
    inappropriateMatching = 18
    constraintViolation = 19
    attributeOrValueExists = 20
    invalidAttributeSyntax = 21
    noSuchObject = 32
    aliasProblem = 33
    invalidDNSyntax = 34
    aliasDereferencingProblem = 36
    inappropriateAuthentication = 48
    invalidCredentials = 49
    insufficientAccessRights = 50
    busy = 51
    unavailable = 52
    unwillingToPerform = 53
    loopDetect = 54
    namingViolation = 64
    objectClassViolation = 65
    notAllowedOnNonLeaf = 66
    notAllowedOnRDN = 67
    entryAlreadyExists = 68
    objectClassModsProhibited = 69
    affectsMultipleDSAs = 71
    other = 80


def result_name(code: int) -> str:
    """The RFC 4511 name of a result code, or ``code N`` for others."""
    try:
        return ResultCode(code).name
    except ValueError:
        return f"code {code}"


def operation_name(op: int) -> str:
    try:
        return Operation(op).name
    except ValueError:
        return f"[APPLICATION {op}]"


class LdapError(ValueError):
    """An LDAPMessage this codec cannot accept."""


class NotLdapError(LdapError):
    """Bytes that are not an LDAPMessage at all."""


# Messages (RFC 4511 4.1.1 to 4.14), as far as the probe reads them.


@dataclass(frozen=True)
class LdapResult:
    """RFC 4511 4.1.9: the outcome of an operation."""

    code: int
    matched_dn: str
    diagnostic: str
    referrals: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return result_name(self.code)


@dataclass(frozen=True)
class SearchEntry:
    """RFC 4511 4.5.2: SearchResultEntry, attribute values kept raw."""

    object_name: str
    attributes: tuple[tuple[str, tuple[bytes, ...]], ...]

    def values(self, name: str) -> tuple[bytes, ...]:
        """The values of attribute ``name``; attribute descriptions are
        case-insensitive (RFC 4512 2.5)."""
        wanted = name.lower()
        found: list[bytes] = []
        for key, values in self.attributes:
            if key.lower() == wanted:
                found.extend(values)
        return tuple(found)


@dataclass(frozen=True)
class SearchDone:
    """RFC 4511 4.5.2: SearchResultDone."""

    result: LdapResult


@dataclass(frozen=True)
class SearchReference:
    """RFC 4511 4.5.3: SearchResultReference, its URIs."""

    uris: tuple[str, ...]


@dataclass(frozen=True)
class ExtendedResponse:
    """RFC 4511 4.12: an ExtendedResponse, or an unsolicited one (4.4)."""

    result: LdapResult
    name: str | None
    value: bytes | None


@dataclass(frozen=True)
class OtherOperation:
    """A protocolOp this probe never expects in reply to a search."""

    op: int


Body = SearchEntry | SearchDone | SearchReference | ExtendedResponse | OtherOperation


@dataclass(frozen=True)
class Message:
    """RFC 4511 4.1.1: LDAPMessage, controls left out."""

    message_id: int
    body: Body

    @property
    def is_disconnection(self) -> bool:
        """A Notice of Disconnection (RFC 4511 4.4.1). Some servers send
        it without its responseName, so message ID 0 and an unnamed
        ExtendedResponse count as one too."""
        body = self.body
        return (
            self.message_id == 0
            and isinstance(body, ExtendedResponse)
            and body.name in (None, NOTICE_OF_DISCONNECTION)
        )


# Encoding.


def build_search(
    message_id: int,
    attributes: Iterable[str] = ROOT_DSE_ATTRIBUTES,
    time_limit: int = 0,
) -> bytes:
    """An LDAPMessage with a SearchRequest for the root DSE
    (RFC 4511 4.5.1): the fields in the order of its SEQUENCE."""
    request = ber.constructed(
        ber.application(Operation.searchRequest),
        ber.octet_string(b""),  # baseObject: the root DSE
        ber.enumerated(_BASE_OBJECT),
        ber.enumerated(_NEVER_DEREF_ALIASES),
        ber.integer(1),  # sizeLimit
        ber.integer(time_limit),  # seconds; 0 means none
        ber.boolean(False),  # typesOnly
        ber.octet_string("objectClass", _PRESENT),
        ber.sequence(*(ber.octet_string(name) for name in attributes)),
    )
    return _message(message_id, request)


def build_unbind(message_id: int) -> bytes:
    """RFC 4511 4.3: UnbindRequest ::= [APPLICATION 2] NULL."""
    unbind = ber.application(Operation.unbindRequest, constructed=False)
    return _message(message_id, ber.null(unbind))


def _message(message_id: int, op: bytes) -> bytes:
    if not 0 < message_id <= MAX_INT:
        raise LdapError(f"message ID {message_id} is out of range")
    return ber.sequence(ber.integer(message_id), op)


# Decoding.


def frame_size(data: bytes) -> int | None:
    """The size of the LDAPMessage that ``data`` starts with, or None
    while its header is incomplete. Raises NotLdapError for bytes that
    cannot start one, or a size over :data:`MAX_MESSAGE`."""
    if data and data[0] != _MESSAGE_TAG:
        raise NotLdapError(f"starts with {data[0]:#04x}, not a SEQUENCE")
    try:
        return ber.frame_size(data, MAX_MESSAGE)
    except ber.BerError as exc:
        raise NotLdapError(str(exc)) from exc


def parse_message(data: bytes) -> Message:
    """Decode one whole LDAPMessage.

    Raises NotLdapError when the bytes are not BER or not shaped as an
    LDAPMessage (a SEQUENCE of a message ID and an [APPLICATION n]
    operation), and LdapError when the operation inside is malformed.
    """
    try:
        parts = ber.children_of(ber.decode(data), ber.SEQUENCE)
        if not 2 <= len(parts) <= 3:
            raise NotLdapError(f"an LDAPMessage of {len(parts)} parts")
        message_id = ber.read_integer(parts[0])
    except ber.BerError as exc:
        raise NotLdapError(str(exc)) from exc
    op = parts[1]
    if not 0 <= message_id <= MAX_INT:
        raise NotLdapError(f"message ID {message_id} is out of range")
    if op.tag.cls is not ber.TagClass.APPLICATION:
        raise NotLdapError(f"protocolOp is {ber.describe(op.tag)}")
    if len(parts) == 3 and parts[2].tag != _CONTROLS:
        raise LdapError(f"{ber.describe(parts[2].tag)} after the protocolOp")
    try:
        return Message(message_id, _body(op))
    except ber.BerError as exc:
        raise LdapError(f"{operation_name(op.tag.number)}: {exc}") from exc


def _body(op: ber.Element) -> Body:
    number = op.tag.number
    if number == Operation.searchResEntry:
        return _entry(ber.children_of(op, ber.application(number)))
    if number == Operation.searchResDone:
        parts = ber.children_of(op, ber.application(number))
        return SearchDone(_result(parts))
    if number == Operation.searchResRef:
        uris = ber.children_of(op, ber.application(number))
        return SearchReference(tuple(_text(uri) for uri in uris))
    if number == Operation.extendedResp:
        return _extended(ber.children_of(op, ber.application(number)))
    return OtherOperation(number)


def _entry(parts: tuple[ber.Element, ...]) -> SearchEntry:
    """SEQUENCE { objectName LDAPDN, attributes PartialAttributeList }."""
    if len(parts) != 2:
        raise LdapError(f"a SearchResultEntry of {len(parts)} parts")
    attributes: list[tuple[str, tuple[bytes, ...]]] = []
    for attribute in ber.children_of(parts[1], ber.SEQUENCE):
        # PartialAttribute ::= SEQUENCE { type, vals SET OF value }
        pair = ber.children_of(attribute, ber.SEQUENCE)
        if len(pair) != 2:
            raise LdapError(f"an attribute of {len(pair)} parts")
        values = ber.children_of(pair[1], ber.SET)
        raw = tuple(ber.read_octets(value) for value in values)
        attributes.append((_text(pair[0]), raw))
    return SearchEntry(_text(parts[0]), tuple(attributes))


def _result(parts: tuple[ber.Element, ...]) -> LdapResult:
    """LDAPResult: resultCode, matchedDN, diagnosticMessage, referral."""
    if len(parts) < 3:
        raise LdapError(f"an LDAPResult of {len(parts)} parts")
    code = ber.read_enumerated(parts[0])
    referrals: tuple[str, ...] = ()
    if len(parts) > 3 and parts[3].tag == _REFERRAL:
        referrals = tuple(_text(uri) for uri in parts[3].children)
    return LdapResult(code, _text(parts[1]), _text(parts[2]), referrals)


def _extended(parts: tuple[ber.Element, ...]) -> ExtendedResponse:
    """COMPONENTS OF LDAPResult, responseName [10], responseValue [11]."""
    result = _result(parts)
    name: str | None = None
    value: bytes | None = None
    for part in parts[3:]:
        if part.tag == _RESPONSE_NAME:
            oid = ber.read_octets(part, _RESPONSE_NAME)
            name = oid.decode("ascii", "replace")
        elif part.tag == _RESPONSE_VALUE:
            value = ber.read_octets(part, _RESPONSE_VALUE)
    return ExtendedResponse(result, name, value)


def _text(element: ber.Element) -> str:
    """An LDAPString (RFC 4511 4.1.2, UTF-8); a bad byte becomes U+FFFD,
    as the text only ends up in a report."""
    return ber.read_octets(element).decode("utf-8", "replace")


# Following one search.


@dataclass(frozen=True)
class Reply:
    """How a search ended: its result, the entry if one came back, and
    whether the server ended the session instead of the search."""

    result: LdapResult
    entry: SearchEntry | None
    disconnected: bool = False
    references: int = 0


@dataclass
class SearchReplies:
    """The replies to the search with ``message_id`` (RFC 4511 4.5.2):
    entries and references, then SearchResultDone; or a Notice of
    Disconnection at any point."""

    message_id: int
    entry: SearchEntry | None = None
    references: int = 0

    def take(self, message: Message) -> Reply | None:
        """Take the next message; the Reply once the search has ended.

        Raises LdapError for a message that has no place here.
        """
        body = message.body
        if message.is_disconnection:
            assert isinstance(body, ExtendedResponse)
            return Reply(body.result, self.entry, True, self.references)
        if message.message_id == 0 and isinstance(body, ExtendedResponse):
            return None  # another unsolicited notification (RFC 4511 4.4)
        if message.message_id != self.message_id:
            raise LdapError(
                f"a reply to message {message.message_id}, not to our {self.message_id}"
            )
        return self._ours(body)

    def _ours(self, body: Body) -> Reply | None:
        if isinstance(body, SearchEntry):
            self.entry = self.entry or body
            return None
        if isinstance(body, SearchReference):
            self.references += 1
            return None
        if isinstance(body, SearchDone):
            return Reply(body.result, self.entry, False, self.references)
        what = (
            "ExtendedResponse"
            if isinstance(body, ExtendedResponse)
            else operation_name(body.op)
        )
        raise LdapError(f"answered the search with {what}")


def root_dse_facts(entry: SearchEntry | None) -> Evidence:
    """The root DSE's facts for a report, each bounded in size."""
    if entry is None:
        return {}
    capabilities = _texts(entry, "supportedCapabilities")
    facts: Evidence = {
        "naming_contexts": _texts(entry, "namingContexts"),
        "default_naming_context": _single(entry, "defaultNamingContext"),
        "dns_host_name": _single(entry, "dnsHostName"),
        "supported_ldap_versions": _versions(entry),
        "supported_sasl_mechanisms": _texts(entry, "supportedSASLMechanisms"),
        "active_directory": ACTIVE_DIRECTORY_CAPABILITY in capabilities,
    }
    names = (_single(entry, "vendorName"), _single(entry, "vendorVersion"))
    vendor = " ".join(name for name in names if name)
    if vendor:
        facts["vendor"] = vendor
    server = _single(entry, "serverName")
    if server:
        facts["server_name"] = server
    return facts


def _versions(entry: SearchEntry) -> list[JSONValue]:
    """supportedLDAPVersion values (RFC 4512 5.1.6), as numbers."""
    texts = _texts(entry, "supportedLDAPVersion")
    return [int(v) for v in texts if _VERSION.fullmatch(v)]


def _texts(entry: SearchEntry, name: str) -> list[str]:
    values = entry.values(name)[:MAX_VALUES]
    return [_bounded(v.decode("utf-8", "replace")) for v in values]


def _single(entry: SearchEntry, name: str) -> str | None:
    values = _texts(entry, name)
    return values[0] if values else None


def _bounded(text: str) -> str:
    """Text from the server, fit for a report: trailing NULs (AD ends
    its diagnostic messages with one) dropped, control characters
    escaped, at most MAX_TEXT characters kept."""
    text = text.rstrip("\x00")
    cut = text[:MAX_TEXT]
    shown = "".join(c if c.isprintable() else _escape(c) for c in cut)
    return shown + "..." if len(text) > MAX_TEXT else shown


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# The probes: thin I/O over the codec above.


class _PeerClosed(Exception):
    """The server closed the connection before the search ended."""


@dataclass
class _Session:
    """One LDAP connection's reading side and what it has seen."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pending: bytearray = field(default_factory=bytearray)
    first: bytes = b""
    received: int = 0
    messages: int = 0

    async def message(self) -> Message:
        """Read one whole LDAPMessage, never more than MAX_MESSAGE."""
        while True:
            size = frame_size(bytes(self.pending[:8]))
            if size is not None and len(self.pending) >= size:
                data = bytes(self.pending[:size])
                del self.pending[:size]
                message = parse_message(data)
                self.messages += 1
                return message
            want = _CHUNK if size is None else size - len(self.pending)
            chunk = await self.reader.read(min(want, 4 * _CHUNK))
            if not chunk:
                raise _PeerClosed
            self.first += chunk[: _FIRST_BYTES - len(self.first)]
            self.received += len(chunk)
            self.pending += chunk


async def probe_ldap(request: ProbeRequest) -> Outcome:
    """Search the root DSE in the clear (LDAP, 389/TCP)."""
    conn = await net.connect(request)
    if isinstance(conn, Outcome):
        return conn
    address = conn.address
    request.log.debug("ldap.connected", connect_ms=conn.connect_ms)
    reader, writer = await conn.streams()
    where = f"{address} TCP {request.port}"
    outcome = await _search(_Session(reader, writer), request, where)
    return outcome.with_evidence(connect_ms=conn.connect_ms).at(address)


async def probe_ldaps(request: ProbeRequest) -> Outcome:
    """Judge the TLS handshake as :mod:`probes.tls` does, then search
    the root DSE over TLS (LDAPS, 636/TCP)."""
    address = await net.address_of(request)
    if isinstance(address, Outcome):
        return address

    async def reopen() -> tls.Channel | Outcome:
        return await tls.connect(address, request.port, request.deadline)

    channel = await reopen()
    if isinstance(channel, Outcome):
        return channel
    verdict = await tls.handshake(
        channel,
        request.host,
        request.port,
        settings=request.settings,
        deadline=request.deadline,
        log=request.log,
        reopen=reopen,
    )
    if verdict.status is not Status.PASS:
        return _for_ldaps(verdict, request).at(address)
    outcome = await _search_over_tls(address, request, verdict)
    return outcome.with_evidence(**verdict.evidence).at(address)


async def _search_over_tls(
    address: str, request: ProbeRequest, verdict: Outcome
) -> Outcome:
    """A second, verified TLS connection that carries the search."""
    conn = await net.open_tcp(address, request.port, request.deadline)
    if isinstance(conn, Outcome):
        return conn
    context = tls.make_context(request.settings.ca_bundle)
    try:
        async with asyncio.timeout_at(request.deadline.when):
            reader, writer = await asyncio.open_connection(
                sock=conn.sock,
                ssl=context,
                server_hostname=request.host,
                ssl_handshake_timeout=max(request.deadline.remaining(), 0.01),
            )
    except (TimeoutError, OSError) as exc:
        conn.close()
        return _second_handshake_failed(address, request, exc)
    version = verdict.evidence.get("tls_version", "TLS")
    where = f"{address} TCP {request.port} over {version}"
    return await _search(_Session(reader, writer), request, where)


async def _search(session: _Session, request: ProbeRequest, where: str) -> Outcome:
    """Run the search, then unbind a peer that speaks LDAP, and close."""
    message_id = new_message_id()
    try:
        return await _exchange(session, message_id, request, where)
    finally:
        unbind = message_id + 1 if session.messages else None
        await _close(session.writer, unbind, request)


def new_message_id() -> int:
    """A random message ID, so a stale or forged reply rarely matches;
    never 0 (RFC 4511 4.1.1.1) nor maxInt, whose successor the unbind
    could not take."""
    return secrets.randbelow(MAX_INT - 1) + 1


async def _exchange(
    session: _Session, message_id: int, request: ProbeRequest, where: str
) -> Outcome:
    """Send the search, follow its replies and judge them."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout_at(request.deadline.when):
            await _send(session, _search_bytes(message_id, request))
            request.log.debug("ldap.search_sent", message_id=message_id)
            reply = await _follow(session, SearchReplies(message_id), request)
        outcome = _judge(reply, where)
    except TimeoutError:
        outcome = _timed_out(session, where, loop.time() - started)
    except (_PeerClosed, OSError):
        outcome = _closed(session, where)
    except LdapError as exc:
        outcome = _refused_reply(session, where, exc)
    elapsed = round((loop.time() - started) * 1000, 1)
    return outcome.with_evidence(ldap_ms=elapsed)


def _search_bytes(message_id: int, request: ProbeRequest) -> bytes:
    # RFC 4511 4.5.1.5: the server's own time limit, in whole seconds.
    time_limit = max(1, int(request.deadline.remaining()))
    return build_search(message_id, time_limit=time_limit)


async def _send(session: _Session, data: bytes) -> None:
    """Write a request; a peer that already hung up is seen by the read
    that follows, which also picks up what it said before."""
    with contextlib.suppress(ConnectionError):
        session.writer.write(data)
        await session.writer.drain()


async def _follow(
    session: _Session, replies: SearchReplies, request: ProbeRequest
) -> Reply:
    for _ in range(MAX_MESSAGES):
        message = await session.message()
        request.log.debug(
            "ldap.message",
            message_id=message.message_id,
            op=type(message.body).__name__,
        )
        reply = replies.take(message)
        if reply is not None:
            return reply
    raise LdapError(f"no SearchResultDone within {MAX_MESSAGES} messages")


async def _close(
    writer: asyncio.StreamWriter, unbind: int | None, request: ProbeRequest
) -> None:
    """Unbind (RFC 4511 4.3) when the peer speaks LDAP, then close; the
    unbind gets a short, bounded wait, the rest is dropped."""
    if unbind is None:
        await http.close(writer)
        return
    wait = min(_UNBIND_WAIT, request.deadline.remaining())
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(wait):
            writer.write(build_unbind(unbind))
            writer.close()
            await writer.wait_closed()
    await http.close(writer)


# Verdicts.


def _judge(reply: Reply, where: str) -> Outcome:
    result = reply.result
    facts = root_dse_facts(reply.entry)
    evidence: Evidence = {"result_code": result.name, **facts}
    if result.diagnostic:
        evidence["diagnostic_message"] = _bounded(result.diagnostic)
    if reply.references:
        evidence["references"] = reply.references
    if reply.disconnected:
        evidence["disconnected"] = True
    return passed(_passed_detail(reply, where, facts), **evidence)


def _passed_detail(reply: Reply, where: str, facts: Evidence) -> str:
    result = reply.result
    why = result.name
    if result.diagnostic:
        why += f": {_bounded(result.diagnostic)}"
    if reply.disconnected:
        return (
            f"an LDAP server answers on {where} but ended the session "
            f"with a Notice of Disconnection ({why})"
        )
    if result.code != ResultCode.success:
        return (
            f"an LDAP server answers on {where} but refused the root DSE "
            f"to an anonymous search ({why})"
        )
    if reply.entry is None:
        return (
            f"an LDAP server answers on {where}; the root DSE search "
            "succeeded but returned no entry (hidden from anonymous users)"
        )
    server = (
        "an Active Directory domain controller"
        if facts.get("active_directory")
        else "an LDAP server"
    )
    return f"{server} answers on {where}: {_describe(facts)}"


def _describe(facts: Evidence) -> str:
    host = facts.get("dns_host_name")
    read = f"root DSE of {host}" if host else "root DSE read"
    contexts = facts.get("naming_contexts")
    if not isinstance(contexts, list) or not contexts:
        return f"{read}, no naming contexts"
    shown = "; ".join(str(c) for c in contexts[:3])
    more = f" and {len(contexts) - 3} more" if len(contexts) > 3 else ""
    return f"{read}, naming contexts {shown}{more}"


_REMEDY_NOT_LDAP = (
    "Something other than an LDAP server answers on this port: check that "
    "the address is a domain controller and that no proxy or port forward "
    "sits in between."
)


def _refused_reply(session: _Session, where: str, error: LdapError) -> Outcome:
    evidence: dict[str, JSONValue] = {
        "first_bytes": printable(session.first),
        "error": str(error),
    }
    if isinstance(error, NotLdapError) and session.messages == 0:
        return failed(
            Reason.WRONG_PROTOCOL,
            f"{where} answered an LDAP search with {_what(session.first)}: "
            f"{printable(session.first, 32)}",
            _REMEDY_NOT_LDAP,
            **evidence,
        )
    return failed(
        Reason.PROTOCOL_ERROR,
        f"the LDAP server on {where} sent a reply RFC 4511 does not allow: {error}",
        "Check what answers on this port: a domain controller answers a "
        "root DSE search with a standard LDAPv3 reply.",
        **evidence,
        messages=session.messages,
    )


def _what(first: bytes) -> str:
    if first.startswith(b"SSH-"):
        return "an SSH banner"
    if first.startswith(b"HTTP/"):
        return "HTTP"
    if tls.looks_like_tls(first):
        return "TLS (an LDAPS port?)"
    return "something that is not LDAP"


def _closed(session: _Session, where: str) -> Outcome:
    if session.messages:
        return failed(
            Reason.PROTOCOL_ERROR,
            f"the LDAP server on {where} closed the connection before it "
            "ended the search",
            "Check the domain controller's LDAP policies and any IPS on "
            "the way: the search was cut off.",
            messages=session.messages,
            first_bytes=printable(session.first),
        )
    if session.received:
        detail = (
            f"{where} closed the connection with an incomplete reply to an LDAP search"
        )
    else:
        detail = (
            f"{where} closed the connection without a reply to an LDAP "
            "search (a port that takes only TLS, such as LDAPS, does that)"
        )
    return failed(
        Reason.WRONG_PROTOCOL,
        detail,
        _REMEDY_NOT_LDAP,
        first_bytes=printable(session.first),
    )


def _timed_out(session: _Session, where: str, waited_s: float) -> Outcome:
    waited = round(waited_s, 1)
    if session.received == 0:
        detail = (
            f"the TCP connection to {where} opened but no LDAP reply came in {waited} s"
        )
    else:
        detail = f"the LDAP reply from {where} did not finish in {waited} s"
    return failed(
        Reason.TIMEOUT,
        detail,
        "Check the firewall or IPS between the gateway and the domain "
        "controller: it lets TCP through but holds LDAP.",
        waited_s=waited,
        received_bytes=session.received,
        first_bytes=printable(session.first),
    )


def _second_handshake_failed(
    address: str, request: ProbeRequest, exc: BaseException
) -> Outcome:
    what = "timed out" if isinstance(exc, TimeoutError) else str(exc)
    return failed(
        Reason.PROTOCOL_ERROR,
        f"{address} TCP {request.port} passed one TLS handshake but failed "
        f"the next, which was to carry the LDAP search: {what}",
        "Check the domain controller's connection limits and any IPS on "
        "the way: TLS to it works only some of the time.",
        ssl_error=what,
    )


def _for_ldaps(outcome: Outcome, request: ProbeRequest) -> Outcome:
    """Word a failed TLS verdict of :mod:`probes.tls` for a domain
    controller: the reason stays, the remedy (written there for AWS
    endpoints) and some details change."""
    if outcome.reason is Reason.TLS_INTERCEPTED:
        return _unknown_issuer(outcome, request)
    if outcome.reason is Reason.REFUSED:
        return _handshake_dropped(outcome, request)
    remedy = _LDAPS_REMEDIES.get(outcome.reason)
    if remedy is None or not outcome.remedy:
        return outcome
    host = request.host
    if outcome.reason is Reason.TLS_UNTRUSTED and net.is_address(host):
        remedy += (
            " Domain controllers' certificates rarely name an IP address: "
            "probe the domain controller by its DNS name."
        )
    remedy = remedy.replace("{host}", host).replace("{port}", str(request.port))
    return dataclasses.replace(outcome, remedy=remedy)


def _unknown_issuer(outcome: Outcome, request: ProbeRequest) -> Outcome:
    # An AD domain controller's certificate usually comes from the
    # domain's own CA, which the system store lacks: as likely as a
    # middlebox.
    target = http.authority(request.host, request.port)
    issuer = outcome.evidence.get("issuer") or "an issuer"
    bundle = request.settings.ca_bundle
    trust = f"the CA bundle {bundle}" if bundle else "this host"
    return dataclasses.replace(
        outcome,
        detail=(
            f"the certificate presented by {target} is signed by "
            f"'{issuer}', which {trust} does not trust: the domain's own "
            "CA missing from the trust, or TLS inspection on the way"
        ),
        remedy=(
            "If the domain controller's certificate comes from the "
            "domain's own CA (AD CS), pass that CA's certificate as the "
            f"CA bundle; otherwise exempt LDAPS to {request.host} from TLS "
            "inspection."
        ),
    )


def _handshake_dropped(outcome: Outcome, request: ProbeRequest) -> Outcome:
    host = request.host
    target = http.authority(host, request.port)
    return dataclasses.replace(
        outcome,
        detail=(
            f"{target} ended the connection during the TLS handshake: "
            "a domain controller without a certificate for LDAPS does "
            "that, as does a firewall that filters TLS by server name"
        ),
        remedy=(
            "Enroll a server certificate for the domain controller's "
            f"name on {host} (from AD CS or another CA), or allow TLS "
            f"to {host} on port {request.port} in the firewall."
        ),
    )


_LDAPS_REMEDIES = {
    Reason.TLS_UNTRUSTED: (
        "Give the domain controller {host} a certificate that is valid now "
        "and names {host}, and check this host's clock against NTP."
    ),
    Reason.WRONG_PROTOCOL: (
        "Something other than LDAPS answers on {host} port {port}: check "
        "that the address is a domain controller with LDAPS enabled."
    ),
    Reason.PROTOCOL_ERROR: (
        "Check the TLS settings of the domain controller {host}: LDAPS "
        "needs TLS 1.2 or later, with a certificate for its name."
    ),
    Reason.TIMEOUT: (
        "Check the firewall or IPS between the gateway and {host}: it lets "
        "TCP {port} through but holds the TLS handshake."
    ),
}
