"""Portmapper, NFS and mountd probes: the ONC RPC services of an NFS share.

Three probes, one per port of the NFS rule, each over the transport the
rule names (TCP or UDP):

- :func:`probe_portmap` (111) asks the portmapper (RFC 1833, version 2)
  with PMAPPROC_GETPORT where NFS v3 and mountd v3 listen over the same
  transport, and with PMAPPROC_DUMP for every registered program. It
  passes when both are registered at the ports the firewall rules are
  written for, 2049 and 20048. A program registered elsewhere fails:
  clients follow the portmapper to that port, and a firewall open only
  for the standard ones lets no client mount.
- :func:`probe_nfs` (2049) calls the NULL procedure of NFS v3 and, over
  TCP, v4 (UDP is tried with v3 only: NFSv4 clients use a transport
  with congestion control, RFC 7530 3.1). A PROG_MISMATCH answer tells the
  versions the server does support. It passes when v3 or v4 answers.
- :func:`probe_mountd` (20048) calls MOUNT v3 NULL, then
  MOUNTPROC3_EXPORT for the export list (RFC 1813 5.2.5). It passes when
  NULL answers, with the export list as evidence when it comes.

Calls carry AUTH_NONE; when a server refuses that with AUTH_ERROR
(too weak, bad or rejected credentials) the call is made once more with
AUTH_SYS as user and group nobody, and the evidence says so. Each call
has a fresh random xid and only a reply with that xid and msg_type REPLY
is taken. Over TCP (RFC 5531 11) one connection carries a probe's calls
in turn, in records of bounded size and fragment count; a stale reply
with another xid is skipped, a few times at most. Over UDP each call is
one exchange of :func:`probes.net.udp_exchange`, retransmitted with the
same xid as RPC clients do.

What is not RPC is told apart from a broken RPC server: bytes whose
record mark or header cannot start a reply (an SSH banner, an HTTP
answer, our own call echoed back) or a peer that closes at once are
``wrong-protocol`` with the first bytes as evidence; a reply that does
not decode, or an RPC-level refusal, is ``protocol-error``. Over UDP a
datagram that is not our reply is ignored while the right one may still
come, so that verdict waits for the deadline.

Limits: the portmapper is asked in version 2 only, which lists IPv4
TCP and UDP registrations (rpcbind versions 3 and 4 also list IPv6 and
local ones). rpcbind answers GETPORT for a version that is not
registered with the port of another version of the same program, so
the DUMP list decides whether v3 itself is registered when it is
available. NULL proves an NFS server answers in that version, not that
a client may mount: no MNT, no file handle, no NFSv4 minor version
(4.1 is negotiated inside COMPOUND). Calls come from an unprivileged
source port; a server that requires a reserved one may refuse EXPORT,
which shows as the reason the export list is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from probes.base import (
    JSONValue,
    Outcome,
    ProbeRequest,
    Reason,
    Transport,
    failed,
    held_open,
    passed,
    printable,
    warned,
)
from probes.net import (
    Datagram,
    Rejects,
    address_of,
    open_tcp,
    udp_exchange,
    unanswered,
)
from probes.oncrpc import (
    MOUNT_PROG,
    MOUNT_VERS,
    NFS_PROG,
    PROGRAM_NAMES,
    AcceptStat,
    AuthFlavor,
    AuthStat,
    Call,
    Export,
    IpProto,
    Mapping,
    MsgType,
    RecordReader,
    RejectStat,
    Reply,
    RpcError,
    auth_sys,
    dump_call,
    export_call,
    frame_record,
    getport_call,
    is_reply_to,
    null_call,
    parse_dump,
    parse_exports,
    parse_getport,
    parse_reply,
    peek_header,
)

NFS_PORT = 2049
"""Where NFS listens, and where firewall rules for it are written."""
MOUNTD_PORT = 20048
"""Where mountd listens on a file gateway, and the rule's port for it."""
NFS_VERSIONS_TCP = (3, 4)
NFS_VERSIONS_UDP = (3,)

