"""Tests for probes.oncrpc: XDR, RPC messages and record marking on bytes.

The hex literals are real exchanges, recorded on loopback in a network
namespace of their own: rpcbind 1.2.6 and nfs-ganesha 4.3 with the VFS
backend (Debian 12), mountd on port 20048, one export; the calls were
this codec's, with fixed xids, except where a comment names another
client.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes import oncrpc
from probes.oncrpc import (
    AcceptStat,
    AuthFlavor,
    AuthStat,
    Export,
    IpProto,
    Mapping,
    Packer,
    RecordReader,
    RejectStat,
    ReplyStat,
    RpcError,
)

# rpcbind 1.2.6 over TCP: GETPORT for NFS v3 and mountd v3 over TCP, DUMP,
# and GETPORT for nlockmgr v4, which is not registered (port 0).
GETPORT_NFS_TCP_CALL = bytes.fromhex(
    "80000038 11110001 00000000 00000002 000186a0 00000002 00000003 00000000"
    " 00000000 00000000 00000000 000186a3 00000003 00000006 00000000",
)
GETPORT_NFS_TCP_REPLY = bytes.fromhex(
    "8000001c 11110001 00000001 00000000 00000000 00000000 00000000 00000801",
)
GETPORT_MOUNTD_TCP_REPLY = bytes.fromhex(
    "8000001c 11110002 00000001 00000000 00000000 00000000 00000000 00004e50",
)
DUMP_TCP_CALL = bytes.fromhex(
    "80000028 11110003 00000000 00000002 000186a0 00000002 00000004 00000000"
    " 00000000 00000000 00000000",
)
DUMP_TCP_REPLY = bytes.fromhex(
    "80000134 11110003 00000001 00000000 00000000 00000000 00000000 00000001"
    " 000186a0 00000004 00000006 0000006f 00000001 000186a0 00000003 00000006"
    " 0000006f 00000001 000186a0 00000002 00000006 0000006f 00000001 000186a0"
    " 00000004 00000011 0000006f 00000001 000186a0 00000003 00000011 0000006f"
    " 00000001 000186a0 00000002 00000011 0000006f 00000001 000186a3 00000003"
    " 00000011 00000801 00000001 000186a3 00000003 00000006 00000801 00000001"
    " 000186a5 00000001 00000011 00004e50 00000001 000186a5 00000001 00000006"
    " 00004e50 00000001 000186a5 00000003 00000011 00004e50 00000001 000186a5"
    " 00000003 00000006 00004e50 00000001 000186a3 00000004 00000011 00000801"
    " 00000001 000186a3 00000004 00000006 00000801 00000000",
)
GETPORT_NLM_TCP_REPLY = bytes.fromhex(
    "8000001c 11110004 00000001 00000000 00000000 00000000 00000000 00000000",
)
# rpcbind 1.2.6 over UDP: GETPORT for NFS v3 over UDP, and DUMP.
GETPORT_NFS_UDP_CALL = bytes.fromhex(
    "22220001 00000000 00000002 000186a0 00000002 00000003 00000000 00000000"
    " 00000000 00000000 000186a3 00000003 00000011 00000000",
)
GETPORT_NFS_UDP_REPLY = bytes.fromhex(
    "22220001 00000001 00000000 00000000 00000000 00000000 00000801",
)
DUMP_UDP_REPLY = bytes.fromhex(
    "22220003 00000001 00000000 00000000 00000000 00000000 00000001 000186a0"
    " 00000004 00000006 0000006f 00000001 000186a0 00000003 00000006 0000006f"
    " 00000001 000186a0 00000002 00000006 0000006f 00000001 000186a0 00000004"
    " 00000011 0000006f 00000001 000186a0 00000003 00000011 0000006f 00000001"
    " 000186a0 00000002 00000011 0000006f 00000001 000186a3 00000003 00000011"
    " 00000801 00000001 000186a3 00000003 00000006 00000801 00000001 000186a5"
    " 00000001 00000011 00004e50 00000001 000186a5 00000001 00000006 00004e50"
    " 00000001 000186a5 00000003 00000011 00004e50 00000001 000186a5 00000003"
    " 00000006 00004e50 00000001 000186a3 00000004 00000011 00000801 00000001"
    " 000186a3 00000004 00000006 00000801 00000000",
)
# nfs-ganesha 4.3, NFS on 2049: NULL in v3, v4 and v2 (PROG_MISMATCH,
# 3 to 4) over TCP, and v3 over UDP.
NFS3_NULL_TCP_CALL = bytes.fromhex(
    "80000028 33330003 00000000 00000002 000186a3 00000003 00000000 00000000"
    " 00000000 00000000 00000000",
)
NFS3_NULL_TCP_REPLY = bytes.fromhex(
    "80000018 33330003 00000001 00000000 00000000 00000000 00000000",
)
NFS4_NULL_TCP_REPLY = bytes.fromhex(
    "80000018 33330004 00000001 00000000 00000000 00000000 00000000",
)
NFS2_NULL_TCP_REPLY = bytes.fromhex(
    "80000020 33330005 00000001 00000000 00000000 00000000"  # accepted
    " 00000002 00000003 00000004",  # PROG_MISMATCH, v3 to v4
)
NFS3_NULL_UDP_REPLY = bytes.fromhex(
    "44440003 00000001 00000000 00000000 00000000 00000000",
)
# nfs-ganesha 4.3, mountd on 20048: MOUNT v3 NULL, EXPORT over TCP and
# UDP, and a call to program 100099, which it does not serve.
MOUNT3_NULL_TCP_REPLY = bytes.fromhex(
    "80000018 55550001 00000001 00000000 00000000 00000000 00000000",
)
EXPORT_TCP_CALL = bytes.fromhex(
    "80000028 55550002 00000000 00000002 000186a5 00000003 00000005 00000000"
    " 00000000 00000000 00000000",
)
EXPORT_TCP_REPLY = bytes.fromhex(
    "8000003c 55550002 00000001 00000000 00000000 00000000 00000000 00000001"
    " 00000012 2f746d70 2f727063 6361702f 6578706f 72740000 00000000 00000000",
)
EXPORT_UDP_REPLY = bytes.fromhex(
    "66660002 00000001 00000000 00000000 00000000 00000000 00000001 00000012"
    " 2f746d70 2f727063 6361702f 6578706f 72740000 00000000 00000000",
)
UNKNOWN_PROG_TCP_REPLY = bytes.fromhex(
    "80000018 55550003 00000001 00000000 00000000 00000000 00000001",
)
# nfs-ganesha 4.3 with two exports, the first limited by a CLIENT block
# to 127.0.0.1 and 10.1.0.0/16.
EXPORT_GROUPS_TCP_REPLY = bytes.fromhex(
    "80000084 77770006 00000001 00000000 00000000 00000000 00000000 00000001"
    " 00000012 2f746d70 2f727063 6361702f 6578706f 72740000 00000001 0000000c"
    " 3132372e 302e302e 312f3332 00000001 0000000b 31302e31 2e302e30 2f313600"
    " 00000000 00000001 00000013 2f746d70 2f727063 6361702f 6578706f 72743200"
    " 00000000 00000000",
)
# nfs-ganesha 4.3 with Protocols = 4: rpcbind has no mountd (port 0), and
# NFS v3 NULL is PROG_MISMATCH 4 to 4 over TCP and UDP.
V4ONLY_GETPORT_MOUNTD_REPLY = bytes.fromhex(
    "8000001c 88880002 00000001 00000000 00000000 00000000 00000000 00000000",
)
V4ONLY_NFS3_NULL_TCP_REPLY = bytes.fromhex(
    "80000020 88880003 00000001 00000000 00000000 00000000"  # accepted
    " 00000002 00000004 00000004",  # PROG_MISMATCH, v4 to v4
)
V4ONLY_NFS3_NULL_UDP_REPLY = bytes.fromhex(
    "88880005 00000001 00000000 00000000 00000000 00000002 00000004 00000004",
)
# nfs-ganesha 4.3 with MNT_Port = 0: mountd on random ports, 41371 over
# TCP and 60628 over UDP, as rpcbind 1.2.6 reports them.
MOVED_GETPORT_MOUNTD_REPLY = bytes.fromhex(
    "8000001c aaaa0002 00000001 00000000 00000000 00000000 00000000 0000a19b",
)
MOVED_DUMP_REPLY = bytes.fromhex(
    "80000134 aaaa0003 00000001 00000000 00000000 00000000 00000000 00000001"
    " 000186a0 00000004 00000006 0000006f 00000001 000186a0 00000003 00000006"
    " 0000006f 00000001 000186a0 00000002 00000006 0000006f 00000001 000186a0"
    " 00000004 00000011 0000006f 00000001 000186a0 00000003 00000011 0000006f"
    " 00000001 000186a0 00000002 00000011 0000006f 00000001 000186a3 00000003"
    " 00000011 00000801 00000001 000186a3 00000003 00000006 00000801 00000001"
    " 000186a5 00000001 00000011 0000ecd4 00000001 000186a5 00000001 00000006"
    " 0000a19b 00000001 000186a5 00000003 00000011 0000ecd4 00000001 000186a5"
    " 00000003 00000006 0000a19b 00000001 000186a3 00000004 00000011 00000801"
    " 00000001 000186a3 00000004 00000006 00000801 00000000",
)
# nfs-ganesha 4.3: NFS v3 NULL with an AUTH_SYS credential (stamp
# 0x99990001, machine sgw-reach, uid and gid 65534).
AUTH_SYS_NULL_TCP_CALL = bytes.fromhex(
    "80000048 99990001 00000000 00000002 000186a3 00000003 00000000 00000001"
    " 00000020 99990001 00000009 7367772d 72656163 68000000 0000fffe 0000fffe"
    " 00000000 00000000 00000000",
)
AUTH_SYS_NULL_TCP_REPLY = bytes.fromhex(
    "80000018 99990001 00000001 00000000 00000000 00000000 00000000",
)
# rpcinfo -p (rpcbind 1.2.6, libtirpc) asks DUMP with these bytes: ours
# differ only in the xid.
RPCINFO_DUMP_CALL = bytes.fromhex(
    "80000028 191070a4 00000000 00000002 000186a0 00000002 00000004 00000000"
    " 00000000 00000000 00000000",
)
# nfs-ls -D (libnfs 4.0.0) calls with this AUTH_SYS credential body:
# stamp 0x00228b84, machine "libnfs", uid 0, gid 0, no groups.
LIBNFS_AUTH_SYS_BODY = bytes.fromhex(
    "00228b84 00000006 6c69626e 66730000 00000000 00000000 00000000",
)

# What rpcinfo -p printed for the DUMP above: (prog, vers, proto, port).
RPCINFO_LIST = [
    (100000, 4, "tcp", 111),
    (100000, 3, "tcp", 111),
    (100000, 2, "tcp", 111),
    (100000, 4, "udp", 111),
    (100000, 3, "udp", 111),
    (100000, 2, "udp", 111),
    (100003, 3, "udp", 2049),
    (100003, 3, "tcp", 2049),
    (100005, 1, "udp", 20048),
    (100005, 1, "tcp", 20048),
    (100005, 3, "udp", 20048),
    (100005, 3, "tcp", 20048),
    (100003, 4, "udp", 2049),
    (100003, 4, "tcp", 2049),
]
_PROTO = {"tcp": IpProto.IPPROTO_TCP, "udp": IpProto.IPPROTO_UDP}


def words(*values: int) -> bytes:
    """XDR unsigned integers, for messages built by hand."""
    return b"".join(value.to_bytes(4, "big") for value in values)


def record(framed: bytes) -> bytes:
    """The one record of a captured TCP message."""
    reader = RecordReader()
    reader.feed(framed)
    found = reader.next_record()
    assert found is not None
    return found


def reply(framed: bytes) -> oncrpc.Reply:
    return oncrpc.parse_reply(record(framed))


# Calls: our bytes are the captured ones.


@pytest.mark.parametrize(
    ("call", "wire"),
    [
        (
            oncrpc.getport_call(0x11110001, 100003, 3, IpProto.IPPROTO_TCP),
            GETPORT_NFS_TCP_CALL,
        ),
        (oncrpc.dump_call(0x11110003), DUMP_TCP_CALL),
        (oncrpc.null_call(0x33330003, 100003, 3), NFS3_NULL_TCP_CALL),
        (oncrpc.export_call(0x55550002), EXPORT_TCP_CALL),
    ],
)
def test_calls_over_tcp(call: oncrpc.Call, wire: bytes) -> None:
    assert oncrpc.frame_record(call.encode()) == wire


def test_a_call_over_udp_has_no_record_mark() -> None:
    call = oncrpc.getport_call(0x22220001, 100003, 3, IpProto.IPPROTO_UDP)
    assert call.encode() == GETPORT_NFS_UDP_CALL


def test_our_dump_is_rpcinfos_but_for_the_xid() -> None:
    ours = oncrpc.frame_record(oncrpc.dump_call(0x191070A4).encode())
    assert ours == RPCINFO_DUMP_CALL


def test_auth_sys_credential() -> None:
    cred = oncrpc.auth_sys(0x99990001, "sgw-reach", 65534, 65534)
    null = oncrpc.null_call(0x99990001, 100003, 3)
    call = dataclasses.replace(null, cred=cred)
    assert oncrpc.frame_record(call.encode()) == AUTH_SYS_NULL_TCP_CALL
    libnfs = oncrpc.auth_sys(0x00228B84, "libnfs", 0, 0)
    assert libnfs.flavor == AuthFlavor.AUTH_SYS
    assert libnfs.body == LIBNFS_AUTH_SYS_BODY


def test_auth_sys_groups_and_bounds() -> None:
    cred = oncrpc.auth_sys(1, "h", 2, 3, [4, 5])
    assert cred.body == bytes.fromhex(
        "00000001 00000001 68000000"  # stamp 1, machine name "h"
        " 00000002 00000003"  # uid 2, gid 3
        " 00000002 00000004 00000005"  # groups 4 and 5
    )
    with pytest.raises(RpcError):
        oncrpc.auth_sys(1, "h", 2, 3, list(range(17)))
    with pytest.raises(RpcError):
        oncrpc.auth_sys(1, "x" * 256, 2, 3)
    with pytest.raises(RpcError):
        oncrpc.auth_sys(1, "caf\u00e9", 2, 3)


def test_packer_refuses_what_xdr_cannot_hold() -> None:
    packer = Packer()
    with pytest.raises(RpcError):
        packer.uint(-1)
    with pytest.raises(RpcError):
        packer.uint(1 << 32)
    with pytest.raises(RpcError):
        oncrpc.Call(1, 2, 3, 4, cred=oncrpc.OpaqueAuth(1, b"x" * 401)).encode()


# Replies from rpcbind and ganesha.


def test_getport_replies() -> None:
    nfs = reply(GETPORT_NFS_TCP_REPLY)
    assert (nfs.xid, nfs.reply_stat, nfs.accept_stat) == (
        0x11110001,
        ReplyStat.MSG_ACCEPTED,
        AcceptStat.SUCCESS,
    )
    assert nfs.ok
    assert nfs.verf == oncrpc.AUTH_NONE
    assert oncrpc.parse_getport(nfs.results) == 2049
    mountd = reply(GETPORT_MOUNTD_TCP_REPLY)
    assert oncrpc.parse_getport(mountd.results) == 20048
    assert oncrpc.parse_getport(reply(GETPORT_NLM_TCP_REPLY).results) == 0
    udp = oncrpc.parse_reply(GETPORT_NFS_UDP_REPLY)
    assert udp.xid == 0x22220001
    assert oncrpc.parse_getport(udp.results) == 2049
    moved = reply(MOVED_GETPORT_MOUNTD_REPLY)
    assert oncrpc.parse_getport(moved.results) == 41371


@pytest.mark.parametrize(
    "wire", [record(DUMP_TCP_REPLY), DUMP_UDP_REPLY], ids=["tcp", "udp"]
)
def test_dump_lists_what_rpcinfo_lists(wire: bytes) -> None:
    mappings = oncrpc.parse_dump(oncrpc.parse_reply(wire).results)
    assert mappings == [
        Mapping(prog, vers, _PROTO[proto], port)
        for prog, vers, proto, port in RPCINFO_LIST
    ]


def test_dump_with_mountd_on_random_ports() -> None:
    mappings = oncrpc.parse_dump(reply(MOVED_DUMP_REPLY).results)
    mountd = {(m.vers, m.prot, m.port) for m in mappings if m.prog == 100005}
    assert mountd == {
        (1, IpProto.IPPROTO_UDP, 60628),
        (1, IpProto.IPPROTO_TCP, 41371),
        (3, IpProto.IPPROTO_UDP, 60628),
        (3, IpProto.IPPROTO_TCP, 41371),
    }


@pytest.mark.parametrize(
    "wire",
    [
        NFS3_NULL_TCP_REPLY,
        NFS4_NULL_TCP_REPLY,
        MOUNT3_NULL_TCP_REPLY,
        AUTH_SYS_NULL_TCP_REPLY,
    ],
)
def test_null_replies_succeed_with_no_results(wire: bytes) -> None:
    answer = reply(wire)
    assert answer.ok
    assert answer.results == b""
    assert answer.status() == "SUCCESS"


def test_null_over_udp() -> None:
    answer = oncrpc.parse_reply(NFS3_NULL_UDP_REPLY)
    assert (answer.xid, answer.ok) == (0x44440003, True)


@pytest.mark.parametrize(
    ("wire", "low", "high"),
    [
        (record(NFS2_NULL_TCP_REPLY), 3, 4),
        (record(V4ONLY_NFS3_NULL_TCP_REPLY), 4, 4),
        (V4ONLY_NFS3_NULL_UDP_REPLY, 4, 4),
    ],
)
def test_prog_mismatch_carries_the_range(
    wire: bytes,
    low: int,
    high: int,
) -> None:
    answer = oncrpc.parse_reply(wire)
    assert answer.accept_stat is AcceptStat.PROG_MISMATCH
    assert (answer.low, answer.high) == (low, high)
    assert not answer.ok
    assert answer.status() == "PROG_MISMATCH"


def test_prog_unavail() -> None:
    answer = reply(UNKNOWN_PROG_TCP_REPLY)
    assert answer.accept_stat is AcceptStat.PROG_UNAVAIL
    assert (answer.low, answer.high) == (None, None)


def test_an_unregistered_mountd_has_port_zero() -> None:
    answer = reply(V4ONLY_GETPORT_MOUNTD_REPLY)
    assert oncrpc.parse_getport(answer.results) == 0


@pytest.mark.parametrize(
    "wire", [record(EXPORT_TCP_REPLY), EXPORT_UDP_REPLY], ids=["tcp", "udp"]
)
def test_exports(wire: bytes) -> None:
    exports = oncrpc.parse_exports(oncrpc.parse_reply(wire).results)
    assert exports == [Export("/tmp/rpccap/export", ())]


def test_exports_with_groups() -> None:
    exports = oncrpc.parse_exports(reply(EXPORT_GROUPS_TCP_REPLY).results)
    assert exports == [
        Export("/tmp/rpccap/export", ("127.0.0.1/32", "10.1.0.0/16")),
        Export("/tmp/rpccap/export2", ()),
    ]


def test_an_empty_export_list() -> None:
    assert oncrpc.parse_exports(bytes(4)) == []


# Denied replies and other shapes, built by hand after RFC 5531 section 9
# (the servers above never sent them to us).

_DENIED_RPC_MISMATCH = bytes.fromhex(
    "0000002a 00000001 00000001 00000000 00000002 00000002",
)
_DENIED_AUTH_TOOWEAK = bytes.fromhex(
    "0000002a 00000001 00000001 00000001 00000005",
)
_ACCEPTED_WITH_VERF = bytes.fromhex(
    "0000002a 00000001 00000000 00000001 00000003 61626300 00000000",
)


def test_rpc_mismatch() -> None:
    answer = oncrpc.parse_reply(_DENIED_RPC_MISMATCH)
    assert answer.reply_stat is ReplyStat.MSG_DENIED
    assert answer.reject_stat is RejectStat.RPC_MISMATCH
    assert (answer.low, answer.high) == (2, 2)
    assert answer.status() == "RPC_MISMATCH"


def test_auth_error() -> None:
    answer = oncrpc.parse_reply(_DENIED_AUTH_TOOWEAK)
    assert answer.reject_stat is RejectStat.AUTH_ERROR
    assert answer.auth_stat is AuthStat.AUTH_TOOWEAK
    assert answer.status() == "AUTH_ERROR/AUTH_TOOWEAK"
    assert not answer.ok


def test_a_verifier_is_read_past() -> None:
    answer = oncrpc.parse_reply(_ACCEPTED_WITH_VERF)
    assert answer.verf == oncrpc.OpaqueAuth(1, b"abc")
    assert answer.ok


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"", "inside an integer"),
        (bytes.fromhex("0000002a 00000000"), "msg_type 0"),
        (bytes.fromhex("0000002a 00000001 00000002"), "reply_stat"),
        (
            words(0x2A, 1, 0, 0, 0, 6),
            "accept_stat",
        ),
        (bytes.fromhex("0000002a 00000001 00000001 00000002"), "reject_stat"),
        (
            bytes.fromhex("0000002a 00000001 00000001 00000001 00000063"),
            "auth_stat",
        ),
        (
            bytes.fromhex("0000002a 00000001 00000000 00000000 00000191"),
            "opaque",
        ),
        (
            bytes.fromhex("0000002a000000010000000000000000000000080000"),
            "opaque",
        ),
        (_DENIED_AUTH_TOOWEAK + bytes(4), "left over"),
        (
            words(0x2A, 1, 0, 0, 0, 2, 3),
            "inside an integer",
        ),
    ],
)
def test_malformed_replies(wire: bytes, message: str) -> None:
    with pytest.raises(RpcError, match=message):
        oncrpc.parse_reply(wire)


@pytest.mark.parametrize(
    ("parse", "results"),
    [
        (oncrpc.parse_getport, b""),
        (oncrpc.parse_getport, bytes.fromhex("00010000")),
        (oncrpc.parse_getport, bytes(8)),
        (oncrpc.parse_dump, bytes.fromhex("00000002")),
        (oncrpc.parse_dump, bytes.fromhex("00000001 00000001")),
        (oncrpc.parse_exports, bytes.fromhex("00000001 00000401")),
        (
            oncrpc.parse_exports,
            bytes.fromhex("00000001 00000000 00000001 00000100"),
        ),
    ],
)
def test_malformed_results(
    parse: Callable[[bytes], object],
    results: bytes,
) -> None:
    with pytest.raises(RpcError):
        parse(results)


def test_lists_are_bounded() -> None:
    entry = bytes.fromhex("00000001") + bytes(16)
    wire = entry * (oncrpc.MAX_MAPPINGS + 1) + bytes(4)
    with pytest.raises(RpcError, match="more than 512"):
        oncrpc.parse_dump(wire)
    full = entry * oncrpc.MAX_MAPPINGS + bytes(4)
    assert len(oncrpc.parse_dump(full)) == 512


def test_strings_that_are_not_utf8_are_kept_readable() -> None:
    wire = bytes.fromhex("00000001 00000003 2fff6100 00000000 00000000")
    assert oncrpc.parse_exports(wire) == [Export("/\ufffda", ())]


def test_peek_and_match() -> None:
    assert oncrpc.is_reply_to(NFS3_NULL_UDP_REPLY, 0x44440003)
    assert not oncrpc.is_reply_to(NFS3_NULL_UDP_REPLY, 0x44440004)
    assert not oncrpc.is_reply_to(GETPORT_NFS_UDP_CALL, 0x22220001)
    assert oncrpc.peek_header(b"1234567") is None


# Record marking (RFC 5531 section 11).


def test_a_record_split_anywhere_comes_out_whole() -> None:
    for cut in range(len(DUMP_TCP_REPLY) + 1):
        reader = RecordReader()
        reader.feed(DUMP_TCP_REPLY[:cut])
        if cut < len(DUMP_TCP_REPLY):
            assert reader.next_record() is None
        reader.feed(DUMP_TCP_REPLY[cut:])
        assert reader.next_record() == record(DUMP_TCP_REPLY)
        assert reader.pending == 0


def test_fragments_join_and_records_follow_each_other() -> None:
    message = record(EXPORT_GROUPS_TCP_REPLY)
    parts = [message[:8], b"", message[8:50], message[50:]]
    marks = [len(p).to_bytes(4, "big") for p in parts[:-1]]
    stream = b"".join(m + p for m, p in zip(marks, parts, strict=False))
    stream += (0x8000_0000 | len(parts[-1])).to_bytes(4, "big") + parts[-1]
    reader = RecordReader()
    reader.feed(stream + NFS3_NULL_TCP_REPLY)
    assert reader.next_record() == message
    assert reader.next_record() == record(NFS3_NULL_TCP_REPLY)
    assert reader.next_record() is None


def test_records_are_bounded_in_size() -> None:
    reader = RecordReader(max_record=100)
    reader.feed((0x8000_0000 | 101).to_bytes(4, "big"))
    with pytest.raises(RpcError, match="past 100 bytes"):
        reader.next_record()
    reader = RecordReader(max_record=100)
    reader.feed((60).to_bytes(4, "big") + bytes(60))
    reader.feed((0x8000_0000 | 41).to_bytes(4, "big"))
    with pytest.raises(RpcError, match="past 100 bytes"):
        reader.next_record()


def test_records_are_bounded_in_fragments() -> None:
    reader = RecordReader(max_fragments=3)
    reader.feed(bytes(4) * 3 + bytes.fromhex("80000000"))
    with pytest.raises(RpcError, match="more than 3 fragments"):
        reader.next_record()


@pytest.mark.parametrize(
    "stream",
    [
        b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
        b"HTTP/1.1 400 Bad Request\r\n",
        b"220 mail.example ESMTP\r\n",
    ],
)
def test_text_protocols_fail_at_their_first_bytes(stream: bytes) -> None:
    reader = RecordReader()
    reader.feed(stream[:4])
    with pytest.raises(RpcError):
        reader.next_record()


def test_frame_record() -> None:
    assert oncrpc.frame_record(b"abcd") == bytes.fromhex("80000004") + b"abcd"


# Property tests: only RpcError escapes, whatever the input.

_CAPTURED = [
    record(DUMP_TCP_REPLY),
    DUMP_UDP_REPLY,
    record(EXPORT_GROUPS_TCP_REPLY),
    record(NFS2_NULL_TCP_REPLY),
    record(GETPORT_NFS_TCP_REPLY),
    _DENIED_AUTH_TOOWEAK,
    _DENIED_RPC_MISMATCH,
]


def _parse_all(wire: bytes) -> None:
    answer = oncrpc.parse_reply(wire)
    for parse in (
        oncrpc.parse_getport,
        oncrpc.parse_dump,
        oncrpc.parse_exports,
    ):
        with contextlib.suppress(RpcError):
            parse(answer.results)


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_rpc_error(data: bytes) -> None:
    with contextlib.suppress(RpcError):
        _parse_all(data)
    for parse in (
        oncrpc.parse_getport,
        oncrpc.parse_dump,
        oncrpc.parse_exports,
    ):
        with contextlib.suppress(RpcError):
            parse(data)
    reader = RecordReader(max_record=1000, max_fragments=4)
    with contextlib.suppress(RpcError):
        reader.feed(data)
        while reader.next_record() is not None:
            pass


@given(st.sampled_from(_CAPTURED), st.data())
def test_truncated_replies_raise_only_rpc_error(
    wire: bytes, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(wire) - 1))
    with contextlib.suppress(RpcError):
        _parse_all(wire[:cut])


@given(st.sampled_from(_CAPTURED), st.data())
def test_flipped_bytes_raise_only_rpc_error(
    wire: bytes,
    data: st.DataObject,
) -> None:
    at = data.draw(st.integers(min_value=0, max_value=len(wire) - 1))
    value = data.draw(st.integers(min_value=0, max_value=255))
    changed = wire[:at] + bytes([value]) + wire[at + 1 :]
    with contextlib.suppress(RpcError):
        _parse_all(changed)


_uint = st.integers(min_value=0, max_value=0xFFFF_FFFF)
_port = st.integers(min_value=0, max_value=0xFFFF)
_name = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40
)


@given(st.lists(st.tuples(_uint, _uint, _uint, _port), max_size=40))
def test_dump_lists_round_trip(
    entries: list[tuple[int, int, int, int]],
) -> None:
    packer = Packer()
    for entry in entries:
        packer.uint(1)
        packer.raw(oncrpc.encode_mapping(Mapping(*entry)))
    packer.uint(0)
    assert oncrpc.parse_dump(packer.data()) == [Mapping(*e) for e in entries]


@given(st.lists(st.tuples(_name, st.lists(_name, max_size=5)), max_size=10))
def test_export_lists_round_trip(entries: list[tuple[str, list[str]]]) -> None:
    packer = Packer()
    for directory, groups in entries:
        packer.uint(1)
        packer.string(directory)
        for group in groups:
            packer.uint(1)
            packer.string(group)
        packer.uint(0)
    packer.uint(0)
    assert oncrpc.parse_exports(packer.data()) == [
        Export(directory, tuple(groups)) for directory, groups in entries
    ]


@given(_uint, st.binary(max_size=200), st.integers(min_value=1, max_value=9))
def test_any_message_survives_fragmenting(
    xid: int, payload: bytes, pieces: int
) -> None:
    message = xid.to_bytes(4, "big") + payload
    size = -(-len(message) // pieces)
    chunks = [message[i : i + size] for i in range(0, len(message), size)]
    marks = [len(chunk) for chunk in chunks]
    marks[-1] |= 0x8000_0000
    stream = b"".join(
        mark.to_bytes(4, "big") + chunk
        for mark, chunk in zip(marks, chunks, strict=True)
    )
    reader = RecordReader()
    for byte in range(0, len(stream), 7):
        reader.feed(stream[byte : byte + 7])
    assert reader.next_record() == message
