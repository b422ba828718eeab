"""ONC RPC and XDR codec for the portmapper, NFS and mountd probes.

Pure: bytes in, typed values or :class:`RpcError` out; no sockets, clock
or logging. It covers what the probes send and read:

- XDR primitives (RFC 4506): unsigned integers, variable-length opaque
  data and strings, counted arrays and linked lists, each with a cap on
  its length so a hostile peer cannot make the decoder allocate or loop
  without bound;
- RPC call and reply messages (RFC 5531 section 9), with AUTH_NONE and
  AUTH_SYS credentials (RFC 5531 section 14 and appendix A);
- record marking for RPC over TCP (RFC 5531 section 11), with bounds on
  a record's total size and its number of fragments;
- the portmapper's GETPORT and DUMP (RFC 1833 section 3), and mountd's
  EXPORT (RFC 1813 section 5.2.5).

Limits: only the procedures above. rpcbind versions 3 and 4 (universal
addresses) and RPCSEC_GSS are not spoken; credentials and verifiers in
replies are read but not checked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

_T = TypeVar("_T")

RPC_VERSION = 2
"""RFC 5531 section 9: the only version of the RPC protocol."""

# RFC 5531 section 8.2: opaque_auth bodies hold at most 400 bytes.
MAX_AUTH_BODY = 400
# RFC 5531 appendix A: the machine name of AUTH_SYS is string<255> and
# its list of groups is at most 16 long.
MAX_MACHINE_NAME = 255
MAX_AUTH_SYS_GIDS = 16
# RFC 5531 section 11: a record is one or more fragments, each behind a
# four-byte mark whose top bit says "last fragment" and whose other 31
# bits give its length. The RFC bounds neither, so we do: a reply to the
# calls we make fits in far less than this many bytes and fragments.
MAX_RECORD = 256 * 1024
MAX_FRAGMENTS = 64
_LAST_FRAGMENT = 0x8000_0000
_MARK_SIZE = 4
# RFC 1833 section 3: a DUMP reply is a linked list of mappings; a busy
# host registers a few dozen. More than this is not a portmapper.
MAX_MAPPINGS = 512
# RFC 1813 section 5.1: MNTPATHLEN and MNTNAMLEN.
MNTPATHLEN = 1024
MNTNAMLEN = 255
# Bounds on an EXPORT reply's lists; no spec sets them.
MAX_EXPORTS = 1024
MAX_GROUPS = 256
_UINT_MAX = 0xFFFF_FFFF


class RpcError(ValueError):
    """Bytes that are not a well-formed RPC message of the kind expected."""


# Wire codes, with the names the RFCs give them.


class MsgType(IntEnum):
    """RFC 5531 section 9: ``msg_type``."""

    CALL = 0
    REPLY = 1


class ReplyStat(IntEnum):
    """RFC 5531 section 9: ``reply_stat``."""

    MSG_ACCEPTED = 0
    MSG_DENIED = 1


class AcceptStat(IntEnum):
    """RFC 5531 section 9: ``accept_stat``."""

    SUCCESS = 0
    PROG_UNAVAIL = 1
    PROG_MISMATCH = 2
    PROC_UNAVAIL = 3
    GARBAGE_ARGS = 4
    SYSTEM_ERR = 5


class RejectStat(IntEnum):
    """RFC 5531 section 9: ``reject_stat``."""

    RPC_MISMATCH = 0
    AUTH_ERROR = 1


class AuthStat(IntEnum):
    """RFC 5531 section 9: ``auth_stat`` (with the RPCSEC_GSS codes)."""

    AUTH_OK = 0
    AUTH_BADCRED = 1
    AUTH_REJECTEDCRED = 2
    AUTH_BADVERF = 3
    AUTH_REJECTEDVERF = 4
    AUTH_TOOWEAK = 5
    AUTH_INVALIDRESP = 6
    AUTH_FAILED = 7
    AUTH_KERB_GENERIC = 8
    AUTH_TIMEEXPIRE = 9
    AUTH_TKT_FILE = 10
    AUTH_DECODE = 11
    AUTH_NET_ADDR = 12
    RPCSEC_GSS_CREDPROBLEM = 13
    RPCSEC_GSS_CTXPROBLEM = 14


class AuthFlavor(IntEnum):
    """RFC 5531 section 8.2 and the IANA registry: the flavors named."""

    AUTH_NONE = 0
    AUTH_SYS = 1
    AUTH_SHORT = 2
    AUTH_DH = 3
    RPCSEC_GSS = 6


class IpProto(IntEnum):
    """RFC 1833 section 3: the ``prot`` field of a mapping."""

    IPPROTO_TCP = 6
    IPPROTO_UDP = 17


# Programs and procedures of RFC 1833 (portmapper), RFC 1813 (NFSv3 and
# MOUNT v3) and RFC 7530 (NFSv4).
PMAP_PROG = 100000
PMAP_VERS = 2
NFS_PROG = 100003
MOUNT_PROG = 100005
MOUNT_VERS = 3
NULLPROC = 0


class PmapProc(IntEnum):
    """RFC 1833 section 3: portmapper version 2 procedures."""

    PMAPPROC_NULL = 0
    PMAPPROC_SET = 1
    PMAPPROC_UNSET = 2
    PMAPPROC_GETPORT = 3
    PMAPPROC_DUMP = 4
    PMAPPROC_CALLIT = 5


class MountProc(IntEnum):
    """RFC 1813 section 5.2: MOUNT version 3 procedures."""

    MOUNTPROC3_NULL = 0
    MOUNTPROC3_MNT = 1
    MOUNTPROC3_DUMP = 2
    MOUNTPROC3_UMNT = 3
    MOUNTPROC3_UMNTALL = 4
    MOUNTPROC3_EXPORT = 5


PROGRAM_NAMES = {
    100000: "portmapper",
    100001: "rstatd",
    100002: "rusersd",
    100003: "nfs",
    100004: "ypserv",
    100005: "mountd",
    100007: "ypbind",
    100011: "rquotad",
    100021: "nlockmgr",
    100024: "status",
    100227: "nfs_acl",
}
"""Names of well-known RPC programs, as rpcinfo prints them."""


def _enum(kind: Callable[[int], _T], value: int, what: str) -> _T:
    try:
        return kind(value)
    except ValueError:
        raise RpcError(f"unknown {what} {value}") from None


# XDR (RFC 4506).


def _ascii(text: str) -> bytes:
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise RpcError(f"{text!r} is not ASCII") from None


def _pad(size: int) -> int:
    """RFC 4506 section 3: every item fills a multiple of four bytes."""
    return -size % 4


class Packer:
    """Builds XDR bytes item by item."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def uint(self, value: int) -> None:
        """RFC 4506 4.2: unsigned integer, four bytes, big-endian."""
        if not 0 <= value <= _UINT_MAX:
            raise RpcError(f"{value} does not fit an unsigned XDR integer")
        self._parts.append(value.to_bytes(4, "big"))

    def opaque(self, data: bytes) -> None:
        """RFC 4506 4.10: variable-length opaque data, length first."""
        self.uint(len(data))
        self._parts.append(data + b"\0" * _pad(len(data)))

    def string(self, text: str) -> None:
        """RFC 4506 4.11: a string is ASCII bytes, laid out as opaque."""
        self.opaque(_ascii(text))

    def raw(self, data: bytes) -> None:
        """Bytes already in XDR form (an argument block)."""
        self._parts.append(data)

    def data(self) -> bytes:
        """Everything packed so far."""
        return b"".join(self._parts)


