"""The iSCSI PDUs a discovery session needs, as a pure codec.

Builds the initiator's Login, Text and Logout Requests and reads what a
target sends back: the Basic Header Segment (BHS), the Additional Header
Segments (AHS) and the data segment, framed as RFC 7143 11.1 and 11.2 lay
them out, and the ``key=value`` text of login and text negotiation
(RFC 7143 6.1). No sockets, clock or logging: bytes in, values or
:class:`IscsiError` out.

Limits: only iSCSI version 0 (the only one defined); no digests (the
initiator offers ``HeaderDigest=None`` and ``DataDigest=None``, so no
CRC32C follows the header or the data); the AHS is skipped unread;
a data segment larger than :data:`MAX_DATA_SEGMENT` is refused rather
than read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

# RFC 7143 11.2.1: the Basic Header Segment is always 48 bytes.
BHS_SIZE = 48
# The largest data segment read from a target. The initiator declares
# this as its MaxRecvDataSegmentLength (RFC 7143 13.12), so a target
# that keeps to the negotiation never sends more; a claim beyond it is
# refused without reading.
MAX_DATA_SEGMENT = 64 * 1024
# RFC 7143 11.2.1.7: the Initiator Task Tag 0xffffffff is reserved, and
# marks PDUs a target sends on its own (NOP-In pings, Reject, async
# messages) rather than as an answer to one task.
RESERVED_TAG = 0xFFFFFFFF
# RFC 7143 6.1: values are at most 255 bytes unless a key says
# otherwise; the longest any key allows is 8192 (CHAP and SRP values).
MAX_VALUE = 8192

_IMMEDIATE = 0x40
_FINAL = 0x80
_TRANSIT = 0x80
_CONTINUE = 0x40
_OPCODE_MASK = 0x3F
# RFC 7143 6.1: key names use letters, digits, dot, minus, plus, at
# sign and underscore.
_KEY = re.compile(r"[A-Za-z0-9.\-+@_]{1,63}")
# RFC 7143 4.2.7.3 (iqn) with the character set of RFC 3722: what an
# iSCSI name may hold once normalised.
_IQN = re.compile(r"iqn\.\d{4}-\d{2}\.[a-z0-9.\-]+(:[a-z0-9.\-:]*)?")
AMAZON_PREFIX = "iqn.1997-05.com.amazon:"
"""How every target name of an AWS Storage Gateway begins."""


class IscsiError(ValueError):
    """Bytes that are iSCSI but not a usable answer."""


class NotIscsiError(IscsiError):
    """Bytes that do not even begin an iSCSI PDU from a target."""


class Opcode(IntEnum):
    """RFC 7143 11.2.1.2: initiator opcodes 0x00-0x1f, target 0x20-0x3f."""

    NOP_OUT = 0x00
    SCSI_COMMAND = 0x01
    TASK_MANAGEMENT_REQUEST = 0x02
    LOGIN_REQUEST = 0x03
    TEXT_REQUEST = 0x04
    SCSI_DATA_OUT = 0x05
    LOGOUT_REQUEST = 0x06
    SNACK_REQUEST = 0x10
    NOP_IN = 0x20
    SCSI_RESPONSE = 0x21
    TASK_MANAGEMENT_RESPONSE = 0x22
    LOGIN_RESPONSE = 0x23
    TEXT_RESPONSE = 0x24
    SCSI_DATA_IN = 0x25
    LOGOUT_RESPONSE = 0x26
    READY_TO_TRANSFER = 0x31
    ASYNCHRONOUS_MESSAGE = 0x32
    VENDOR_SPECIFIC_1 = 0x3C
    VENDOR_SPECIFIC_2 = 0x3D
    VENDOR_SPECIFIC_3 = 0x3E
    REJECT = 0x3F


TARGET_OPCODES = frozenset(op for op in Opcode if op >= Opcode.NOP_IN)


class Stage(IntEnum):
    """RFC 7143 11.12.3: the login stages in CSG and NSG (2 is reserved)."""

    SECURITY_NEGOTIATION = 0
    LOGIN_OPERATIONAL_NEGOTIATION = 1
    FULL_FEATURE_PHASE = 3


class StatusClass(IntEnum):
    """RFC 7143 11.13.5: the high byte of a login status."""

    SUCCESS = 0
    REDIRECTION = 1
    INITIATOR_ERROR = 2
    TARGET_ERROR = 3


class LoginStatus(IntEnum):
    """RFC 7143 11.13.5: Status-Class << 8 | Status-Detail."""

    SUCCESS = 0x0000
    TARGET_MOVED_TEMPORARILY = 0x0101
    TARGET_MOVED_PERMANENTLY = 0x0102
    INITIATOR_ERROR = 0x0200
    AUTHENTICATION_FAILURE = 0x0201
    AUTHORIZATION_FAILURE = 0x0202
    NOT_FOUND = 0x0203
    TARGET_REMOVED = 0x0204
    UNSUPPORTED_VERSION = 0x0205
    TOO_MANY_CONNECTIONS = 0x0206
    MISSING_PARAMETER = 0x0207
    CANT_INCLUDE_IN_SESSION = 0x0208
    SESSION_TYPE_NOT_SUPPORTED = 0x0209
    SESSION_DOES_NOT_EXIST = 0x020A
    INVALID_DURING_LOGIN = 0x020B
    TARGET_ERROR = 0x0300
    SERVICE_UNAVAILABLE = 0x0301
    OUT_OF_RESOURCES = 0x0302


class RejectReason(IntEnum):
    """RFC 7143 11.17.1: why a target rejected a PDU."""

    DATA_DIGEST_ERROR = 0x02
    SNACK_REJECT = 0x03
    PROTOCOL_ERROR = 0x04
    COMMAND_NOT_SUPPORTED = 0x05
    IMMEDIATE_COMMAND_REJECT = 0x06
    TASK_IN_PROGRESS = 0x07
    INVALID_DATA_ACK = 0x08
    INVALID_PDU_FIELD = 0x09
    LONG_OPERATION_REJECT = 0x0A
    DEPRECATED = 0x0B
    WAITING_FOR_LOGOUT = 0x0C


def spec_name(enum_type: type[IntEnum], value: int) -> str:
    """A wire code as a lower-case name, or as hex when it has none."""
    try:
        return enum_type(value).name.lower().replace("_", "-")
    except ValueError:
        return f"0x{value:02x}"


# Text: RFC 7143 6.1.

Keys = tuple[tuple[str, str], ...]


def encode_keys(keys: Iterable[tuple[str, str]]) -> bytes:
    """``key=value`` pairs, each ended by a NUL (RFC 7143 6.1)."""
    out = bytearray()
    for key, value in keys:
        if not _KEY.fullmatch(key) or "\x00" in value:
            raise IscsiError(f"{key!r} is not a key RFC 7143 6.1 allows")
        out += f"{key}={value}".encode() + b"\x00"
    return bytes(out)


def decode_keys(data: bytes) -> Keys:
    """Split a data segment into ``(key, value)`` pairs, in order.

    Pairs are kept in a sequence, not a mapping: a SendTargets answer
    repeats ``TargetName`` and ``TargetAddress``. Padding NULs after the
    last pair are dropped.
    """
    body = data.rstrip(b"\x00")
    if not body:
        return ()
    return tuple(_decode_pair(field) for field in body.split(b"\x00"))


def _decode_pair(field: bytes) -> tuple[str, str]:
    key, equals, value = field.partition(b"=")
    if not equals:
        raise IscsiError(f"text without '=': {field[:40]!r}")
    try:
        pair = key.decode("ascii"), value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IscsiError("a key not in ASCII or a value not in UTF-8") from exc
    if not _KEY.fullmatch(pair[0]):
        raise IscsiError(f"{pair[0][:40]!r} is not a valid key")
    if len(value) > MAX_VALUE:
        raise IscsiError(f"the value of {pair[0]} runs past {MAX_VALUE} bytes")
    return pair


def first_value(keys: Keys, name: str) -> str | None:
    """The value of the first pair named ``name``, if any."""
    return next((value for key, value in keys if key == name), None)


# Framing: RFC 7143 11.1 and 11.2.


def pad(length: int) -> int:
    """Bytes of padding after a segment (RFC 7143 11.1: 4-byte words)."""
    return -length % 4


def frame(header: bytes, data: bytes = b"") -> bytes:
    """A BHS with its data segment length filled in, then the padded data."""
    if len(header) != BHS_SIZE:
        raise IscsiError(f"a BHS is {BHS_SIZE} bytes, not {len(header)}")
    if len(data) >= 1 << 24:
        raise IscsiError("a data segment is at most 2**24 - 1 bytes")
    bhs = bytearray(header)
    # RFC 7143 11.2.1.5-6: TotalAHSLength (byte 4, here 0) and
    # DataSegmentLength (bytes 5-7, without padding).
    bhs[4] = 0
    bhs[5:8] = len(data).to_bytes(3, "big")
    return bytes(bhs) + data + b"\x00" * pad(len(data))


@dataclass(frozen=True)
class Header:
    """The fields of a target's BHS this initiator reads (RFC 7143 11.2.1).

    Bytes 24-47 mean different things per opcode; ``stat_sn`` (24-27)
    is the same for every response this codec reads.
    """

    opcode: int
    flags: int
    ahs_length: int
    data_length: int
    itt: int
    raw: bytes

    @property
    def total_length(self) -> int:
        """The bytes after the BHS: AHS, data and its padding."""
        return self.ahs_length + self.data_length + pad(self.data_length)

    @property
    def stat_sn(self) -> int:
        return int.from_bytes(self.raw[24:28], "big")


def check_login_answer(data: bytes) -> None:
    """Raise NotIscsiError when ``data`` cannot begin the answer to a
    Login Request.

    Only a Login Response or a Reject may answer one (RFC 7143 11.13,
    11.17). Byte 0 holds a reserved bit, the immediate bit (never set by
    a target) and the opcode; in a Login Response, bits 4 and 5 of byte 1
    are reserved, and a Reject has only the F bit there. An SSH banner
    (``S``), an HTTP reply (``H``), a TLS alert (0x15) or an SMTP or FTP
    greeting (``2``) fail on their first byte; a text that happens to
    open with ``#`` or ``?`` fails on its second.
    """
    if not data:
        return
    if data[0] not in (Opcode.LOGIN_RESPONSE, Opcode.REJECT):
        raise NotIscsiError(f"byte 0x{data[0]:02x} opens no login answer")
    if len(data) < 2:
        return
    if data[0] == Opcode.REJECT and data[1] != _FINAL:
        raise NotIscsiError("a Reject without its fixed flags")
    if data[0] == Opcode.LOGIN_RESPONSE and data[1] & 0x30:
        raise NotIscsiError("a Login Response with reserved bits set")


def parse_header(bhs: bytes) -> Header:
    """Read a 48-byte BHS from a target."""
    if len(bhs) != BHS_SIZE:
        raise IscsiError(f"a BHS is {BHS_SIZE} bytes, got {len(bhs)}")
    if bhs[0] not in TARGET_OPCODES:
        raise IscsiError(f"byte 0x{bhs[0]:02x} opens no target PDU")
    data_length = int.from_bytes(bhs[5:8], "big")
    if data_length > MAX_DATA_SEGMENT:
        raise IscsiError(
            f"a data segment of {data_length} bytes is more than the "
            f"{MAX_DATA_SEGMENT} declared"
        )
    return Header(
        opcode=bhs[0] & _OPCODE_MASK,
        flags=bhs[1],
        ahs_length=bhs[4] * 4,
        data_length=data_length,
        itt=int.from_bytes(bhs[16:20], "big"),
        raw=bytes(bhs),
    )


@dataclass(frozen=True)
class Pdu:
    """A whole PDU from a target: its header and its data, unpadded."""

    header: Header
    data: bytes

    @property
    def opcode(self) -> int:
        return self.header.opcode


def parse_pdu(wire: bytes) -> Pdu:
    """Read one whole PDU (BHS, AHS, data, padding) and nothing more."""
    header = parse_header(wire[:BHS_SIZE])
    if len(wire) != BHS_SIZE + header.total_length:
        raise IscsiError(
            f"the PDU claims {BHS_SIZE + header.total_length} bytes, {len(wire)} given"
        )
    start = BHS_SIZE + header.ahs_length
    return Pdu(header, wire[start : start + header.data_length])


# Requests.


@dataclass(frozen=True)
class Session:
    """What names one session from the initiator's side (RFC 7143 4.2.7,
    11.12.5): the ISID and the connection id."""

    isid: bytes
    cid: int = 1

    def __post_init__(self) -> None:
        if len(self.isid) != 6:
            raise IscsiError("an ISID is 6 bytes")


def random_isid(random: bytes) -> bytes:
    """An ISID of the random format from 5 random bytes.

    RFC 7143 11.12.5: T = 10b (random), A reserved as 0, then 24 random
    bits in B and C, and a 16-bit qualifier D (random here too).
    """
    if len(random) != 5:
        raise IscsiError("a random ISID takes 5 random bytes")
    return b"\x80" + random


def login_request(
    session: Session,
    *,
    itt: int,
    cmd_sn: int,
    exp_stat_sn: int,
    csg: Stage,
    nsg: Stage,
    transit: bool,
    keys: Keys = (),
) -> bytes:
    """A Login Request (RFC 7143 11.12), always immediate, TSIH 0.

    NSG only counts when ``transit`` is set (11.12.3); it is sent as 0
    otherwise.
    """
    flags = (csg << 2) | (nsg if transit else 0) | (_TRANSIT if transit else 0)
    header = bytearray(BHS_SIZE)
    header[0] = _IMMEDIATE | Opcode.LOGIN_REQUEST
    header[1] = flags
    # Bytes 2-3: Version-max and Version-min, both 0 (11.12.4).
    header[8:14] = session.isid
    # Bytes 14-15: TSIH 0, a new session (11.12.6).
    header[16:20] = itt.to_bytes(4, "big")
    header[20:22] = session.cid.to_bytes(2, "big")
    header[24:28] = cmd_sn.to_bytes(4, "big")
    header[28:32] = exp_stat_sn.to_bytes(4, "big")
    return frame(bytes(header), encode_keys(keys))


def text_request(
    *,
    itt: int,
    ttt: int,
    cmd_sn: int,
    exp_stat_sn: int,
    keys: Keys = (),
) -> bytes:
    """A final Text Request (RFC 7143 11.10), not immediate.

    ``ttt`` is 0xffffffff to start an exchange, or the Target Transfer
    Tag of the last Text Response to ask for the rest of it (11.10.4).
    """
    header = bytearray(BHS_SIZE)
    header[0] = Opcode.TEXT_REQUEST
    header[1] = _FINAL
    header[16:20] = itt.to_bytes(4, "big")
    header[20:24] = ttt.to_bytes(4, "big")
    header[24:28] = cmd_sn.to_bytes(4, "big")
    header[28:32] = exp_stat_sn.to_bytes(4, "big")
    return frame(bytes(header), encode_keys(keys))


def logout_request(
    session: Session, *, itt: int, cmd_sn: int, exp_stat_sn: int
) -> bytes:
    """An immediate Logout Request closing the session (RFC 7143 11.14,
    reason code 0)."""
    header = bytearray(BHS_SIZE)
    header[0] = _IMMEDIATE | Opcode.LOGOUT_REQUEST
    header[1] = _FINAL
    header[16:20] = itt.to_bytes(4, "big")
    header[20:22] = session.cid.to_bytes(2, "big")
    header[24:28] = cmd_sn.to_bytes(4, "big")
    header[28:32] = exp_stat_sn.to_bytes(4, "big")
    return frame(bytes(header))


# Responses.


@dataclass(frozen=True)
class LoginResponse:
    """RFC 7143 11.13."""

    transit: bool
    more: bool
    csg: int
    nsg: int
    version_active: int
    isid: bytes
    tsih: int
    itt: int
    stat_sn: int
    status: int

    @property
    def status_class(self) -> int:
        return self.status >> 8

    @property
    def status_detail(self) -> int:
        return self.status & 0xFF


def read_login_response(pdu: Pdu) -> LoginResponse:
    """Decode a Login Response's header; its text is left in the PDU,
    since with C set it may end in the middle of a pair."""
    raw = _expect(pdu, Opcode.LOGIN_RESPONSE)
    flags = raw[1]
    transit, more = bool(flags & _TRANSIT), bool(flags & _CONTINUE)
    if transit and more:
        raise IscsiError("a Login Response with both T and C (11.13.6)")
    return LoginResponse(
        transit=transit,
        more=more,
        csg=(flags >> 2) & 0x03,
        nsg=flags & 0x03,
        version_active=raw[3],
        isid=raw[8:14],
        tsih=int.from_bytes(raw[14:16], "big"),
        itt=pdu.header.itt,
        stat_sn=pdu.header.stat_sn,
        status=int.from_bytes(raw[36:38], "big"),
    )


@dataclass(frozen=True)
class TextResponse:
    """RFC 7143 11.11; ``data`` is kept raw, since a response with C set
    may end in the middle of a pair."""

    final: bool
    more: bool
    itt: int
    ttt: int
    stat_sn: int
    data: bytes


def read_text_response(pdu: Pdu) -> TextResponse:
    raw = _expect(pdu, Opcode.TEXT_RESPONSE)
    final, more = bool(raw[1] & _FINAL), bool(raw[1] & _CONTINUE)
    if final and more:
        raise IscsiError("a Text Response with both F and C (11.11.2)")
    return TextResponse(
        final=final,
        more=more,
        itt=pdu.header.itt,
        ttt=int.from_bytes(raw[20:24], "big"),
        stat_sn=pdu.header.stat_sn,
        data=pdu.data,
    )


@dataclass(frozen=True)
class Reject:
    """RFC 7143 11.17: a target refused a PDU; its data segment holds
    the header of the PDU refused, whose tag says which one it was."""

    reason: int
    rejected_itt: int | None
    rejected_opcode: int | None


def read_reject(pdu: Pdu) -> Reject:
    raw = _expect(pdu, Opcode.REJECT)
    if len(pdu.data) < BHS_SIZE:
        return Reject(raw[2], None, None)
    rejected = pdu.data[:BHS_SIZE]
    return Reject(
        reason=raw[2],
        rejected_itt=int.from_bytes(rejected[16:20], "big"),
        rejected_opcode=rejected[0] & _OPCODE_MASK,
    )


def read_logout_response(pdu: Pdu) -> int:
    """The Response code of a Logout Response (RFC 7143 11.15.1)."""
    return _expect(pdu, Opcode.LOGOUT_RESPONSE)[2]


def _expect(pdu: Pdu, opcode: Opcode) -> bytes:
    if pdu.opcode != opcode:
        raise IscsiError(
            f"expected {spec_name(Opcode, opcode)}, got {spec_name(Opcode, pdu.opcode)}"
        )
    return pdu.header.raw


# Negotiation: RFC 7143 6.2 and section 13.

# Keys a target declares without waiting for an answer (RFC 7143 6.2,
# and "Declarative" in each key's section).
DECLARATIVE = frozenset(
    {
        "TargetAlias",
        "TargetAddress",
        "TargetName",
        "TargetPortalGroupTag",
        "InitiatorAlias",
        "MaxRecvDataSegmentLength",
    }
)
# RFC 7143 6.2: values that end a negotiation of a key; no answer.
_FINAL_VALUES = frozenset({"Reject", "Irrelevant", "NotUnderstood"})


def answer_offers(sent: Keys, received: Keys) -> Keys:
    """Answers to the keys a target offered on its own.

    A key the initiator did not send, and that is neither declarative nor
    a final value, waits for an answer (RFC 7143 6.2). Echoing a simple
    value is always acceptable: for Boolean keys either answer is legal,
    and for numeric ones the result is the lesser (or greater) of the
    two, so the same number agrees. A list is answered with its first
    entry (6.2.1). A key this initiator does not know is answered
    ``NotUnderstood``, as RFC 7143 6.2 asks.
    """
    ours = {key for key, _value in sent}
    answers: list[tuple[str, str]] = []
    for key, value in received:
        if key in ours or key in DECLARATIVE or value in _FINAL_VALUES:
            continue
        if key.startswith(("X-", "X#")) or key not in NEGOTIATED:
            answers.append((key, "NotUnderstood"))
        else:
            answers.append((key, value.split(",", 1)[0]))
    return tuple(answers)


# RFC 7143 sections 12 and 13: keys negotiated between the two sides.
NEGOTIATED = frozenset(
    {
        "AuthMethod",
        "HeaderDigest",
        "DataDigest",
        "MaxConnections",
        "InitialR2T",
        "ImmediateData",
        "MaxBurstLength",
        "FirstBurstLength",
        "DefaultTime2Wait",
        "DefaultTime2Retain",
        "MaxOutstandingR2T",
        "DataPDUInOrder",
        "DataSequenceInOrder",
        "ErrorRecoveryLevel",
        "OFMarker",
        "IFMarker",
        "OFMarkInt",
        "IFMarkInt",
    }
)


# SendTargets: RFC 7143 13.3 and 13.8.


@dataclass(frozen=True)
class Portal:
    """``TargetAddress=domainname[:port][,portal-group-tag]`` (13.8)."""

    address: str
    port: int
    tpgt: int | None

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        tag = "" if self.tpgt is None else f",{self.tpgt}"
        return f"{host}:{self.port}{tag}"


@dataclass(frozen=True)
class Target:
    name: str
    portals: tuple[Portal, ...]

    @property
    def amazon(self) -> bool:
        return self.name.startswith(AMAZON_PREFIX)


DEFAULT_PORT = 3260


def parse_portal(value: str) -> Portal:
    """Read a TargetAddress value; IPv6 addresses come in brackets."""
    where, _comma, tag = value.partition(",")
    if where.startswith("["):
        address, bracket, rest = where[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise IscsiError(f"bad TargetAddress {value[:80]!r}")
        port_text = rest[1:]
    else:
        address, _colon, port_text = where.partition(":")
    if not address or not _is_number(port_text or "0", 0xFFFF):
        raise IscsiError(f"bad TargetAddress {value[:80]!r}")
    if tag and not _is_number(tag, 0xFFFF):
        raise IscsiError(f"bad portal group tag in {value[:80]!r}")
    port = int(port_text) if port_text else DEFAULT_PORT
    return Portal(address, port, int(tag) if tag else None)


def _is_number(text: str, limit: int) -> bool:
    return text.isascii() and text.isdigit() and int(text) <= limit


def read_send_targets(keys: Keys) -> tuple[Target, ...]:
    """Group a SendTargets answer into targets and their portals.

    Each ``TargetAddress`` belongs to the ``TargetName`` before it
    (RFC 7143 13.3); other keys are ignored.
    """
    targets: list[Target] = []
    for key, value in keys:
        if key == "TargetName":
            targets.append(Target(value, ()))
        elif key == "TargetAddress":
            if not targets:
                raise IscsiError("a TargetAddress before any TargetName")
            last = targets[-1]
            portals = (*last.portals, parse_portal(value))
            targets[-1] = Target(last.name, portals)
    return tuple(targets)


def is_iqn(name: str) -> bool:
    """True for a well-formed ``iqn.`` name (RFC 7143 4.2.7.3)."""
    return bool(_IQN.fullmatch(name))


def initiator_name(suffix: str) -> str:
    """This probe's InitiatorName, under the project's own naming
    authority (``sgw-reach.dev``, reversed, as RFC 7143 4.2.7.3 asks)."""
    name = f"iqn.2024-01.dev.sgw-reach:probe-{suffix}"
    if not is_iqn(name):
        raise IscsiError(f"{name!r} is not a valid iqn name")
    return name
