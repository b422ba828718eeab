"""NetBIOS over TCP/IP (RFC 1001, RFC 1002): the session service codec and
the name service probe on 137/UDP.

The session service part (RFC 1002 4.3) frames the SESSION REQUEST that
opens SMB on 139/TCP and reads the server's answer to it; the SMB probe
uses it before its own negotiation.

The name service probe sends a NODE STATUS REQUEST (RFC 1002 4.2.17) for
the wildcard name ``*`` with a random transaction id, and takes only a
datagram that carries that id and the response bit (RFC 1002 4.2.1.1).
The NODE STATUS RESPONSE (RFC 1002 4.2.18) lists the names the node has
registered and its unit id (the MAC address Windows reports; Samba sends
zeros). The probe passes with those names. A response with our id but an
error code still proves that a name service answers, so it passes too,
with the code as evidence. Datagrams that are not a response to our
request are ignored while a good one may still come; if nothing else
came back, they decide the verdict (``wrong-protocol`` with their first
bytes, or ``protocol-error`` for a broken response that carries our id).

Limits: no NetBIOS scope is sent (nor expected), names are shown as
printable text from their OEM bytes, and of the statistics block after
the names only the unit id is read. The probe does not register or
resolve names, so it cannot tell whether the node is the domain
controller the gateway needs; the names it lists usually tell.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import IntEnum

from probes.base import (
    JSONValue,
    Outcome,
    ProbeRequest,
    Reason,
    failed,
    passed,
    printable,
)
from probes.icmp import IcmpReport
from probes.net import Datagram, address_of, udp_exchange, unanswered

# RFC 1001 14.1: a NetBIOS name is 16 bytes, the last the suffix (the
# kind of service), the first 15 padded with spaces.
NAME_SIZE = 16
# RFC 1001 14.1: first-level encoding turns each byte into two letters.
ENCODED_SIZE = 2 * NAME_SIZE
# RFC 1002 4.3.1: the session packet header is four bytes.
SESSION_HEADER_SIZE = 4
# RFC 1002 4.3.1: seventeen bits of length, the top one in FLAGS.
MAX_SESSION_LENGTH = (1 << 17) - 1
# RFC 1002 4.2.1.1: transaction id, flags and four counts, two bytes each.
HEADER_SIZE = 12
# RFC 1002 4.2.18: each NODE_NAME entry is the name and two flag bytes.
NODE_NAME_SIZE = NAME_SIZE + 2
# RFC 1002 4.2.18: the statistics start with the six-byte UNIT_ID.
UNIT_ID_SIZE = 6
# RFC 1002 4.2.1.1: the response bit, the opcode and the error code.
_RESPONSE = 0x8000
_OPCODE = 0x7800
_RCODE = 0x000F
# RFC 1002 4.2.18: NAME_FLAGS bits.
_GROUP = 0x8000
_ACTIVE = 0x0400
# RFC 1035 4.1.4, which RFC 1002 4.1 follows: a compressed name pointer.
_POINTER = 0xC0
# Labels allowed in a name before it is taken as malformed.
_MAX_LABELS = 16
# A UDP datagram cannot be larger; nothing longer is ever read.
MAX_DATAGRAM = 65535

CALLED_NAME = "*SMBSERVER"
"""The called name any SMB server accepts ([MS-SMB2] 2.1 via RFC 1002)."""
CALLING_NAME = "SGW-REACH"
"""The name we call from: not registered anywhere, which RFC 1002 allows."""
SERVER_SUFFIX = 0x20
"""The suffix of a file server service (RFC 1001 and common practice)."""
WORKSTATION_SUFFIX = 0x00


class NetbiosError(ValueError):
    """Bytes that are NetBIOS but not a usable answer."""


class NotNetbiosError(NetbiosError):
    """Bytes that do not even look like an answer to our request."""


class SessionType(IntEnum):
    """RFC 1002 4.3.1: session packet types."""

    SESSION_MESSAGE = 0x00
    SESSION_REQUEST = 0x81
    POSITIVE_SESSION_RESPONSE = 0x82
    NEGATIVE_SESSION_RESPONSE = 0x83
    RETARGET_SESSION_RESPONSE = 0x84
    SESSION_KEEP_ALIVE = 0x85


class SessionError(IntEnum):
    """RFC 1002 4.3.4: the error codes of a NEGATIVE SESSION RESPONSE."""

    NOT_LISTENING_ON_CALLED_NAME = 0x80
    NOT_LISTENING_FOR_CALLING_NAME = 0x81
    CALLED_NAME_NOT_PRESENT = 0x82
    INSUFFICIENT_RESOURCES = 0x83
    UNSPECIFIED_ERROR = 0x8F


# RFC 1002 4.3.3 to 4.3.5: the body size of each answer to a request.
_RESPONSE_SIZES: dict[int, int] = {
    SessionType.POSITIVE_SESSION_RESPONSE: 0,
    SessionType.NEGATIVE_SESSION_RESPONSE: 1,
    SessionType.RETARGET_SESSION_RESPONSE: 6,
}


class RrType(IntEnum):
    """RFC 1002 4.2.1.2: the record types this module uses."""

    NB = 0x0020
    NBSTAT = 0x0021


RR_CLASS_IN = 0x0001


# Names (RFC 1001 14.1 and 14.2).


def pad_name(name: str, suffix: int) -> bytes:
    """The 16-byte form: at most 15 bytes, space padded, then the suffix."""
    raw = name.upper().encode("ascii")
    if len(raw) > NAME_SIZE - 1 or not 0 <= suffix <= 0xFF:
        raise NetbiosError(f"{name!r} cannot be a NetBIOS name")
    return raw.ljust(NAME_SIZE - 1, b" ") + bytes([suffix])


def first_level(name16: bytes) -> bytes:
    """RFC 1001 14.1: each half byte becomes a letter from 'A' to 'P'."""
    if len(name16) != NAME_SIZE:
        raise NetbiosError(f"a NetBIOS name has {NAME_SIZE} bytes")
    out = bytearray()
    for byte in name16:
        out += bytes([0x41 + (byte >> 4), 0x41 + (byte & 0x0F)])
    return bytes(out)


def decode_first_level(encoded: bytes) -> bytes:
    """The inverse of :func:`first_level`."""
    if len(encoded) != ENCODED_SIZE:
        raise NetbiosError(f"an encoded name has {ENCODED_SIZE} bytes")
    nibbles = [byte - 0x41 for byte in encoded]
    if any(not 0 <= nibble <= 0x0F for nibble in nibbles):
        raise NetbiosError("an encoded name holds letters past 'P'")
    pairs = zip(nibbles[::2], nibbles[1::2], strict=True)
    return bytes(hi << 4 | lo for hi, lo in pairs)


def wire_name(name16: bytes) -> bytes:
    """RFC 1001 14.2: one label of 32 letters and the root, no scope."""
    return bytes([ENCODED_SIZE]) + first_level(name16) + b"\x00"


# The session service (RFC 1002 4.3).


@dataclass(frozen=True)
class SessionHeader:
    """RFC 1002 4.3.1: a session packet's type and the length after it."""

    type: int
    length: int