class Unpacker:
    """Reads XDR items from bytes, refusing what runs past the end or past
    a length cap."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def uint(self) -> int:
        end = self._at + 4
        if end > len(self._data):
            raise RpcError(f"message ends inside an integer at {self._at}")
        value = int.from_bytes(self._data[self._at : end], "big")
        self._at = end
        return value

    def boolean(self) -> bool:
        """RFC 4506 4.4: a boolean is an enum of FALSE (0) and TRUE (1)."""
        value = self.uint()
        if value > 1:
            raise RpcError(f"{value} is not an XDR boolean")
        return value == 1

    def opaque(self, limit: int) -> bytes:
        """Variable-length opaque data of at most ``limit`` bytes."""
        size = self.uint()
        if size > limit:
            raise RpcError(f"opaque of {size} bytes, more than {limit}")
        end = self._at + size + _pad(size)
        if end > len(self._data):
            raise RpcError(f"message ends inside {size} bytes of opaque")
        value = self._data[self._at : self._at + size]
        self._at = end
        return value

    def string(self, limit: int) -> str:
        """A string of at most ``limit`` bytes. RFC 4506 says ASCII;
        servers send file names in other encodings too, so bytes that
        are not UTF-8 are replaced rather than refused."""
        return self.opaque(limit).decode("utf-8", errors="replace")

    def rest(self) -> bytes:
        """Everything not read yet (an RPC reply's results)."""
        value = self._data[self._at :]
        self._at = len(self._data)
        return value

    def done(self) -> None:
        """Refuse bytes left over after the last item."""
        if self._at != len(self._data):
            left = len(self._data) - self._at
            raise RpcError(f"{left} bytes left over after the message")

    def linked(self, item: Callable[[Unpacker], _T], limit: int) -> list[_T]:
        """RFC 4506 4.19: an optional-data linked list, each element behind
        a TRUE, the end a FALSE; at most ``limit`` elements."""
        items: list[_T] = []
        while self.boolean():
            if len(items) == limit:
                raise RpcError(f"a list of more than {limit} elements")
            items.append(item(self))
        return items


# RPC messages (RFC 5531 section 9).


@dataclass(frozen=True)
class OpaqueAuth:
    """RFC 5531 section 8.2: a credential or verifier."""

    flavor: int
    body: bytes = b""


AUTH_NONE = OpaqueAuth(AuthFlavor.AUTH_NONE)


def auth_sys(
    stamp: int,
    machinename: str,
    uid: int,
    gid: int,
    gids: Sequence[int] = (),
) -> OpaqueAuth:
    """RFC 5531 appendix A: an AUTH_SYS credential."""
    if len(_ascii(machinename)) > MAX_MACHINE_NAME:
        raise RpcError(f"machine name longer than {MAX_MACHINE_NAME} bytes")
    if len(gids) > MAX_AUTH_SYS_GIDS:
        raise RpcError(f"more than {MAX_AUTH_SYS_GIDS} groups")
    packer = Packer()
    packer.uint(stamp)
    packer.string(machinename)
    packer.uint(uid)
    packer.uint(gid)
    packer.uint(len(gids))
    for group in gids:
        packer.uint(group)
    return OpaqueAuth(AuthFlavor.AUTH_SYS, packer.data())


def _pack_auth(packer: Packer, auth: OpaqueAuth) -> None:
    if len(auth.body) > MAX_AUTH_BODY:
        raise RpcError(f"auth body longer than {MAX_AUTH_BODY} bytes")
    packer.uint(auth.flavor)
    packer.opaque(auth.body)


def _unpack_auth(unpacker: Unpacker) -> OpaqueAuth:
    flavor = unpacker.uint()
    return OpaqueAuth(flavor, unpacker.opaque(MAX_AUTH_BODY))


@dataclass(frozen=True)
class Call:
    """An RPC call as the probes make it: who it is for, and its xid."""

    xid: int
    prog: int
    vers: int
    proc: int
    args: bytes = b""
    cred: OpaqueAuth = AUTH_NONE

    def encode(self) -> bytes:
        """RFC 5531 section 9: ``rpc_msg`` with a ``call_body``; the
        verifier is AUTH_NONE, as AUTH_NONE and AUTH_SYS both want."""
        packer = Packer()
        packer.uint(self.xid)
        packer.uint(MsgType.CALL)
        packer.uint(RPC_VERSION)
        packer.uint(self.prog)
        packer.uint(self.vers)
        packer.uint(self.proc)
        _pack_auth(packer, self.cred)
        _pack_auth(packer, AUTH_NONE)
        packer.raw(self.args)
        return packer.data()


@dataclass(frozen=True)
class Reply:
    """An RPC reply (RFC 5531 section 9), flattened.

    ``accept_stat`` is set when the call was accepted, ``reject_stat``
    when it was denied; ``auth_stat`` goes with AUTH_ERROR; ``low`` and
    ``high`` with PROG_MISMATCH and RPC_MISMATCH; ``results`` holds the
    procedure's XDR results after SUCCESS.
    """

    xid: int
    reply_stat: ReplyStat
    accept_stat: AcceptStat | None = None
    reject_stat: RejectStat | None = None
    auth_stat: AuthStat | None = None
    low: int | None = None
    high: int | None = None
    results: bytes = b""
    verf: OpaqueAuth = AUTH_NONE

    @property
    def ok(self) -> bool:
        return self.accept_stat is AcceptStat.SUCCESS

    def status(self) -> str:
        """The most precise name for how the call ended, e.g.
        ``PROG_MISMATCH`` or ``AUTH_ERROR/AUTH_TOOWEAK``."""
        if self.accept_stat is not None:
            return self.accept_stat.name
        assert self.reject_stat is not None
        if self.auth_stat is not None:
            return f"{self.reject_stat.name}/{self.auth_stat.name}"
        return self.reject_stat.name


def peek_header(data: bytes) -> tuple[int, int] | None:
    """The xid and msg_type of a message, None when it is too short."""
    if len(data) < 8:
        return None
    return int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")


def is_reply_to(data: bytes, xid: int) -> bool:
    """True when ``data`` starts like a reply to the call ``xid``."""
    return peek_header(data) == (xid, MsgType.REPLY)


def parse_reply(data: bytes) -> Reply:
    """Decode a whole RPC reply message (RFC 5531 section 9)."""
    unpacker = Unpacker(data)
    xid = unpacker.uint()
    mtype = unpacker.uint()
    if mtype != MsgType.REPLY:
        raise RpcError(f"msg_type {mtype} where a REPLY (1) belongs")
    stat = _enum(ReplyStat, unpacker.uint(), "reply_stat")
    if stat is ReplyStat.MSG_ACCEPTED:
        return _accepted(xid, unpacker)
    return _denied(xid, unpacker)


_ACCEPTED = ReplyStat.MSG_ACCEPTED
_DENIED = ReplyStat.MSG_DENIED


def _accepted(xid: int, unpacker: Unpacker) -> Reply:
    verf = _unpack_auth(unpacker)
    stat = _enum(AcceptStat, unpacker.uint(), "accept_stat")
    if stat is AcceptStat.SUCCESS:
        results = unpacker.rest()
        return Reply(xid, _ACCEPTED, stat, results=results, verf=verf)
    low = high = None
    if stat is AcceptStat.PROG_MISMATCH:
        low, high = unpacker.uint(), unpacker.uint()
    unpacker.done()
    return Reply(xid, _ACCEPTED, stat, low=low, high=high, verf=verf)


def _denied(xid: int, unpacker: Unpacker) -> Reply:
    stat = _enum(RejectStat, unpacker.uint(), "reject_stat")
    if stat is RejectStat.RPC_MISMATCH:
        low, high = unpacker.uint(), unpacker.uint()
        unpacker.done()
        return Reply(xid, _DENIED, reject_stat=stat, low=low, high=high)
    auth = _enum(AuthStat, unpacker.uint(), "auth_stat")
    unpacker.done()
    return Reply(xid, _DENIED, reject_stat=stat, auth_stat=auth)


# Record marking (RFC 5531 section 11).


def frame_record(message: bytes) -> bytes:
    """A message as one record of one fragment, the last."""
    if len(message) >= _LAST_FRAGMENT:
        raise RpcError("message too long for one fragment")
    return (_LAST_FRAGMENT | len(message)).to_bytes(4, "big") + message


class RecordReader:
    """Reassembles records from a TCP byte stream.

    :meth:`feed` takes bytes as they come; :meth:`next_record` returns a
    whole record once its last fragment is in, None while more bytes are
    needed, and raises RpcError as soon as a fragment mark breaks the
    bounds (so a stream that is not RPC at all fails at its first four
    bytes, most of the time).
    """

    def __init__(
        self,
        max_record: int = MAX_RECORD,
        max_fragments: int = MAX_FRAGMENTS,
    ) -> None:
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._size = 0
        self._max_record = max_record
        self._max_fragments = max_fragments

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes received that are not yet part of a returned record."""
        return len(self._buffer) + self._size

    def next_record(self) -> bytes | None:
        while len(self._buffer) >= _MARK_SIZE:
            mark = int.from_bytes(self._buffer[:_MARK_SIZE], "big")
            last, size = bool(mark & _LAST_FRAGMENT), mark & ~_LAST_FRAGMENT
            self._check(size)
            end = _MARK_SIZE + size
            if len(self._buffer) < end:
                return None
            self._fragments.append(bytes(self._buffer[_MARK_SIZE:end]))
            self._size += size
            del self._buffer[:end]
            if last:
                record = b"".join(self._fragments)
                self._fragments, self._size = [], 0
                return record
        return None

    def _check(self, size: int) -> None:
        limit = self._max_record
        if self._size + size > limit:
            raise RpcError(f"a record past {limit} bytes ({size} more)")
        if len(self._fragments) >= self._max_fragments:
            limit = self._max_fragments
            raise RpcError(f"a record of more than {limit} fragments")


# Portmapper version 2 (RFC 1833 section 3).


@dataclass(frozen=True)
class Mapping:
    """RFC 1833 section 3: ``struct mapping``."""

    prog: int
    vers: int
    prot: int
    port: int


def encode_mapping(mapping: Mapping) -> bytes:
    packer = Packer()
    for value in (mapping.prog, mapping.vers, mapping.prot, mapping.port):
        packer.uint(value)
    return packer.data()


def _unpack_mapping(unpacker: Unpacker) -> Mapping:
    prog, vers = unpacker.uint(), unpacker.uint()
    return Mapping(prog, vers, unpacker.uint(), unpacker.uint())


def getport_call(xid: int, prog: int, vers: int, prot: int) -> Call:
    """PMAPPROC_GETPORT: the port of ``prog``/``vers`` over ``prot``."""
    args = encode_mapping(Mapping(prog, vers, prot, 0))
    return Call(xid, PMAP_PROG, PMAP_VERS, PmapProc.PMAPPROC_GETPORT, args)


def parse_getport(results: bytes) -> int:
    """GETPORT's result: a port, 0 when the program is not registered."""
    unpacker = Unpacker(results)
    port = unpacker.uint()
    unpacker.done()
    if port > 0xFFFF:
        raise RpcError(f"port {port} is out of range")
    return port


def dump_call(xid: int) -> Call:
    """PMAPPROC_DUMP: every registered mapping."""
    return Call(xid, PMAP_PROG, PMAP_VERS, PmapProc.PMAPPROC_DUMP)


def parse_dump(results: bytes) -> list[Mapping]:
    """DUMP's result: ``pmaplist``, a linked list of mappings."""
    unpacker = Unpacker(results)
    mappings = unpacker.linked(_unpack_mapping, MAX_MAPPINGS)
    unpacker.done()
    return mappings


# MOUNT version 3 (RFC 1813 section 5).


@dataclass(frozen=True)
class Export:
    """RFC 1813 section 5.2.5: one ``exportnode``."""

    dir: str
    groups: tuple[str, ...]


def export_call(xid: int) -> Call:
    """MOUNTPROC3_EXPORT: the server's export list."""
    return Call(xid, MOUNT_PROG, MOUNT_VERS, MountProc.MOUNTPROC3_EXPORT)


def _unpack_group(unpacker: Unpacker) -> str:
    return unpacker.string(MNTNAMLEN)


def _unpack_export(unpacker: Unpacker) -> Export:
    directory = unpacker.string(MNTPATHLEN)
    groups = unpacker.linked(_unpack_group, MAX_GROUPS)
    return Export(directory, tuple(groups))


def parse_exports(results: bytes) -> list[Export]:
    """EXPORT's result: ``exports``, a linked list of export nodes, each
    with a linked list of groups allowed to mount it."""
    unpacker = Unpacker(results)
    exports = unpacker.linked(_unpack_export, MAX_EXPORTS)
    unpacker.done()
    return exports


def null_call(xid: int, prog: int, vers: int) -> Call:
    """Procedure 0 of any program: no arguments, no results."""
    return Call(xid, prog, vers, NULLPROC)
