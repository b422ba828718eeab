"""SMB probes: an SMB2 NEGOTIATE on 445/TCP (SMB direct) and on 139/TCP
(SMB over the NetBIOS session service).

On 445 the probe sends an SMB2 NEGOTIATE request ([MS-SMB2] 2.2.3) in
the Direct TCP transport framing ([MS-SMB2] 2.1: a zero byte and a
three-byte length), offering dialects 2.0.2 to 3.1.1 with signing
enabled, a random ClientGuid and, for 3.1.1, the preauthentication
integrity (SHA-512, random salt) and encryption negotiate contexts. The
NEGOTIATE response ([MS-SMB2] 2.2.4) gives the dialect, whether signing
is required, the server's GUID, capabilities, largest read and write and
its clock (SystemTime), all kept as evidence; the clock's offset from
this host's is evidence for SMB clock-skew errors.

On 139 a SESSION REQUEST (RFC 1002 4.3.2) to ``*SMBSERVER`` comes
first (see :mod:`probes.netbios`); after a positive response the same
negotiation runs inside session messages, whose four-byte header reads
the same. A negative response still proves that the session service
runs, so it passes with the error's name; a retarget response names
another address and port, which the probe reports without following
(Windows clients do not follow it either), as a warning.

SMB1-only servers. The probe speaks SMB2 first, as a client with SMB1
turned off does, and does not start with the SMB1 multi-protocol
negotiate ([MS-SMB2] 3.2.4.2.1): an SMB1 packet is what intrusion
prevention rules and hardened servers block or drop, which would fail a
path that every SMB2 client can use. An SMB1-only server answers the SMB2
request with an SMB1 packet or, like Samba with ``server max protocol =
NT1``, closes the connection without a word. Only in that last case the
probe opens a second connection and sends an SMB1 NEGOTIATE ([MS-CIFS]
2.2.4.52) offering ``NT LM 0.12``, ``SMB 2.002`` and ``SMB 2.???``: an
SMB1 answer (picking ``NT LM 0.12``) marks an SMB1-only server
(``protocol-error``, evidence ``smb1_only``), since the gateway's
clients need SMB2 or SMB3; a close again means the port does not speak
SMB (``wrong-protocol``).

Replies are matched to the request by command, the response flag and the
message id (SMB2) or the process and multiplex ids (SMB1). An SMB2 error
status to the NEGOTIATE (no common dialect) is a protocol error, since no
client can go further; bytes that are not SMB are ``wrong-protocol``.

Limits: no session setup, so nothing is learned about authentication or
shares; negotiate contexts are counted, and of their contents only the
cipher is read. SMB over QUIC and RDMA are not probed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

from probes import netbios
from probes.base import (
    JSONValue,
    Outcome,
    ProbeRequest,
    Reason,
    failed,
    held_open,
    passed,
    printable,
    warned,
)
from probes.net import Connection, address_of, open_tcp

# [MS-SMB2] 2.1: the transport header is a zero byte and a 24-bit length.
TRANSPORT_HEADER_SIZE = 4
# The largest reply read. A NEGOTIATE response is a 128-byte fixed part,
# a GSS token (a few hundred bytes) and a few contexts; nothing honest
# comes near this.
MAX_MESSAGE = 65536
# Bytes asked of the socket at a time; with the largest message this
# bounds what is ever held to MAX_MESSAGE plus one chunk.
_CHUNK = 4096
# RFC 1002 4.3.6: keep-alives a server may send on 139 before answering.
MAX_KEEP_ALIVES = 8
# [MS-SMB2] 2.2.1: the SMB2 header is 64 bytes; [MS-CIFS] 2.2.3.1: the
# SMB1 header is 32.
SMB2_HEADER_SIZE = 64
SMB1_HEADER_SIZE = 32
SMB2_MAGIC = b"\xfeSMB"
SMB1_MAGIC = b"\xffSMB"
# [MS-SMB2] 2.2.4: the NEGOTIATE response's fixed part, in bytes.
NEGOTIATE_RESPONSE_SIZE = 64
# [MS-SMB2] 2.2.3.1.1: the preauthentication salt; Windows sends 32 bytes.
SALT_SIZE = 32
# [MS-SMB2] 2.2.3: the ProcessId Windows clients put in NEGOTIATE.
_PROCESS_ID = 0xFEFF
# [MS-SMB2] 2.2.1.2: SMB2_FLAGS_SERVER_TO_REDIR.
_SERVER_TO_REDIR = 0x00000001
# [MS-CIFS] 2.2.3.1: SMB_FLAGS_REPLY, and the flags a client sends:
# case-insensitive paths, canonicalised paths.
_SMB1_REPLY = 0x80
_SMB1_FLAGS = 0x18
# [MS-CIFS] 2.2.3.1: Unicode, NT status codes, extended security, long
# names.
_SMB1_FLAGS2 = 0xC801
# [MS-CIFS] 2.2.4.52.2: the NEGOTIATE response's SecurityMode bit for
# required signatures.
_SMB1_SIGNATURES_REQUIRED = 0x08
_SMB1_NO_DIALECT = 0xFFFF
# [MS-SMB2] 2.2.4: FILETIME counts 100 ns from 1601-01-01 UTC.
_FILETIME_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)
_FILETIME_LAST = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_MAX_FILETIME = (_FILETIME_LAST - _FILETIME_EPOCH) // _MICROSECOND * 10


class SmbError(ValueError):
    """Bytes that are SMB but not a usable answer to our NEGOTIATE."""


class NotSmbError(SmbError):
    """Bytes that do not look like SMB at all."""


class NegotiateRejected(SmbError):
    """An SMB2 error response to the NEGOTIATE; ``status`` is its NTSTATUS."""

    def __init__(self, status: int) -> None:
        super().__init__(f"NEGOTIATE refused with status {status_name(status)}")
        self.status = status


class Dialect(IntEnum):
    """[MS-SMB2] 2.2.3: DialectRevision values."""

    SMB_2_0_2 = 0x0202
    SMB_2_1 = 0x0210
    SMB_3_0 = 0x0300
    SMB_3_0_2 = 0x0302
    SMB_3_1_1 = 0x0311
    WILDCARD = 0x02FF


OFFERED = (
    Dialect.SMB_2_0_2,
    Dialect.SMB_2_1,
    Dialect.SMB_3_0,
    Dialect.SMB_3_0_2,
    Dialect.SMB_3_1_1,
)
"""The dialects our NEGOTIATE offers, oldest first."""


class Capability(IntFlag):
    """[MS-SMB2] 2.2.3 and 2.2.4: SMB2_GLOBAL_CAP_* bits."""

    DFS = 0x01
    LEASING = 0x02
    LARGE_MTU = 0x04
    MULTI_CHANNEL = 0x08
    PERSISTENT_HANDLES = 0x10
    DIRECTORY_LEASING = 0x20
    ENCRYPTION = 0x40
    NOTIFICATIONS = 0x80


# What a current Windows client offers: every capability but
# notifications, which only 3.1.1 servers send to clients that ask.
CLIENT_CAPABILITIES = Capability(0x7F)


class SecurityMode(IntFlag):
    """[MS-SMB2] 2.2.3 and 2.2.4: SMB2_NEGOTIATE_SIGNING_* bits."""

    SIGNING_ENABLED = 0x01
    SIGNING_REQUIRED = 0x02


class ContextType(IntEnum):
    """[MS-SMB2] 2.2.3.1: negotiate context types this probe sends."""

    PREAUTH_INTEGRITY_CAPABILITIES = 0x0001
    ENCRYPTION_CAPABILITIES = 0x0002


class Cipher(IntEnum):
    """[MS-SMB2] 2.2.3.1.2: cipher ids."""

    AES_128_CCM = 0x0001
    AES_128_GCM = 0x0002
    AES_256_CCM = 0x0003
    AES_256_GCM = 0x0004


CIPHERS = (
    Cipher.AES_128_GCM,
    Cipher.AES_128_CCM,
    Cipher.AES_256_GCM,
    Cipher.AES_256_CCM,
)
"""The ciphers our NEGOTIATE offers, in a current Windows client's order."""