@dataclass(frozen=True)
class SessionResponse:
    """The answer to a SESSION REQUEST (RFC 1002 4.3.3 to 4.3.5).

    ``error`` is set for a negative response, ``retarget`` (address and
    port) for a retarget response; both are unset for a positive one.
    """

    type: SessionType
    error: int | None = None
    retarget: tuple[str, int] | None = None

    def error_name(self) -> str:
        """The negative response's error as a name, or its hex code."""
        if self.error is None:
            return ""
        try:
            return SessionError(self.error).name.lower()
        except ValueError:
            return f"0x{self.error:02x}"


def session_request(called: str = CALLED_NAME, calling: str = CALLING_NAME) -> bytes:
    """RFC 1002 4.3.2: SESSION REQUEST with the called and calling names."""
    body = wire_name(pad_name(called, SERVER_SUFFIX))
    body += wire_name(pad_name(calling, WORKSTATION_SUFFIX))
    return session_packet(SessionType.SESSION_REQUEST, body)


def session_packet(kind: int, body: bytes) -> bytes:
    """RFC 1002 4.3.1: TYPE, FLAGS (the length's 17th bit), LENGTH."""
    if len(body) > MAX_SESSION_LENGTH:
        raise NetbiosError(f"a session packet of {len(body)} bytes")
    flags = len(body) >> 16
    length = (len(body) & 0xFFFF).to_bytes(2, "big")
    return bytes([kind, flags]) + length + body


def parse_session_header(head: bytes) -> SessionHeader:
    """Read the four-byte header; the type must be one RFC 1002 defines
    and the reserved FLAGS bits zero, else it is not a session packet."""
    if len(head) != SESSION_HEADER_SIZE:
        raise NetbiosError("a session header has four bytes")
    kind, flags = head[0], head[1]
    if kind not in set(SessionType) or flags & 0xFE:
        raise NotNetbiosError("not a NetBIOS session packet")
    length = (flags & 1) << 16 | int.from_bytes(head[2:4], "big")
    return SessionHeader(kind, length)