# A read takes at most this many bytes at once; the whole reply is
# bounded by oncrpc.MAX_RECORD.
_CHUNK = 64 * 1024
# Replies over TCP with another xid (stale, or meant for another call)
# skipped before the server is judged broken.
MAX_STRAY_REPLIES = 8
# The credential used when a server refuses AUTH_NONE: user and group
# nobody (RFC 5531 appendix A; 65534 by convention).
_NOBODY = 65534
_MACHINE = "sgw-reach"
# AUTH_ERROR answers that a stronger credential may cure.
_RETRY_AUTH = frozenset(
    {AuthStat.AUTH_TOOWEAK, AuthStat.AUTH_BADCRED, AuthStat.AUTH_REJECTEDCRED}
)
_PROTO_NAMES: dict[int, str] = {
    IpProto.IPPROTO_TCP: "tcp",
    IpProto.IPPROTO_UDP: "udp",
}


def new_xid() -> int:
    """A fresh random 32-bit transaction id."""
    return secrets.randbits(32)


def program_name(prog: int) -> str | None:
    return PROGRAM_NAMES.get(prog)


def proto_name(prot: int) -> str:
    """``tcp`` or ``udp`` for the IPPROTO numbers of RFC 1833."""
    return _PROTO_NAMES.get(prot, str(prot))


def mapping_evidence(mapping: Mapping) -> dict[str, JSONValue]:
    return {
        "prog": mapping.prog,
        "name": program_name(mapping.prog),
        "vers": mapping.vers,
        "proto": proto_name(mapping.prot),
        "port": mapping.port,
    }


def export_evidence(export: Export) -> dict[str, JSONValue]:
    return {"dir": export.dir, "groups": list(export.groups)}


def is_rpc_reply_start(data: bytes) -> bool:
    """True when ``data`` (an RPC message, no record mark) starts like
    a reply: msg_type REPLY in the second word."""
    header = peek_header(data)
    return header is not None and header[1] == MsgType.REPLY


# The channels: one RPC call, one reply, over TCP or UDP.


@dataclass(frozen=True)
class _Place:
    """Where a probe calls and what it expects there."""

    address: str
    port: int
    transport: Transport
    service: str

    @property
    def where(self) -> str:
        return f"{self.address} {self.transport.upper()} {self.port}"


@dataclass(frozen=True)
class _Answer:
    """A call and the reply that matched it."""

    call: Call
    reply: Reply
    rtt_ms: float

    @property
    def auth(self) -> str:
        return AuthFlavor(self.call.cred.flavor).name


@dataclass
class _Tcp:
    """One TCP connection at a time, carrying the calls in turn."""

    place: _Place
    request: ProbeRequest
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    records: RecordReader = field(default_factory=RecordReader)
    answered: bool = False
    connect_ms: float | None = None

    async def exchange(self, call: Call) -> Reply | Outcome:
        """Send ``call`` and read its reply; reconnect once when the
        server closed, before any reply byte, a connection it had
        already answered on (servers close idle connections)."""
        for _attempt in range(2):
            if self.streams is None:
                opened = await self._open()
                if opened is not None:
                    return opened
            result = await self._exchange_once(call)
            if result is not None:
                return result
            reused = self.answered
            self.close()
            if not reused:
                break
        return _closed(self.place)

    async def _open(self) -> Outcome | None:
        conn = await open_tcp(
            self.place.address, self.place.port, self.request.deadline
        )
        if isinstance(conn, Outcome):
            return conn
        self.connect_ms = conn.connect_ms
        self.request.log.debug("rpc.connected", connect_ms=conn.connect_ms)
        self.streams = await conn.streams()
        self.records = RecordReader()
        self.answered = False
        return None

    async def _exchange_once(self, call: Call) -> Reply | Outcome | None:
        assert self.streams is not None
        reader, writer = self.streams
        first = bytearray()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout_at(self.request.deadline.when):
                await _send(writer, call)
                reply = await self._read_reply(reader, call, first)
        except TimeoutError:
            waited = loop.time() - started
            return _tcp_timeout(self.place, bytes(first), waited)
        except RpcError as exc:
            return _garbled(self.place, bytes(first), exc)
        if reply is not None:
            self.answered = True
        return reply

    async def _read_reply(
        self, reader: asyncio.StreamReader, call: Call, first: bytearray
    ) -> Reply | None:
        """Read records until the reply to ``call``; None when the
        connection ends before any byte of it. ``first`` keeps the
        first bytes read, for evidence."""
        strays = 0
        while True:
            record = self.records.next_record()
            if record is None:
                chunk = await _read(reader)
                if not chunk and not first and not self.records.pending:
                    return None
                if not chunk:
                    raise RpcError("the connection closed inside a record")
                _keep(first, chunk)
                self.records.feed(chunk)
                continue
            reply = parse_reply(record)
            if reply.xid == call.xid:
                return reply
            strays += 1
            if strays > MAX_STRAY_REPLIES:
                raise RpcError(f"{strays} replies answering no call of ours")

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def _send(writer: asyncio.StreamWriter, call: Call) -> None:
    """Send one call as one record; a reset shows in the read after."""
    with contextlib.suppress(ConnectionError):
        writer.write(frame_record(call.encode()))
        await writer.drain()