# [MS-SMB2] 2.2.3.1.1: SHA-512, the only hash algorithm defined.
SHA_512 = 0x0001

# [MS-ERREF] 2.3.1: the NTSTATUS codes a NEGOTIATE is refused with.
_STATUS_NAMES = {
    0x00000000: "STATUS_SUCCESS",
    0xC000000D: "STATUS_INVALID_PARAMETER",
    0xC0000022: "STATUS_ACCESS_DENIED",
    0xC000009A: "STATUS_INSUFFICIENT_RESOURCES",
    0xC00000BB: "STATUS_NOT_SUPPORTED",
    0xC00000D0: "STATUS_REQUEST_NOT_ACCEPTED",
}


def status_name(status: int) -> str:
    return _STATUS_NAMES.get(status, f"0x{status:08x}")


def dialect_name(revision: int) -> str:
    """ "3.1.1" for 0x0311, "2.???" for the wildcard, hex otherwise."""
    if revision == Dialect.WILDCARD:
        return "2.???"
    if revision in set(Dialect):
        return Dialect(revision).name[len("SMB_") :].replace("_", ".")
    return f"0x{revision:04x}"


def capability_names(caps: int) -> list[str]:
    """The names of the known bits set in ``caps``, lower case."""
    return [str(c.name).lower() for c in Capability if caps & c]