def parse_session_response(header: SessionHeader, body: bytes) -> SessionResponse:
    """Decode the answer to a SESSION REQUEST from its header and body."""
    size = _RESPONSE_SIZES.get(header.type)
    if size is None:
        raise NotNetbiosError(
            f"session packet type 0x{header.type:02x} answers no request"
        )
    kind = SessionType(header.type)
    if len(body) != header.length or len(body) != size:
        raise NetbiosError(f"{kind.name} of {len(body)} bytes, not {size}")
    if kind is SessionType.NEGATIVE_SESSION_RESPONSE:
        return SessionResponse(kind, error=body[0])
    if kind is SessionType.RETARGET_SESSION_RESPONSE:
        return _retarget(body)
    return SessionResponse(kind)


def _retarget(body: bytes) -> SessionResponse:
    """RFC 1002 4.3.5: RETARGET_IP_ADDRESS (4 bytes) and RETARGET_PORT."""
    address = ".".join(str(byte) for byte in body[:4])
    port = int.from_bytes(body[4:6], "big")
    kind = SessionType.RETARGET_SESSION_RESPONSE
    return SessionResponse(kind, retarget=(address, port))


# The name service (RFC 1002 4.2).


@dataclass(frozen=True)
class NodeName:
    """One entry of a NODE STATUS RESPONSE's NODE_NAME array."""

    name: str
    suffix: int
    group: bool
    active: bool

    def evidence(self) -> dict[str, JSONValue]:
        return {
            "name": self.name,
            "suffix": f"0x{self.suffix:02x}",
            "group": self.group,
            "active": self.active,
        }


@dataclass(frozen=True)
class NodeStatus:
    """A NODE STATUS RESPONSE: the node's names and unit id."""

    trn_id: int
    rcode: int
    names: tuple[NodeName, ...] = ()
    mac: str | None = None


def node_status_request(trn_id: int) -> bytes:
    """RFC 1002 4.2.17: NODE STATUS REQUEST for the name ``*``.

    The flags are all zero (a query, not a broadcast, no recursion);
    one question: ``*`` padded with zero bytes, NBSTAT, IN.
    """
    if not 0 <= trn_id <= 0xFFFF:
        raise NetbiosError(f"transaction id {trn_id} is not 16 bits")
    header = trn_id.to_bytes(2, "big") + b"\x00\x00"
    header += (1).to_bytes(2, "big") + bytes(6)
    question = wire_name(b"*".ljust(NAME_SIZE, b"\x00"))
    question += RrType.NBSTAT.to_bytes(2, "big")
    return header + question + RR_CLASS_IN.to_bytes(2, "big")


def is_response_to(data: bytes, trn_id: int) -> bool:
    """True when ``data`` carries our transaction id and the response bit
    of a query (opcode 0) (RFC 1002 4.2.1.1)."""
    if len(data) < HEADER_SIZE:
        return False
    flags = int.from_bytes(data[2:4], "big")
    return (
        int.from_bytes(data[:2], "big") == trn_id
        and bool(flags & _RESPONSE)
        and flags & _OPCODE == 0
    )


def parse_node_status(data: bytes, trn_id: int) -> NodeStatus:
    """Decode the NODE STATUS RESPONSE to request ``trn_id``."""
    if not is_response_to(data, trn_id):
        raise NotNetbiosError("not a name service response to our request")
    rcode = int.from_bytes(data[2:4], "big") & _RCODE
    answers = int.from_bytes(data[6:8], "big")
    if rcode or answers == 0:
        return NodeStatus(trn_id, rcode)
    offset = _skip_questions(data, int.from_bytes(data[4:6], "big"))
    return _read_answer(data, skip_name(data, offset), trn_id)


def _skip_questions(data: bytes, count: int) -> int:
    """The offset after the question section: none, or an echo of ours
    (RFC 1002 4.2.18 sends none; some servers echo it)."""
    if count > 1:
        raise NetbiosError(f"{count} questions in a node status response")
    if count == 0:
        return HEADER_SIZE
    return skip_name(data, HEADER_SIZE) + 4


def skip_name(data: bytes, offset: int) -> int:
    """The offset just after the name at ``offset`` (labels, maybe ending
    in a pointer, RFC 1002 4.1); the pointer is not followed."""
    for _ in range(_MAX_LABELS):
        if offset >= len(data):
            raise NetbiosError("a name runs past the end of the packet")
        size = data[offset]
        if size & _POINTER == _POINTER:
            return _within(data, offset + 2)
        if size & _POINTER:
            raise NetbiosError(f"label length byte 0x{size:02x}")
        offset += 1 + size
        if size == 0:
            return _within(data, offset)
    raise NetbiosError("a name of too many labels")


def _within(data: bytes, offset: int) -> int:
    if offset > len(data):
        raise NetbiosError("a name runs past the end of the packet")
    return offset