async def _read(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read(_CHUNK)
    except ConnectionError:
        return b""


def _keep(first: bytearray, chunk: bytes) -> None:
    """Keep the first 64 bytes of a reply stream, for evidence."""
    first += chunk[: max(0, 64 - len(first))]


@dataclass
class _Udp:
    """One exchange per call, each on its own socket."""

    place: _Place
    request: ProbeRequest
    connect_ms: float | None = None

    async def exchange(self, call: Call) -> Reply | Outcome:
        replies: list[Reply] = []
        rejects = Rejects[RpcError]()
        result = await udp_exchange(
            self.place.address,
            self.place.port,
            call.encode(),
            self.request.deadline,
            accept=_acceptor(call, replies, rejects),
        )
        if isinstance(result, Datagram):
            return replies[0]
        if rejects.error is not None:
            garbled = _garbled(self.place, rejects.first, rejects.error)
            return garbled.with_evidence(rejected=rejects.count)
        return unanswered(result, self.place.address, self.place.port)

    def close(self) -> None:
        """Nothing to close: each exchange closes its own socket."""


def _acceptor(
    call: Call, replies: list[Reply], rejects: Rejects[RpcError]
) -> Callable[[bytes], bool]:
    """A filter for udp_exchange that takes only a reply to ``call``."""

    def accept(data: bytes) -> bool:
        if not is_reply_to(data, call.xid):
            rejects.note(data, RpcError("not a reply to our call"))
            return False
        try:
            replies.append(parse_reply(data))
        except RpcError as exc:
            rejects.note(data, exc)
            return False
        return True

    return accept


_Channel = _Tcp | _Udp


def _channel(place: _Place, request: ProbeRequest) -> _Channel:
    if place.transport is Transport.TCP:
        return _Tcp(place, request)
    return _Udp(place, request)


async def _ask(
    channel: _Channel,
    make: Callable[[int], Call],
) -> _Answer | Outcome:
    """Make a call with AUTH_NONE, and once more with AUTH_SYS when the
    server refuses AUTH_NONE."""
    answer = await _timed(channel, make(new_xid()))
    if isinstance(answer, Outcome) or not _wants_auth_sys(answer.reply):
        return answer
    xid = new_xid()
    cred = auth_sys(xid, _MACHINE, _NOBODY, _NOBODY)
    return await _timed(channel, dataclasses.replace(make(xid), cred=cred))


def _wants_auth_sys(reply: Reply) -> bool:
    return reply.reject_stat is RejectStat.AUTH_ERROR and (
        reply.auth_stat in _RETRY_AUTH
    )


async def _timed(channel: _Channel, call: Call) -> _Answer | Outcome:
    log = channel.request.log
    log.debug(
        "rpc.call",
        xid=call.xid,
        prog=call.prog,
        vers=call.vers,
        proc=int(call.proc),
        auth=AuthFlavor(call.cred.flavor).name,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = await channel.exchange(call)
    if isinstance(reply, Outcome):
        return reply
    rtt = round((loop.time() - started) * 1000, 1)
    log.debug("rpc.reply", xid=reply.xid, status=reply.status(), rtt_ms=rtt)
    return _Answer(call, reply, rtt)


async def _start(
    request: ProbeRequest, service: str
) -> tuple[_Place, _Channel] | Outcome:
    address = await address_of(request)
    if isinstance(address, Outcome):
        return address
    place = _Place(address, request.port, request.transport, service)
    return place, _channel(place, request)


def _base_evidence(
    place: _Place, channel: _Channel, answers: list[_Answer]
) -> dict[str, JSONValue]:
    evidence: dict[str, JSONValue] = {"transport": str(place.transport)}
    if answers:
        evidence["auth"] = answers[-1].auth
        evidence["rtt_ms"] = max(answer.rtt_ms for answer in answers)
    if channel.connect_ms is not None:
        evidence["connect_ms"] = channel.connect_ms
    return evidence


# The portmapper probe.


@dataclass
class _Registry:
    """What the portmapper said."""

    prot: IpProto
    ports: dict[str, int] = field(default_factory=dict)
    mappings: list[Mapping] | None = None
    dump_error: str | None = None

    def registered(self, prog: int, vers: int) -> bool | None:
        """Whether DUMP lists ``prog``/``vers`` over our transport; None
        without a DUMP list."""
        if self.mappings is None:
            return None
        wanted = (prog, vers, self.prot)
        return any((m.prog, m.vers, m.prot) == wanted for m in self.mappings)

    def other_protos(self, prog: int, vers: int) -> list[str]:
        """The transports DUMP lists ``prog``/``vers`` on besides ours."""
        found = {
            proto_name(m.prot)
            for m in self.mappings or []
            if (m.prog, m.vers) == (prog, vers) and m.prot != self.prot
        }
        return sorted(found)

    def other_versions(self, prog: int) -> list[int]:
        """The versions of ``prog`` DUMP lists over our transport."""
        found = {
            m.vers
            for m in self.mappings or []
            if m.prog == prog and m.prot == self.prot
        }
        return sorted(found)


# (label, program, version, the port the rules expect)
_LOOKUPS = (
    ("nfs", NFS_PROG, 3, NFS_PORT),
    ("mountd", MOUNT_PROG, MOUNT_VERS, MOUNTD_PORT),
)


async def probe_portmap(request: ProbeRequest) -> Outcome:
    """Ask the portmapper where NFS v3 and mountd v3 are, and for its
    whole list."""
    started = await _start(request, "portmapper")
    if isinstance(started, Outcome):
        return started
    place, channel = started
    try:
        return (await _portmap(place, channel)).at(place.address)
    finally:
        channel.close()


async def _portmap(place: _Place, channel: _Channel) -> Outcome:
    tcp = place.transport is Transport.TCP
    registry = _Registry(IpProto.IPPROTO_TCP if tcp else IpProto.IPPROTO_UDP)
    answers: list[_Answer] = []
    for label, prog, vers, _port in _LOOKUPS:
        port = await _getport(place, channel, registry.prot, prog, vers)
        if isinstance(port, Outcome) and not answers:
            return port
        if isinstance(port, Outcome):
            return port.with_evidence(**_portmap_evidence(registry))
        answers.append(port[1])
        registry.ports[label] = port[0]
    await _dump(channel, registry, answers)
    evidence = _base_evidence(place, channel, answers)
    evidence.update(_portmap_evidence(registry))
    return _judge_portmap(place, registry, evidence)


async def _getport(
    place: _Place, channel: _Channel, prot: IpProto, prog: int, vers: int
) -> tuple[int, _Answer] | Outcome:
    call = partial(getport_call, prog=prog, vers=vers, prot=prot)
    answer = await _ask(channel, call)
    if isinstance(answer, Outcome):
        return answer
    if not answer.reply.ok:
        return _refused_call(place, answer, "PMAPPROC_GETPORT")
    try:
        return parse_getport(answer.reply.results), answer
    except RpcError as exc:
        return _malformed_results(place, answer, "GETPORT", exc)


async def _dump(
    channel: _Channel,
    registry: _Registry,
    answers: list[_Answer],
) -> None:
    """Fill in the DUMP list, or why it is missing: the list is
    evidence, so its failure does not decide the verdict."""
    answer = await _ask(channel, dump_call)
    if isinstance(answer, Outcome):
        registry.dump_error = answer.detail
        return
    answers.append(answer)
    if not answer.reply.ok:
        registry.dump_error = f"DUMP answered {answer.reply.status()}"
        return
    try:
        registry.mappings = parse_dump(answer.reply.results)
    except RpcError as exc:
        registry.dump_error = f"DUMP reply cannot be read: {exc}"


def _portmap_evidence(registry: _Registry) -> dict[str, JSONValue]:
    evidence: dict[str, JSONValue] = {
        "nfs_port": registry.ports.get("nfs"),
        "mountd_port": registry.ports.get("mountd"),
        "programs": (
            None
            if registry.mappings is None
            else [mapping_evidence(m) for m in registry.mappings]
        ),
    }
    if registry.dump_error is not None:
        evidence["dump_error"] = registry.dump_error
    return evidence


def _judge_portmap(
    place: _Place, registry: _Registry, evidence: dict[str, JSONValue]
) -> Outcome:
    missing = [
        _missing_text(registry, label, prog, vers)
        for label, prog, vers, _port in _LOOKUPS
        if not _is_registered(registry, label, prog, vers)
    ]
    if missing:
        return _not_registered(place, missing, evidence)
    moved = [
        (label, vers, registry.ports[label], port)
        for label, _prog, vers, port in _LOOKUPS
        if registry.ports[label] != port
    ]
    if moved:
        return _moved(place, moved, evidence)
    return passed(
        f"the portmapper at {place.where} maps NFS v3 to port {NFS_PORT} "
        f"and mountd v3 to port {MOUNTD_PORT} over "
        f"{place.transport.upper()}",
        **evidence,
    )


def _is_registered(
    registry: _Registry,
    label: str,
    prog: int,
    vers: int,
) -> bool:
    listed = registry.registered(prog, vers)
    if listed is not None:
        return listed and registry.ports[label] != 0
    return registry.ports[label] != 0


def _missing_text(
    registry: _Registry,
    label: str,
    prog: int,
    vers: int,
) -> str:
    name = "NFS" if label == "nfs" else label
    others = registry.other_protos(prog, vers)
    if others:
        only = " and ".join(other.upper() for other in others)
        return f"{name} v{vers} (registered over {only} only)"
    versions = registry.other_versions(prog)
    if versions:
        listed = " and ".join(f"v{other}" for other in versions)
        verb = "is" if len(versions) == 1 else "are"
        return f"{name} v{vers} (only {listed} {verb} registered)"
    return f"{name} v{vers}"


def _not_registered(
    place: _Place, missing: list[str], evidence: dict[str, JSONValue]
) -> Outcome:
    what = " and ".join(missing)
    transport = place.transport.upper()
    return failed(
        Reason.PROTOCOL_ERROR,
        f"the portmapper at {place.where} registers no {what} for {transport}",
        f"Check that the NFS service on {place.address} runs with NFSv3 "
        f"and mountd enabled over {transport}, and that it registers with "
        "the portmapper: NFSv3 clients look the ports up there before "
        "they mount.",
        **evidence,
    )


def _moved(
    place: _Place,
    moved: list[tuple[str, int, int, int]],
    evidence: dict[str, JSONValue],
) -> Outcome:
    transport = place.transport.upper()
    parts = [
        f"{'NFS' if label == 'nfs' else label} v{vers} at port {port} "
        f"instead of {expected}"
        for label, vers, port, expected in moved
    ]
    ports = ", ".join(f"{transport} {port}" for _l, _v, port, _e in moved)
    standard = " and ".join(str(expected) for _l, _v, _p, expected in moved)
    rules = "the rules' ports" if len(moved) > 1 else "the rule's port"
    return failed(
        Reason.PROTOCOL_ERROR,
        f"the portmapper at {place.where} registers {'; '.join(parts)}: "
        "clients go where the portmapper sends them, so a firewall open "
        f"only for {standard} lets them look the port up but not mount",
        f"Set the NFS server on {place.address} to listen on {standard} "
        f"({rules}), or also allow {ports} from the "
        "NFS clients.",
        **evidence,
    )


# The NFS probe.


async def probe_nfs(request: ProbeRequest) -> Outcome:
    """Call NFS NULL in v3 and (over TCP) v4, and judge the answers."""
    started = await _start(request, "NFS server")
    if isinstance(started, Outcome):
        return started
    place, channel = started
    try:
        return (await _nfs(place, channel)).at(place.address)
    finally:
        channel.close()


async def _nfs(place: _Place, channel: _Channel) -> Outcome:
    tcp = place.transport is Transport.TCP
    versions = NFS_VERSIONS_TCP if tcp else NFS_VERSIONS_UDP
    answers: list[_Answer] = []
    lost: dict[int, Outcome] = {}
    for vers in versions:
        call = partial(null_call, prog=NFS_PROG, vers=vers)
        answer = await _ask(channel, call)
        if isinstance(answer, Outcome) and not answers:
            return answer
        if isinstance(answer, Outcome):
            lost[vers] = answer
            break
        answers.append(answer)
    evidence = _base_evidence(place, channel, answers)
    evidence.update(_nfs_evidence(answers, lost))
    return _judge_nfs(place, answers, lost, evidence)


def _nfs_evidence(
    answers: list[_Answer], lost: dict[int, Outcome]
) -> dict[str, JSONValue]:
    replies: dict[str, JSONValue] = {
        str(a.call.vers): a.reply.status() for a in answers
    }
    replies.update({str(vers): "no reply" for vers in lost})
    mismatch = _mismatch(answers)
    return {
        "versions": [a.call.vers for a in answers if a.reply.ok],
        "replies": replies,
        "supported_range": _range_evidence(mismatch),
    }


def _range_evidence(reply: Reply | None) -> JSONValue:
    """The versions a PROG_MISMATCH reply offers, for evidence."""
    if reply is None or reply.low is None:
        return None
    return {"low": reply.low, "high": reply.high}


def _mismatch(answers: list[_Answer]) -> Reply | None:
    for answer in answers:
        if answer.reply.accept_stat is AcceptStat.PROG_MISMATCH:
            return answer.reply
    return None


def _judge_nfs(
    place: _Place,
    answers: list[_Answer],
    lost: dict[int, Outcome],
    evidence: dict[str, JSONValue],
) -> Outcome:
    for answer in answers:
        if answer.reply.accept_stat is AcceptStat.PROG_UNAVAIL:
            refused = _refused_call(place, answer, "NULL")
            return refused.with_evidence(**evidence)
    working = [a.call.vers for a in answers if a.reply.ok]
    if not working:
        return _nfs_refused(place, answers, evidence)
    return passed(_nfs_detail(place, answers, lost, working), **evidence)


def _nfs_detail(
    place: _Place,
    answers: list[_Answer],
    lost: dict[int, Outcome],
    working: list[int],
) -> str:
    said = " and ".join(f"v{vers}" for vers in working)
    verb = "answers" if len(working) == 1 else "answer"
    detail = f"NFS {said} {verb} on {place.where}"
    others = [a for a in answers if not a.reply.ok]
    notes = [f"v{a.call.vers} {_refusal(a.reply)}" for a in others]
    notes += [f"v{vers} got no reply" for vers in lost]
    if notes:
        detail += f"; {', '.join(notes)}"
    elif place.transport is Transport.UDP:
        detail += " (v4 is not tried over UDP)"
    return detail


def _refusal(reply: Reply) -> str:
    """How a call was refused, in a few words."""
    if reply.accept_stat is AcceptStat.PROG_MISMATCH:
        offered = _range(reply)
        return f"is not offered (PROG_MISMATCH: the server supports {offered})"
    return f"was refused ({reply.status()})"


def _range(reply: Reply) -> str:
    if reply.low == reply.high:
        return f"v{reply.low} only"
    return f"v{reply.low} to v{reply.high}"


def _nfs_refused(
    place: _Place, answers: list[_Answer], evidence: dict[str, JSONValue]
) -> Outcome:
    notes = ", ".join(f"v{a.call.vers} {_refusal(a.reply)}" for a in answers)
    versions = [f"v{a.call.vers}" for a in answers]
    tried = " and ".join(versions)
    serves = (
        f"does not serve {tried}"
        if len(versions) == 1
        else f"serves neither {' nor '.join(versions)}"
    )
    return failed(
        Reason.PROTOCOL_ERROR,
        f"the NFS server on {place.where} answers but {serves}: {notes}",
        f"Enable NFS {tried} over {place.transport.upper()} on "
        f"{place.address}: the file share's clients mount with it.",
        **evidence,
    )


# The mountd probe.


async def probe_mountd(request: ProbeRequest) -> Outcome:
    """Call MOUNT v3 NULL, then EXPORT for the export list."""
    started = await _start(request, "mount daemon")
    if isinstance(started, Outcome):
        return started
    place, channel = started
    try:
        return (await _mountd(place, channel)).at(place.address)
    finally:
        channel.close()


async def _mountd(place: _Place, channel: _Channel) -> Outcome:
    call = partial(null_call, prog=MOUNT_PROG, vers=MOUNT_VERS)
    null = await _ask(channel, call)
    if isinstance(null, Outcome):
        return null
    if not null.reply.ok:
        return _refused_call(place, null, "MOUNTPROC3_NULL").with_evidence(
            **_base_evidence(place, channel, [null])
        )
    exported = await _ask(channel, export_call)
    answers = [null]
    if isinstance(exported, _Answer):
        answers.append(exported)
    evidence = _base_evidence(place, channel, answers)
    return _judge_mountd(place, exported, evidence)


def _judge_mountd(
    place: _Place,
    exported: _Answer | Outcome,
    evidence: dict[str, JSONValue],
) -> Outcome:
    here = f"mountd v3 answers on {place.where}"
    if isinstance(exported, Outcome):
        return passed(
            f"{here}; its export list did not come: {exported.detail}",
            exports=None,
            export_error=exported.detail,
            **evidence,
        )
    if not exported.reply.ok:
        status = exported.reply.status()
        return passed(
            f"{here}; it refused the export list ({status})",
            exports=None,
            export_error=status,
            **evidence,
        )
    try:
        exports = parse_exports(exported.reply.results)
    except RpcError as exc:
        return _unreadable_exports(place, exc, evidence)
    listed = [export_evidence(export) for export in exports]
    if not exports:
        return passed(
            f"{here}, but it exports nothing (an empty export list)",
            exports=listed,
            **evidence,
        )
    dirs = ", ".join(export.dir for export in exports[:5])
    more = f" and {len(exports) - 5} more" if len(exports) > 5 else ""
    detail = f"{here} and exports {dirs}{more}"
    return passed(detail, exports=listed, **evidence)


def _unreadable_exports(
    place: _Place, error: RpcError, evidence: dict[str, JSONValue]
) -> Outcome:
    return warned(
        Reason.PROTOCOL_ERROR,
        f"mountd v3 answers on {place.where}, but its export list cannot "
        f"be read: {error}",
        f"Check the mount daemon on {place.address}: clients that list "
        "exports (showmount -e) cannot read them either.",
        exports=None,
        export_error=str(error),
        **evidence,
    )


# Verdicts shared by the probes.


def _refused_call(place: _Place, answer: _Answer, proc: str) -> Outcome:
    """An RPC-level refusal: the server speaks RPC but would not do what
    we asked."""
    reply = answer.reply
    call = answer.call
    program = program_name(call.prog) or str(call.prog)
    detail, remedy = _refusal_words(place, reply, program, call.vers, proc)
    evidence: dict[str, JSONValue] = {
        "rpc_status": reply.status(),
        "prog": call.prog,
        "vers": call.vers,
        "auth": answer.auth,
    }
    if reply.low is not None:
        evidence["supported_range"] = _range_evidence(reply)
    return failed(Reason.PROTOCOL_ERROR, detail, remedy, **evidence)


def _refusal_words(
    place: _Place, reply: Reply, program: str, vers: int, proc: str
) -> tuple[str, str]:
    where = place.where
    if reply.accept_stat is AcceptStat.PROG_UNAVAIL:
        return (
            f"an RPC server answers on {where} but does not serve "
            f"{program} (PROG_UNAVAIL)",
            f"Check what listens on {where}: the {place.service} should "
            "answer there, and another RPC service does.",
        )
    if reply.accept_stat is AcceptStat.PROG_MISMATCH:
        return (
            f"the {place.service} on {where} does not offer {program} "
            f"v{vers}; it supports {_range(reply)}",
            f"Enable {program} v{vers} on {place.address}: clients need it.",
        )
    if reply.reject_stat is RejectStat.RPC_MISMATCH:
        return (
            f"the server on {where} speaks RPC {_range(reply)}, not "
            "version 2 (RFC 5531)",
            f"Check what listens on {where}: NFS clients speak RPC version 2.",
        )
    if reply.reject_stat is RejectStat.AUTH_ERROR:
        return (
            f"the {place.service} on {where} refused {proc} even with "
            f"AUTH_SYS credentials ({reply.status()})",
            f"Allow this host in the access rules of the {place.service} "
            f"on {place.address}, or run the check from an NFS client.",
        )
    return (
        f"the {place.service} on {where} answered {program} {proc} with "
        f"{reply.status()}",
        f"Check the {place.service} on {place.address} and its logs: it "
        "fails a call every client makes.",
    )


def _malformed_results(
    place: _Place, answer: _Answer, proc: str, error: RpcError
) -> Outcome:
    return failed(
        Reason.PROTOCOL_ERROR,
        f"the {place.service} on {place.where} sent a {proc} result that "
        f"cannot be read: {error}",
        f"Check the {place.service} on {place.address}, and any device on "
        "the way that inspects RPC: its replies are broken.",
        rpc_status=answer.reply.status(),
        results_bytes=len(answer.reply.results),
    )


def _garbled(place: _Place, data: bytes, error: RpcError) -> Outcome:
    """Bytes that are not the reply we wait for: not RPC at all, or a
    broken RPC reply."""
    shown: dict[str, JSONValue] = {"first_bytes": printable(data)}
    seen = printable(data, 32)
    message = data[4:] if place.transport is Transport.TCP else data
    if is_rpc_reply_start(message):
        return failed(
            Reason.PROTOCOL_ERROR,
            f"the {place.service} on {place.where} sent an RPC reply that "
            f"cannot be used: {error}",
            f"Check the {place.service} on {place.address}, and any device "
            "on the way that inspects RPC: its replies are broken.",
            **shown,
        )
    return failed(
        Reason.WRONG_PROTOCOL,
        f"{place.where} answered with something that is not ONC RPC: "
        f"{seen or '(nothing)'}",
        f"Something other than the {place.service} answers on this port: "
        f"check which service listens on {place.where}, and that no "
        "proxy or port forward sends the traffic elsewhere.",
        **shown,
    )


def _closed(place: _Place) -> Outcome:
    return failed(
        Reason.WRONG_PROTOCOL,
        f"{place.where} closed the connection without an RPC reply",
        f"Something other than the {place.service} holds this port, or "
        "it refuses this host: check which service listens on "
        f"{place.where} and its access rules.",
        first_bytes="",
    )


def _tcp_timeout(place: _Place, data: bytes, waited_s: float) -> Outcome:
    waited = round(waited_s, 1)
    if not data:
        return failed(
            Reason.TIMEOUT,
            f"the TCP connection to {place.where} opened but no RPC reply "
            f"came in {waited} s",
            held_open(f"the {place.service}", place.where),
            waited_s=waited,
        )
    if is_rpc_reply_start(data[4:]):
        return failed(
            Reason.TIMEOUT,
            f"the {place.service} on {place.where} began a reply but did "
            f"not finish it in {waited} s",
            waited_s=waited,
            first_bytes=printable(data),
        )
    return _garbled(place, data, RpcError("not an RPC reply"))