def filetime_iso(filetime: int) -> str | None:
    """A FILETIME as ISO 8601 UTC, None for zero (not sent) or past 9999."""
    if not 0 < filetime <= _MAX_FILETIME:
        return None
    when = _FILETIME_EPOCH + dt.timedelta(microseconds=filetime // 10)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def filetime_unix(filetime: int) -> float:
    """A FILETIME as seconds since 1970-01-01 UTC."""
    return (filetime - 116444736000000000) / 1e7


# Building requests.


def frame(message: bytes) -> bytes:
    """[MS-SMB2] 2.1: the Direct TCP header, which is also the header of
    an RFC 1002 session message on 139."""
    if len(message) >= 1 << 24:
        raise SmbError(f"a message of {len(message)} bytes cannot be framed")
    return b"\x00" + len(message).to_bytes(3, "big")


def smb2_header(command: int = 0, message_id: int = 0) -> bytes:
    """[MS-SMB2] 2.2.1.2: a synchronous request header, unsigned."""
    return (
        SMB2_MAGIC
        + (64).to_bytes(2, "little")  # StructureSize
        + bytes(2)  # CreditCharge: 0 before any dialect is agreed
        + bytes(4)  # ChannelSequence/Reserved
        + command.to_bytes(2, "little")
        + (1).to_bytes(2, "little")  # CreditRequest
        + bytes(4)  # Flags
        + bytes(4)  # NextCommand
        + message_id.to_bytes(8, "little")
        + _PROCESS_ID.to_bytes(4, "little")
        + bytes(4)  # TreeId
        + bytes(8)  # SessionId
        + bytes(16)  # Signature
    )


def negotiate_request(client_guid: bytes, salt: bytes) -> bytes:
    """[MS-SMB2] 2.2.3: NEGOTIATE offering :data:`OFFERED`, with the
    3.1.1 negotiate contexts; the message without its transport header."""
    if len(client_guid) != 16:
        raise SmbError("a ClientGuid has 16 bytes")
    dialects = b"".join(d.to_bytes(2, "little") for d in OFFERED)
    body_end = SMB2_HEADER_SIZE + 36 + len(dialects)
    # [MS-SMB2] 2.2.3: the first context starts 8-byte aligned, its
    # offset counted from the start of the SMB2 header.
    context_offset = _align8(body_end)
    contexts = _contexts(salt)
    body = (
        (36).to_bytes(2, "little")  # StructureSize
        + len(OFFERED).to_bytes(2, "little")
        + SecurityMode.SIGNING_ENABLED.to_bytes(2, "little")
        + bytes(2)  # Reserved
        + CLIENT_CAPABILITIES.to_bytes(4, "little")
        + client_guid
        + context_offset.to_bytes(4, "little")
        + len(contexts).to_bytes(2, "little")
        + bytes(2)  # Reserved2
        + dialects
    )
    padding = bytes(context_offset - body_end)
    return smb2_header() + body + padding + _join_contexts(contexts)


def _contexts(salt: bytes) -> list[bytes]:
    """[MS-SMB2] 2.2.3.1.1 and 2.2.3.1.2: the contexts' data."""
    preauth = (
        (1).to_bytes(2, "little")  # HashAlgorithmCount
        + len(salt).to_bytes(2, "little")
        + SHA_512.to_bytes(2, "little")
        + salt
    )
    encryption = len(CIPHERS).to_bytes(2, "little") + b"".join(
        c.to_bytes(2, "little") for c in CIPHERS
    )
    return [
        _context(ContextType.PREAUTH_INTEGRITY_CAPABILITIES, preauth),
        _context(ContextType.ENCRYPTION_CAPABILITIES, encryption),
    ]


def _context(kind: int, data: bytes) -> bytes:
    """[MS-SMB2] 2.2.3.1: ContextType, DataLength, Reserved, Data."""
    head = kind.to_bytes(2, "little") + len(data).to_bytes(2, "little")
    return head + bytes(4) + data


def _join_contexts(contexts: list[bytes]) -> bytes:
    """Each context after the first starts 8-byte aligned."""
    out = b""
    for context in contexts:
        out += bytes(_align8(len(out)) - len(out)) + context
    return out


def _align8(offset: int) -> int:
    return (offset + 7) & ~7


def smb1_negotiate_request(pid: int, mid: int) -> bytes:
    """[MS-CIFS] 2.2.4.52.1: SMB1 NEGOTIATE with the dialects that tell an
    SMB1-only server from one that speaks SMB2 ([MS-SMB2] 3.2.4.2.1)."""
    dialects = b"".join(b"\x02" + name + b"\x00" for name in SMB1_DIALECTS)
    header = (
        SMB1_MAGIC
        + bytes([0x72])  # SMB_COM_NEGOTIATE
        + bytes(4)  # Status
        + bytes([_SMB1_FLAGS])
        + _SMB1_FLAGS2.to_bytes(2, "little")
        + bytes(2)  # PIDHigh
        + bytes(8)  # SecurityFeatures
        + bytes(2)  # Reserved
        + bytes(2)  # TID
        + pid.to_bytes(2, "little")
        + bytes(2)  # UID
        + mid.to_bytes(2, "little")
    )
    return header + b"\x00" + len(dialects).to_bytes(2, "little") + dialects


SMB1_DIALECTS = (b"NT LM 0.12", b"SMB 2.002", b"SMB 2.???")
"""The dialect strings of our SMB1 NEGOTIATE, in their order."""


# Reading replies.


@dataclass(frozen=True)
class NegotiateResponse:
    """[MS-SMB2] 2.2.4: what the server chose and says about itself."""

    dialect: int
    security_mode: int
    server_guid: str
    capabilities: int
    max_transact_size: int
    max_read_size: int
    max_write_size: int
    system_time: int
    negotiate_contexts: int
    cipher: int | None = None

    @property
    def signing_required(self) -> bool:
        return bool(self.security_mode & SecurityMode.SIGNING_REQUIRED)


@dataclass(frozen=True)
class Smb1Response:
    """[MS-CIFS] 2.2.4.52.2: an SMB1 answer, to either request."""

    status: int
    dialect: str | None = None
    signing_required: bool = False
    system_time: int = 0


Reply = NegotiateResponse | Smb1Response
_Parser = Callable[[bytes], Reply]


def message_length(head: bytes) -> int:
    """[MS-SMB2] 2.1: the length in a four-byte transport header."""
    if len(head) != TRANSPORT_HEADER_SIZE:
        raise SmbError("a transport header has four bytes")
    if head[0] != 0:
        raise NotSmbError("not an SMB transport header")
    length = int.from_bytes(head[1:], "big")
    if length > MAX_MESSAGE:
        raise NotSmbError(f"a message of {length} bytes is no SMB negotiate")
    return length


def looks_like_smb(data: bytes) -> bool:
    """True when the start of a stream (transport header first) could be
    an SMB1 or SMB2 message, judging by the bytes there are."""
    if not data or data[0] != 0:
        return False
    magic = data[TRANSPORT_HEADER_SIZE : TRANSPORT_HEADER_SIZE + 4]
    return SMB2_MAGIC.startswith(magic) or SMB1_MAGIC.startswith(magic)


def parse_reply(message: bytes, *, pid: int = 0, mid: int = 0) -> Reply:
    """Decode an SMB2 NEGOTIATE response (to message id 0) or an SMB1
    reply (to ``pid`` and ``mid``, when those were sent)."""
    magic = message[:4]
    if magic == SMB2_MAGIC:
        return parse_negotiate_response(message)
    if magic == SMB1_MAGIC:
        return parse_smb1_response(message, pid=pid, mid=mid)
    raise NotSmbError("no SMB protocol id")


def parse_negotiate_response(message: bytes) -> NegotiateResponse:
    """[MS-SMB2] 2.2.1.2 header, then 2.2.4 (or 2.2.2 for an error)."""
    if len(message) < SMB2_HEADER_SIZE:
        raise SmbError("the SMB2 header stops before its end")
    _check_smb2_header(message)
    status = int.from_bytes(message[8:12], "little")
    if status != 0:
        raise NegotiateRejected(status)
    body = message[SMB2_HEADER_SIZE:]
    if len(body) < NEGOTIATE_RESPONSE_SIZE:
        raise SmbError("the NEGOTIATE response stops before its end")
    if int.from_bytes(body[:2], "little") != 65:
        raise SmbError("the NEGOTIATE response has a wrong StructureSize")
    return _negotiate_fields(message, body)


def _check_smb2_header(message: bytes) -> None:
    """The header must answer our NEGOTIATE: a response, command 0,
    message id 0."""
    if int.from_bytes(message[4:6], "little") != SMB2_HEADER_SIZE:
        raise SmbError("the SMB2 header has a wrong StructureSize")
    command = int.from_bytes(message[12:14], "little")
    flags = int.from_bytes(message[16:20], "little")
    message_id = int.from_bytes(message[24:32], "little")
    if command != 0 or not flags & _SERVER_TO_REDIR or message_id != 0:
        raise SmbError(
            f"an SMB2 message (command {command}, message id {message_id}) "
            "that does not answer our NEGOTIATE"
        )


def _negotiate_fields(message: bytes, body: bytes) -> NegotiateResponse:
    def u16(at: int) -> int:
        return int.from_bytes(body[at : at + 2], "little")

    def u32(at: int) -> int:
        return int.from_bytes(body[at : at + 4], "little")

    dialect = u16(4)
    count = u16(6) if dialect == Dialect.SMB_3_1_1 else 0
    cipher = None
    if count:
        cipher = _read_contexts(message, u32(60), count)
    return NegotiateResponse(
        dialect=dialect,
        security_mode=u16(2),
        server_guid=str(uuid.UUID(bytes_le=bytes(body[8:24]))),
        capabilities=u32(24),
        max_transact_size=u32(28),
        max_read_size=u32(32),
        max_write_size=u32(36),
        system_time=int.from_bytes(body[40:48], "little"),
        negotiate_contexts=count,
        cipher=cipher,
    )


def _read_contexts(message: bytes, offset: int, count: int) -> int | None:
    """[MS-SMB2] 2.2.4: walk the contexts (8-byte aligned, offsets from
    the header) and return the cipher of ENCRYPTION_CAPABILITIES."""
    if offset < SMB2_HEADER_SIZE + NEGOTIATE_RESPONSE_SIZE:
        raise SmbError("the negotiate contexts overlap the response")
    cipher = None
    for _ in range(count):
        head = message[offset : offset + 8]
        if len(head) < 8:
            raise SmbError("a negotiate context runs past the message")
        kind = int.from_bytes(head[:2], "little")
        size = int.from_bytes(head[2:4], "little")
        data = message[offset + 8 : offset + 8 + size]
        if len(data) < size:
            raise SmbError("a negotiate context runs past the message")
        if kind == ContextType.ENCRYPTION_CAPABILITIES:
            cipher = _chosen_cipher(data)
        offset = _align8(offset + 8 + size)
    return cipher


def _chosen_cipher(data: bytes) -> int:
    """[MS-SMB2] 2.2.4.1.2: the server names one cipher (0: none)."""
    if len(data) < 4 or int.from_bytes(data[:2], "little") != 1:
        raise SmbError("ENCRYPTION_CAPABILITIES must name one cipher")
    return int.from_bytes(data[2:4], "little")


def parse_smb1_response(message: bytes, *, pid: int, mid: int) -> Smb1Response:
    """[MS-CIFS] 2.2.3.1 header, then 2.2.4.52.2. ``pid`` and ``mid`` of
    zero match any reply (the server's answer to an SMB2 request)."""
    if len(message) < SMB1_HEADER_SIZE + 1:
        raise SmbError("the SMB1 header stops before its end")
    status = int.from_bytes(message[5:9], "little")
    if not message[9] & _SMB1_REPLY or (pid, mid) not in (
        (0, 0),
        (_u16(message, 26), _u16(message, 30)),
    ):
        raise SmbError("an SMB1 message that does not answer our request")
    if message[4] != 0x72 or status != 0:
        return Smb1Response(status)
    words = message[SMB1_HEADER_SIZE + 1 :]
    if message[SMB1_HEADER_SIZE] < 1 or len(words) < 2:
        raise SmbError("an SMB1 NEGOTIATE response without a dialect")
    return _smb1_negotiate(status, words, message[SMB1_HEADER_SIZE])


def _smb1_negotiate(status: int, words: bytes, count: int) -> Smb1Response:
    index = _u16(words, 0)
    if index == _SMB1_NO_DIALECT:
        return Smb1Response(status)
    if index >= len(SMB1_DIALECTS):
        raise SmbError(f"SMB1 dialect index {index} was never offered")
    dialect = SMB1_DIALECTS[index].decode("ascii")
    # [MS-CIFS] 2.2.4.52.2: the NT LM 0.12 answer has 17 words, with
    # SecurityMode at byte 2 and SystemTime at byte 23.
    if count < 17 or len(words) < 34:
        return Smb1Response(status, dialect)
    required = bool(words[2] & _SMB1_SIGNATURES_REQUIRED)
    system_time = int.from_bytes(words[23:31], "little")
    return Smb1Response(status, dialect, required, system_time)


def _u16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "little")