def _read_answer(data: bytes, offset: int, trn_id: int) -> NodeStatus:
    """RFC 1002 4.2.18: RR_TYPE, RR_CLASS, TTL, RDLENGTH, then RDATA:
    NUM_NAMES, the NODE_NAME array and the statistics."""
    fixed = data[offset : offset + 10]
    if len(fixed) < 10:
        raise NetbiosError("the answer record stops in its header")
    rr_type = int.from_bytes(fixed[:2], "big")
    if rr_type != RrType.NBSTAT:
        raise NetbiosError(f"answer of type 0x{rr_type:04x}, not NBSTAT")
    rdlength = int.from_bytes(fixed[8:10], "big")
    rdata = data[offset + 10 : offset + 10 + rdlength]
    if len(rdata) < rdlength or rdlength < 1:
        raise NetbiosError("the answer's data stops before its length")
    count = rdata[0]
    end = 1 + count * NODE_NAME_SIZE
    if len(rdata) < end:
        raise NetbiosError(f"{count} names do not fit in {rdlength} bytes")
    names = tuple(
        _node_name(rdata[at : at + NODE_NAME_SIZE])
        for at in range(1, end, NODE_NAME_SIZE)
    )
    unit = rdata[end : end + UNIT_ID_SIZE]
    mac = ":".join(f"{b:02x}" for b in unit) if len(unit) == 6 else None
    return NodeStatus(trn_id, 0, names, mac)


def _node_name(entry: bytes) -> NodeName:
    flags = int.from_bytes(entry[NAME_SIZE:], "big")
    return NodeName(
        name=printable(entry[: NAME_SIZE - 1].rstrip(b" \x00"), NAME_SIZE),
        suffix=entry[NAME_SIZE - 1],
        group=bool(flags & _GROUP),
        active=bool(flags & _ACTIVE),
    )


# The name service probe: thin I/O over the codec above.


@dataclass
class _Rejects:
    """Datagrams refused as answers, kept to explain a silence."""

    count: int = 0
    first: bytes = b""
    error: NetbiosError | None = None

    def note(self, data: bytes, error: NetbiosError) -> None:
        if self.count == 0 or (
            isinstance(self.error, NotNetbiosError)
            and not isinstance(error, NotNetbiosError)
        ):
            self.first, self.error = data, error
        self.count += 1


async def probe_name_status(request: ProbeRequest) -> Outcome:
    """Ask the node for its names (NBSTAT) and judge the answer."""
    address = await address_of(request)
    if isinstance(address, Outcome):
        return address
    trn_id = secrets.randbelow(0x10000)
    found: list[NodeStatus] = []
    rejects = _Rejects()

    def accept(data: bytes) -> bool:
        try:
            found.append(parse_node_status(data, trn_id))
        except NetbiosError as exc:
            rejects.note(data, exc)
            return False
        return True

    request.log.debug("netbios.node_status", trn_id=trn_id)
    result = await udp_exchange(
        address,
        request.port,
        node_status_request(trn_id),
        request.deadline,
        accept=accept,
    )
    if isinstance(result, Datagram):
        return _judge(address, request.port, found[0], result)
    if isinstance(result, IcmpReport) or rejects.error is None:
        return unanswered(result, address, request.port)
    return _garbled(address, request.port, rejects).at(address)


# Verdicts.


def _judge(address: str, port: int, status: NodeStatus, datagram: Datagram) -> Outcome:
    names = [name.evidence() for name in status.names]
    evidence: dict[str, JSONValue] = {
        "names": names,
        "mac": status.mac,
        "rcode": status.rcode,
        "rtt_ms": datagram.rtt_ms,
    }
    where = f"{address} UDP {port}"
    if status.rcode:
        detail = (
            f"the NetBIOS name service on {where} answered the node "
            f"status request with error code {status.rcode}"
        )
    elif status.names:
        shown = ", ".join(
            f"{name.name}<{name.suffix:02x}>" for name in status.names[:8]
        )
        more = f" and {len(names) - 8} more" if len(names) > 8 else ""
        detail = f"the NetBIOS name service on {where} lists {shown}{more}"
    else:
        detail = f"the NetBIOS name service on {where} lists no names"
    return passed(detail, **evidence).at(address)


def _garbled(address: str, port: int, rejects: _Rejects) -> Outcome:
    where = f"{address} UDP {port}"
    evidence: dict[str, JSONValue] = {
        "first_bytes": printable(rejects.first),
        "rejected": rejects.count,
    }
    if isinstance(rejects.error, NotNetbiosError):
        return failed(
            Reason.WRONG_PROTOCOL,
            f"{where} answered with something that is not a NetBIOS "
            f"name service response: {printable(rejects.first, 32)}",
            "Something other than a NetBIOS name service answers on this "
            "port: check which host and service the address reaches.",
            **evidence,
        )
    return failed(
        Reason.PROTOCOL_ERROR,
        f"{where} sent a node status response that cannot be read: {rejects.error}",
        "Check the NetBIOS name service on this host and any filter on "
        "the way that rewrites its answers.",
        **evidence,
    )