# The probes: thin I/O over the codec above.


@dataclass
class _Place:
    """Where the probe speaks, and how."""

    address: str
    port: int
    session: bool

    @property
    def where(self) -> str:
        return f"{self.address} TCP {self.port}"


@dataclass
class _Exchange:
    """What one connection brought back."""

    connect_ms: float
    got: bytearray = field(default_factory=bytearray)
    used: int = 0
    session_bytes: int = 0
    message: bytes | None = None
    ended: str = ""
    waited_s: float = 0.0
    error: SmbError | None = None

    @property
    def smb_part(self) -> bytes:
        """What came after the session response on 139: SMB, or not."""
        return bytes(self.got[self.session_bytes :])

    @property
    def silent_close(self) -> bool:
        return bool(self.ended) and not self.smb_part


async def probe_direct(request: ProbeRequest) -> Outcome:
    """SMB2 NEGOTIATE on SMB direct (445/TCP)."""
    return await _probe(request, session=False)


async def probe_netbios_session(request: ProbeRequest) -> Outcome:
    """SESSION REQUEST, then SMB2 NEGOTIATE, on 139/TCP."""
    return await _probe(request, session=True)


async def _probe(request: ProbeRequest, *, session: bool) -> Outcome:
    address = await address_of(request)
    if isinstance(address, Outcome):
        return address
    place = _Place(address, request.port, session)
    salt = secrets.token_bytes(SALT_SIZE)
    smb2 = negotiate_request(secrets.token_bytes(16), salt)
    first = await _attempt(place, request, smb2)
    if isinstance(first, Outcome):
        return first.at(address)
    if not first.silent_close:
        return _judge(place, first, parse_reply).at(address)
    request.log.debug("smb.smb1_negotiate", ended=first.ended)
    pid, mid = 1 + secrets.randbelow(0xFFFE), 1 + secrets.randbelow(0xFFFE)
    second = await _attempt(place, request, smb1_negotiate_request(pid, mid))
    if isinstance(second, Outcome) or second.message is None:
        return _closed(place, first).at(address)

    def parse_smb1(message: bytes) -> Reply:
        return parse_reply(message, pid=pid, mid=mid)

    return _judge(place, second, parse_smb1, after_close=True).at(address)


async def _attempt(
    place: _Place, request: ProbeRequest, message: bytes
) -> _Exchange | Outcome:
    """Connect, open the NetBIOS session if needed, send ``message`` and
    read one message back; an outcome when it ended before that."""
    conn = await open_tcp(place.address, place.port, request.deadline)
    if isinstance(conn, Outcome):
        return conn
    request.log.debug("smb.connected", connect_ms=conn.connect_ms)
    exchange = _Exchange(conn.connect_ms)
    started = asyncio.get_running_loop().time()
    try:
        stop = await _talk(conn, place, request, message, exchange)
    except TimeoutError:
        exchange.waited_s = asyncio.get_running_loop().time() - started
        return _stalled(place, exchange)
    return stop if stop is not None else exchange


async def _talk(
    conn: Connection,
    place: _Place,
    request: ProbeRequest,
    message: bytes,
    exchange: _Exchange,
) -> Outcome | None:
    reader, writer = await conn.streams()
    try:
        async with asyncio.timeout_at(request.deadline.when):
            if place.session:
                stop = await _open_session(reader, writer, place, exchange)
                if stop is not None:
                    return stop
                exchange.session_bytes = exchange.used
                request.log.debug("smb.session_opened")
            await _send(writer, frame(message) + message)
            exchange.message = await _read_message(reader, exchange, place)
            return None
    finally:
        writer.close()


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write, ignoring a reset: what the peer sent before it is read next."""
    try:
        writer.write(data)
        await writer.drain()
    except ConnectionError:
        return


async def _read(
    reader: asyncio.StreamReader, exchange: _Exchange, size: int
) -> bytes | None:
    """The next ``size`` bytes, or None when the connection ended first.

    Reads go by chunks into ``exchange.got``, so a peer that is not SMB
    leaves all it sent at once (a banner, an error page) as evidence.
    """
    while len(exchange.got) - exchange.used < size:
        try:
            chunk = await reader.read(_CHUNK)
        except ConnectionError:
            exchange.ended = "reset"
            return None
        if not chunk:
            exchange.ended = "closed"
            return None
        exchange.got += chunk
    data = bytes(exchange.got[exchange.used : exchange.used + size])
    exchange.used += size
    return data


async def _read_message(
    reader: asyncio.StreamReader, exchange: _Exchange, place: _Place
) -> bytes | None:
    """One framed message; keep-alives on 139 are skipped. Sets
    ``exchange.error`` for a header that is not SMB."""
    for _ in range(MAX_KEEP_ALIVES + 1):
        head = await _read(reader, exchange, TRANSPORT_HEADER_SIZE)
        if head is None:
            return None
        if place.session and head == b"\x85\x00\x00\x00":
            continue
        try:
            length = message_length(head)
        except SmbError as exc:
            exchange.error = exc
            return None
        return await _read(reader, exchange, length)
    exchange.error = NotSmbError("keep-alives and no answer")
    return None


async def _open_session(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    place: _Place,
    exchange: _Exchange,
) -> Outcome | None:
    """RFC 1002 4.3.2: SESSION REQUEST and its answer; None when the
    session is open, else the outcome the answer decides."""
    await _send(writer, netbios.session_request())
    head = await _read(reader, exchange, netbios.SESSION_HEADER_SIZE)
    try:
        if head is None:
            raise netbios.NotNetbiosError("no session response")
        header = netbios.parse_session_header(head)
        body = b""
        if header.length:
            body = await _read(reader, exchange, min(header.length, 6)) or b""
        response = netbios.parse_session_response(header, body)
    except netbios.NetbiosError as exc:
        return _bad_session(place, exchange, exc)
    return _session_verdict(place, exchange, response)


# Verdicts.


def _judge(
    place: _Place,
    exchange: _Exchange,
    parse: _Parser,
    *,
    after_close: bool = False,
) -> Outcome:
    if exchange.message is None:
        return _unanswered(place, exchange)
    try:
        reply = parse(exchange.message)
    except SmbError as exc:
        return _refused(place, exchange, exc)
    if isinstance(reply, Smb1Response):
        return _smb1(place, exchange, reply, after_close=after_close)
    if after_close:
        return _smb2_only_by_smb1(place, exchange, reply)
    return _negotiated(place, exchange, reply)


def _negotiated(
    place: _Place, exchange: _Exchange, reply: NegotiateResponse
) -> Outcome:
    evidence = _smb2_evidence(place, exchange, reply)
    if reply.dialect not in OFFERED:
        return failed(
            Reason.PROTOCOL_ERROR,
            f"the SMB server on {place.where} chose dialect "
            f"{evidence['dialect']}, which was not offered",
            "Check the SMB server on this host: it does not follow "
            "[MS-SMB2] negotiation.",
            **evidence,
        )
    signing = "required" if reply.signing_required else "not required"
    return passed(
        f"an SMB server on {place.where} negotiated SMB "
        f"{evidence['dialect']}, signing {signing}",
        **evidence,
    )


def _smb2_evidence(
    place: _Place, exchange: _Exchange, reply: NegotiateResponse
) -> dict[str, JSONValue]:
    server_time = filetime_iso(reply.system_time)
    offset = None
    if server_time is not None:
        skew = filetime_unix(reply.system_time) - time.time()
        offset = round(skew, 1) + 0.0  # never -0.0
    evidence: dict[str, JSONValue] = {
        "dialect": dialect_name(reply.dialect),
        "signing_required": reply.signing_required,
        "server_guid": reply.server_guid,
        "capabilities": capability_names(reply.capabilities),
        "server_time": server_time,
        "clock_offset_s": offset,
        "max_read_size": reply.max_read_size,
        "max_write_size": reply.max_write_size,
        "max_transact_size": reply.max_transact_size,
        "negotiate_contexts": reply.negotiate_contexts,
        "cipher": _cipher_name(reply.cipher),
        "connect_ms": exchange.connect_ms,
    }
    if place.session:
        evidence["session"] = "positive"
    return evidence


def _cipher_name(cipher: int | None) -> str | None:
    if cipher is None or cipher == 0:
        return None
    if cipher in set(Cipher):
        return Cipher(cipher).name.lower().replace("_", "-")
    return f"0x{cipher:04x}"


def _smb1(
    place: _Place, exchange: _Exchange, reply: Smb1Response, *, after_close: bool
) -> Outcome:
    evidence: dict[str, JSONValue] = {
        "smb1_only": True,
        "smb1_dialect": reply.dialect,
        "smb1_status": f"0x{reply.status:08x}",
        "server_time": filetime_iso(reply.system_time),
        "first_bytes": printable(bytes(exchange.got)),
        "connect_ms": exchange.connect_ms,
    }
    how = (
        "closed the connection on an SMB2 NEGOTIATE and answered an SMB1 one"
        if after_close
        else "answered an SMB2 NEGOTIATE in SMB1"
    )
    if reply.dialect is not None:
        how += f" with dialect {reply.dialect}"
    return failed(
        Reason.PROTOCOL_ERROR,
        f"the SMB server on {place.where} speaks only SMB1: it {how}",
        "The gateway's SMB clients need SMB2 or SMB3: check that this "
        "address reaches the gateway and not an old SMB1-only server, or "
        "enable SMB2 on the server.",
        **evidence,
    )


def _smb2_only_by_smb1(
    place: _Place, exchange: _Exchange, reply: NegotiateResponse
) -> Outcome:
    evidence = _smb2_evidence(place, exchange, reply)
    return failed(
        Reason.PROTOCOL_ERROR,
        f"the SMB server on {place.where} closed the connection on an "
        "SMB2 NEGOTIATE but answered an SMB1 multi-protocol one with "
        f"dialect {evidence['dialect']}",
        "Clients with SMB1 turned off cannot connect: check the server, "
        "or a filter on the way that drops SMB2 negotiation.",
        **evidence,
    )


def _refused(place: _Place, exchange: _Exchange, error: SmbError) -> Outcome:
    if isinstance(error, NotSmbError):
        return _wrong(place, exchange)
    evidence: dict[str, JSONValue] = {
        "first_bytes": printable(bytes(exchange.got)),
        "connect_ms": exchange.connect_ms,
    }
    if isinstance(error, NegotiateRejected):
        evidence["status"] = status_name(error.status)
        return failed(
            Reason.PROTOCOL_ERROR,
            f"the SMB server on {place.where} refused the NEGOTIATE for "
            f"dialects 2.0.2 to 3.1.1 with {evidence['status']}",
            "Enable SMB2 or SMB3 dialects on the server: no client of the "
            "gateway can connect otherwise.",
            **evidence,
        )
    return failed(
        Reason.PROTOCOL_ERROR,
        f"{place.where} sent an SMB reply that cannot be used: {error}",
        "Check the SMB server on this host and any filter on the way "
        "that rewrites SMB.",
        **evidence,
    )


def _wrong(place: _Place, exchange: _Exchange) -> Outcome:
    data = bytes(exchange.got)
    if data:
        detail = (
            f"{place.where} answered with something that is not SMB: "
            f"{printable(data, 32)}"
        )
    else:
        detail = f"{place.where} closed the connection without an SMB answer"
    return failed(
        Reason.WRONG_PROTOCOL,
        detail,
        "Something other than an SMB server answers on this port: check "
        "which host and service the address reaches.",
        first_bytes=printable(data),
        connect_ms=exchange.connect_ms,
    )


def _closed(place: _Place, exchange: _Exchange) -> Outcome:
    """The SMB2 request was met with a close and SMB1 got no answer."""
    how = "reset" if exchange.ended == "reset" else "closed"
    return failed(
        Reason.WRONG_PROTOCOL,
        f"{place.where} {how} the connection without answering an SMB2 "
        "NEGOTIATE, and did not answer an SMB1 one either",
        "Something other than an SMB server answers on this port: check "
        "which host and service the address reaches.",
        first_bytes="",
        ended=how,
        connect_ms=exchange.connect_ms,
    )


def _unanswered(place: _Place, exchange: _Exchange) -> Outcome:
    """The connection ended before a whole message came."""
    data = bytes(exchange.got)
    if exchange.error is not None or not looks_like_smb(exchange.smb_part):
        return _wrong(place, exchange)
    return failed(
        Reason.PROTOCOL_ERROR,
        f"{place.where} {exchange.ended or 'closed'} the connection in "
        f"the middle of an SMB reply ({len(data)} bytes)",
        "Check the SMB server on this host and any filter on the way "
        "that cuts SMB connections.",
        first_bytes=printable(data),
        connect_ms=exchange.connect_ms,
    )


def _stalled(place: _Place, exchange: _Exchange) -> Outcome:
    data = bytes(exchange.got)
    smb = exchange.smb_part
    if smb and not looks_like_smb(smb):
        return _wrong(place, exchange)
    if smb:
        what = "an SMB reply began but did not end"
    elif exchange.session_bytes:
        what = "after the NetBIOS session opened no SMB reply came"
    else:
        what = "no reply came"
    waited = round(exchange.waited_s, 1)
    return failed(
        Reason.TIMEOUT,
        f"the TCP connection to {place.where} opened but {what} in {waited} s",
        held_open("the SMB server", place.where),
        connect_ms=exchange.connect_ms,
        waited_s=waited,
        first_bytes=printable(data),
    )


def _session_verdict(
    place: _Place, exchange: _Exchange, response: netbios.SessionResponse
) -> Outcome | None:
    kind = netbios.SessionType
    if response.type is kind.POSITIVE_SESSION_RESPONSE:
        return None
    if response.type is kind.NEGATIVE_SESSION_RESPONSE:
        name = response.error_name()
        return passed(
            f"the NetBIOS session service on {place.where} runs: it "
            f"refused the session to {netbios.CALLED_NAME} ({name})",
            negative_response=name,
            session="negative",
            connect_ms=exchange.connect_ms,
        )
    assert response.retarget is not None
    address, port = response.retarget
    return warned(
        Reason.PROTOCOL_ERROR,
        f"the NetBIOS session service on {place.where} sends clients to "
        f"{address} port {port}; SMB there was not probed",
        "Windows clients do not follow a retarget: let the gateway's "
        "clients reach the SMB server directly.",
        retarget_address=address,
        retarget_port=port,
        session="retarget",
        connect_ms=exchange.connect_ms,
    )


def _bad_session(
    place: _Place, exchange: _Exchange, error: netbios.NetbiosError
) -> Outcome:
    if isinstance(error, netbios.NotNetbiosError):
        return _wrong(place, exchange)
    return failed(
        Reason.PROTOCOL_ERROR,
        f"{place.where} answered the NetBIOS session request with a "
        f"packet that cannot be read: {error}",
        "Check the SMB server on this host and any filter on the way "
        "that rewrites NetBIOS sessions.",
        first_bytes=printable(bytes(exchange.got)),
        connect_ms=exchange.connect_ms,
    )
