"""Tests for probes.rpc: the portmapper, NFS and mountd probes against
small RPC servers on 127.0.0.1.

The servers answer with the replies rpcbind 1.2.6 and nfs-ganesha 4.3
gave on loopback (see tests/test_oncrpc.py), with the xid of each call
put in; the hostile ones misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from collections.abc import Mapping as Table
from dataclasses import dataclass
from typing import cast

import pytest

from probes import rpc
from probes.base import (
    Deadline,
    Outcome,
    ProbeRequest,
    ProbeSettings,
    Reason,
    Status,
    Transport,
)
from probes.oncrpc import (
    AuthFlavor,
    IpProto,
    Mapping,
    Packer,
    RecordReader,
    Unpacker,
    encode_mapping,
    frame_record,
    parse_dump,
    parse_reply,
)
from tests.test_oncrpc import (
    DUMP_TCP_REPLY,
    DUMP_UDP_REPLY,
    EXPORT_GROUPS_TCP_REPLY,
    EXPORT_UDP_REPLY,
    GETPORT_MOUNTD_TCP_REPLY,
    GETPORT_NFS_TCP_REPLY,
    MOUNT3_NULL_TCP_REPLY,
    MOVED_DUMP_REPLY,
    MOVED_GETPORT_MOUNTD_REPLY,
    NFS3_NULL_TCP_REPLY,
    NFS3_NULL_UDP_REPLY,
    NFS4_NULL_TCP_REPLY,
    UNKNOWN_PROG_TCP_REPLY,
    V4ONLY_NFS3_NULL_TCP_REPLY,
    V4ONLY_NFS3_NULL_UDP_REPLY,
    record,
)

ProbeFn = Callable[[ProbeRequest], Awaitable[Outcome]]
Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter

SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


# A small RPC server: it decodes each call and answers with what a
# responder returns for it (a reply message whose xid is replaced), or
# stays silent when the responder returns None.


@dataclass(frozen=True)
class Heard:
    """A call as the server saw it."""

    xid: int
    prog: int
    vers: int
    proc: int
    flavor: int
    args: bytes


Responder = Callable[[Heard], bytes | None]


def parse_call(message: bytes) -> Heard:
    """RFC 5531 section 9: the call header, then the arguments."""
    unpacker = Unpacker(message)
    xid, _mtype, _rpcvers = unpacker.uint(), unpacker.uint(), unpacker.uint()
    prog, vers, proc = unpacker.uint(), unpacker.uint(), unpacker.uint()
    flavor = unpacker.uint()
    unpacker.opaque(400)
    unpacker.uint()
    unpacker.opaque(400)
    return Heard(xid, prog, vers, proc, flavor, unpacker.rest())


def with_xid(message: bytes, xid: int) -> bytes:
    return xid.to_bytes(4, "big") + message[4:]


def accepted(stat: int, body: bytes = b"") -> bytes:
    """A reply template (xid 0): MSG_ACCEPTED, AUTH_NONE verifier."""
    return bytes.fromhex("00000000 00000001 00000000 00000000 00000000") + (
        stat.to_bytes(4, "big") + body
    )


def success(results: bytes = b"") -> bytes:
    return accepted(0, results)


def mismatch(low: int, high: int) -> bytes:
    return accepted(2, low.to_bytes(4, "big") + high.to_bytes(4, "big"))


PROG_UNAVAIL = accepted(1)
PROC_UNAVAIL = accepted(3)
SYSTEM_ERR = accepted(5)
AUTH_TOOWEAK = bytes.fromhex("00000000 00000001 00000001 00000001 00000005")


def port_result(port: int) -> bytes:
    return success(port.to_bytes(4, "big"))


def dump_result(mappings: list[Mapping]) -> bytes:
    packer = Packer()
    for mapping in mappings:
        packer.uint(1)
        packer.raw(encode_mapping(mapping))
    packer.uint(0)
    return success(packer.data())


def exports_result(exports: list[tuple[str, list[str]]]) -> bytes:
    packer = Packer()
    for directory, groups in exports:
        packer.uint(1)
        packer.string(directory)
        for group in groups:
            packer.uint(1)
            packer.string(group)
        packer.uint(0)
    packer.uint(0)
    return success(packer.data())


def mappings_of(dump_reply: bytes) -> list[Mapping]:
    """The mappings of a captured DUMP reply."""
    return parse_dump(parse_reply(dump_reply).results)


def portmapper(mappings: list[Mapping]) -> Responder:
    """Answers GETPORT as rpcbind 1.2.6 does (the exact version, else
    any version of the program, else 0) and DUMP with the list."""

    def respond(call: Heard) -> bytes | None:
        if (call.prog, call.vers) != (100000, 2):
            return PROG_UNAVAIL
        if call.proc == 4:
            return dump_result(mappings)
        if call.proc != 3:
            return PROC_UNAVAIL
        args = Unpacker(call.args)
        prog, vers, prot = args.uint(), args.uint(), args.uint()
        same = [m for m in mappings if (m.prog, m.prot) == (prog, prot)]
        exact = [m for m in same if m.vers == vers]
        found = exact or same
        return port_result(found[0].port if found else 0)

    return respond


def silent(_call: Heard) -> bytes | None:
    """Answers nothing at all."""
    return None


def table(answers: Table[tuple[int, int, int], bytes | None]) -> Responder:
    """Answers from a table keyed by (prog, vers, proc); PROG_UNAVAIL
    for anything else."""

    def respond(call: Heard) -> bytes | None:
        return answers.get((call.prog, call.vers, call.proc), PROG_UNAVAIL)

    return respond


GANESHA = mappings_of(record(DUMP_TCP_REPLY))
GANESHA_NFS = {
    (100003, 3, 0): record(NFS3_NULL_TCP_REPLY),
    (100003, 4, 0): record(NFS4_NULL_TCP_REPLY),
}
GANESHA_MOUNTD = {
    (100005, 3, 0): record(MOUNT3_NULL_TCP_REPLY),
    (100005, 3, 5): record(EXPORT_GROUPS_TCP_REPLY),
}


def rpc_tcp_handler(
    respond: Responder, heard: list[Heard], close_after: bool = False
) -> Callable[[Reader, Writer], Awaitable[None]]:
    async def handler(reader: Reader, writer: Writer) -> None:
        records = RecordReader()
        try:
            while chunk := await reader.read(4096):
                records.feed(chunk)
                while (message := records.next_record()) is not None:
                    call = parse_call(message)
                    heard.append(call)
                    answer = respond(call)
                    if answer is not None:
                        writer.write(frame_record(with_xid(answer, call.xid)))
                        await writer.drain()
                    if close_after:
                        writer.close()
                        return
        except ConnectionError:
            pass
        writer.close()

    return handler


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, respond: Responder, heard: list[Heard]) -> None:
        self.respond = respond
        self.heard = heard
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not a DatagramTransport subclass in Python 3.11, but one in use.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        call = parse_call(data)
        self.heard.append(call)
        answer = self.respond(call)
        if answer is not None and self.transport is not None:
            self.transport.sendto(with_xid(answer, call.xid), addr)


def request(port: int, transport: Transport, seconds: float) -> ProbeRequest:
    return ProbeRequest(
        host="127.0.0.1",
        port=port,
        transport=transport,
        deadline=Deadline.after(seconds),
        settings=ProbeSettings(),
        address="127.0.0.1",
    )


def run(
    probe: ProbeFn,
    respond: Responder,
    transport: Transport = Transport.TCP,
    seconds: float = 2.0,
    close_after: bool = False,
) -> tuple[Outcome, list[Heard]]:
    heard: list[Heard] = []

    async def main() -> Outcome:
        if transport is Transport.TCP:
            handler = rpc_tcp_handler(respond, heard, close_after)
            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            try:
                return await probe(request(port, transport, seconds))
            finally:
                server.close()
        loop = asyncio.get_running_loop()
        endpoint, _ = await loop.create_datagram_endpoint(
            lambda: _UdpServer(respond, heard), local_addr=("127.0.0.1", 0)
        )
        port = endpoint.get_extra_info("sockname")[1]
        try:
            return await probe(request(port, transport, seconds))
        finally:
            endpoint.close()

    return asyncio.run(main()), heard


def run_raw(
    probe: ProbeFn,
    handler: Callable[[Reader, Writer], Awaitable[None]],
    seconds: float = 2.0,
) -> Outcome:
    async def main() -> Outcome:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await probe(request(port, Transport.TCP, seconds))
        finally:
            server.close()

    return asyncio.run(main())


def run_raw_udp(
    probe: ProbeFn,
    answer: Callable[[bytes], list[bytes]],
    seconds: float = 1.0,
) -> Outcome:
    """A UDP server that sends ``answer(datagram)`` back."""

    class Server(asyncio.DatagramProtocol):
        transport: asyncio.DatagramTransport

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.DatagramTransport, transport)

        def datagram_received(
            self,
            data: bytes,
            addr: tuple[str, int],
        ) -> None:
            for datagram in answer(data):
                self.transport.sendto(datagram, addr)

    async def main() -> Outcome:
        loop = asyncio.get_running_loop()
        endpoint, _ = await loop.create_datagram_endpoint(
            Server, local_addr=("127.0.0.1", 0)
        )
        port = endpoint.get_extra_info("sockname")[1]
        try:
            return await probe(request(port, Transport.UDP, seconds))
        finally:
            endpoint.close()

    return asyncio.run(main())


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


# The portmapper probe.


def test_portmap_replays_rpcbind_over_tcp() -> None:
    replies = {
        100003: record(GETPORT_NFS_TCP_REPLY),
        100005: record(GETPORT_MOUNTD_TCP_REPLY),
    }

    def respond(call: Heard) -> bytes | None:
        if call.proc == 4:
            return record(DUMP_TCP_REPLY)
        prog = int.from_bytes(call.args[:4], "big")
        return replies[prog]

    outcome, heard = run(rpc.probe_portmap, respond)
    assert (outcome.status, outcome.reason) == (Status.PASS, Reason.OK)
    assert outcome.address == "127.0.0.1"
    assert "2049" in outcome.detail
    assert "20048" in outcome.detail
    ev = outcome.evidence
    assert (ev["nfs_port"], ev["mountd_port"]) == (2049, 20048)
    assert ev["transport"] == "tcp"
    assert ev["auth"] == "AUTH_NONE"
    programs = ev["programs"]
    assert isinstance(programs, list)
    assert len(programs) == 14
    assert programs[7] == {
        "prog": 100003,
        "name": "nfs",
        "vers": 3,
        "proto": "tcp",
        "port": 2049,
    }
    # GETPORT NFS v3, GETPORT mountd v3 (both for TCP), then DUMP, each
    # with its own xid, all on one connection.
    assert [(c.proc, c.args[:12]) for c in heard] == [
        (3, bytes.fromhex("000186a3 00000003 00000006")),
        (3, bytes.fromhex("000186a5 00000003 00000006")),
        (4, b""),
    ]
    assert len({c.xid for c in heard}) == 3
    assert all(c.flavor == AuthFlavor.AUTH_NONE for c in heard)


def test_portmap_over_udp_asks_for_udp_ports() -> None:
    udp = mappings_of(DUMP_UDP_REPLY)
    outcome, heard = run(rpc.probe_portmap, portmapper(udp), Transport.UDP)
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.evidence["transport"] == "udp"
    assert [c.args[8:12] for c in heard[:2]] == [
        IpProto.IPPROTO_UDP.to_bytes(4, "big")
    ] * 2


def test_portmap_mountd_on_another_port_fails_with_both_ports() -> None:
    moved = {
        100005: record(MOVED_GETPORT_MOUNTD_REPLY),
        100003: record(GETPORT_NFS_TCP_REPLY),
    }

    def respond(call: Heard) -> bytes | None:
        if call.proc == 4:
            return record(MOVED_DUMP_REPLY)
        return moved[int.from_bytes(call.args[:4], "big")]

    outcome, _ = run(rpc.probe_portmap, respond)
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.PROTOCOL_ERROR,
    )
    assert outcome.evidence["mountd_port"] == 41371
    assert "mountd v3 at port 41371 instead of 20048" in outcome.detail
    assert "TCP 41371" in outcome.remedy
    assert "20048" in outcome.remedy


def test_portmap_nfs_and_mountd_not_registered() -> None:
    # nfs-ganesha with Protocols = 4: NFS v4 only, no mountd.
    v4only = [m for m in GANESHA if m.prog == 100000 or m.vers == 4]
    outcome, _ = run(rpc.probe_portmap, portmapper(v4only))
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.PROTOCOL_ERROR,
    )
    # rpcbind gives the port of NFS v4 for v3; the DUMP list tells.
    assert outcome.evidence["nfs_port"] == 2049
    assert outcome.evidence["mountd_port"] == 0
    assert "NFS v3 (only v4 is registered)" in outcome.detail
    assert "mountd v3" in outcome.detail
    assert outcome.remedy


def test_portmap_registered_over_the_other_transport_only() -> None:
    tcp_only = [m for m in GANESHA if m.prot == IpProto.IPPROTO_TCP]
    outcome, _ = run(rpc.probe_portmap, portmapper(tcp_only), Transport.UDP)
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "NFS v3 (registered over TCP only)" in outcome.detail
    assert "mountd v3 (registered over TCP only)" in outcome.detail


def test_portmap_without_dump_still_judges_by_getport() -> None:
    emulate = portmapper(GANESHA)

    def respond(call: Heard) -> bytes | None:
        return PROC_UNAVAIL if call.proc == 4 else emulate(call)

    outcome, _ = run(rpc.probe_portmap, respond)
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.evidence["programs"] is None
    assert outcome.evidence["dump_error"] == "DUMP answered PROC_UNAVAIL"


def test_portmap_a_silent_dump_is_evidence_not_the_verdict() -> None:
    emulate = portmapper(GANESHA)

    def respond(call: Heard) -> bytes | None:
        return None if call.proc == 4 else emulate(call)

    outcome, _ = run(rpc.probe_portmap, respond, seconds=0.5)
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.evidence["programs"] is None
    assert "no RPC reply" in str(outcome.evidence["dump_error"])


def test_portmap_version_2_missing_is_a_protocol_error() -> None:
    outcome, _ = run(rpc.probe_portmap, lambda _call: mismatch(3, 4))
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.PROTOCOL_ERROR,
    )
    assert outcome.evidence["rpc_status"] == "PROG_MISMATCH"
    assert outcome.evidence["supported_range"] == {"low": 3, "high": 4}
    assert "v3 to v4" in outcome.detail


def test_portmap_auth_sys_when_auth_none_is_too_weak() -> None:
    emulate = portmapper(GANESHA)

    def respond(call: Heard) -> bytes | None:
        if call.flavor == AuthFlavor.AUTH_NONE:
            return AUTH_TOOWEAK
        return emulate(call)

    outcome, heard = run(rpc.probe_portmap, respond)
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.evidence["auth"] == "AUTH_SYS"
    assert [c.flavor for c in heard] == [0, 1, 0, 1, 0, 1]
    # The retry is a new call with a new xid.
    assert heard[0].xid != heard[1].xid


def test_portmap_auth_error_even_with_auth_sys() -> None:
    outcome, heard = run(rpc.probe_portmap, lambda _call: AUTH_TOOWEAK)
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "even with AUTH_SYS" in outcome.detail
    assert outcome.evidence["rpc_status"] == "AUTH_ERROR/AUTH_TOOWEAK"
    assert len(heard) == 2


def test_portmap_refused_port_is_nets_outcome() -> None:
    async def main() -> Outcome:
        port = closed_port()
        return await rpc.probe_portmap(request(port, Transport.TCP, 1.0))

    outcome = asyncio.run(main())
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.REFUSED)
    assert outcome.evidence == {"errno": "ECONNREFUSED"}
    assert outcome.remedy == ""


def test_portmap_closed_udp_port_is_refused() -> None:
    async def main() -> Outcome:
        port = closed_port()
        return await rpc.probe_portmap(request(port, Transport.UDP, 1.0))

    outcome = asyncio.run(main())
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.REFUSED)


# The NFS probe.


def test_nfs_v3_and_v4_over_tcp() -> None:
    outcome, heard = run(rpc.probe_nfs, table(GANESHA_NFS))
    assert (outcome.status, outcome.reason) == (Status.PASS, Reason.OK)
    assert outcome.detail.startswith("NFS v3 and v4 answer on 127.0.0.1 TCP")
    assert outcome.evidence["versions"] == [3, 4]
    assert outcome.evidence["replies"] == {"3": "SUCCESS", "4": "SUCCESS"}
    assert outcome.evidence["supported_range"] is None
    assert [(c.prog, c.vers, c.proc) for c in heard] == [
        (100003, 3, 0),
        (100003, 4, 0),
    ]


def test_nfs_v4_only_passes_and_says_so() -> None:
    answers = {
        (100003, 3, 0): record(V4ONLY_NFS3_NULL_TCP_REPLY),
        (100003, 4, 0): record(NFS4_NULL_TCP_REPLY),
    }
    outcome, _ = run(rpc.probe_nfs, table(answers))
    assert outcome.status is Status.PASS
    assert "NFS v4 answers" in outcome.detail
    assert "v3 is not offered" in outcome.detail
    assert outcome.evidence["versions"] == [4]
    assert outcome.evidence["supported_range"] == {"low": 4, "high": 4}


def test_nfs_v3_only_passes_and_says_so() -> None:
    answers = {
        (100003, 3, 0): record(NFS3_NULL_TCP_REPLY),
        (100003, 4, 0): mismatch(2, 3),
    }
    outcome, _ = run(rpc.probe_nfs, table(answers))
    assert outcome.status is Status.PASS
    assert "NFS v3 answers" in outcome.detail
    assert "v4 is not offered" in outcome.detail
    assert "(PROG_MISMATCH: the server supports v2 to v3)" in outcome.detail


def test_nfs_over_udp_tries_v3_only() -> None:
    answers = {(100003, 3, 0): NFS3_NULL_UDP_REPLY}
    outcome, heard = run(rpc.probe_nfs, table(answers), Transport.UDP)
    assert outcome.status is Status.PASS, outcome.detail
    assert "(v4 is not tried over UDP)" in outcome.detail
    assert [c.vers for c in heard] == [3]
    assert outcome.evidence["versions"] == [3]


def test_nfs_over_udp_without_v3_fails() -> None:
    answers = {(100003, 3, 0): V4ONLY_NFS3_NULL_UDP_REPLY}
    outcome, _ = run(rpc.probe_nfs, table(answers), Transport.UDP)
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.PROTOCOL_ERROR,
    )
    assert "answers but does not serve v3: v3 is not offered" in outcome.detail
    assert "Enable NFS v3 over UDP" in outcome.remedy
    assert outcome.evidence["supported_range"] == {"low": 4, "high": 4}


def test_nfs_another_rpc_program_on_the_port() -> None:
    unknown = record(UNKNOWN_PROG_TCP_REPLY)
    outcome, _ = run(rpc.probe_nfs, lambda _call: unknown)
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.PROTOCOL_ERROR,
    )
    assert "does not serve nfs (PROG_UNAVAIL)" in outcome.detail
    assert outcome.evidence["rpc_status"] == "PROG_UNAVAIL"


def test_nfs_system_errors_fail() -> None:
    outcome, _ = run(rpc.probe_nfs, lambda _call: SYSTEM_ERR)
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "SYSTEM_ERR" in outcome.detail


def test_nfs_v4_silent_still_passes_with_v3() -> None:
    answers: dict[tuple[int, int, int], bytes | None] = {
        (100003, 3, 0): record(NFS3_NULL_TCP_REPLY),
        (100003, 4, 0): None,
    }
    outcome, _ = run(rpc.probe_nfs, table(answers), seconds=0.5)
    assert outcome.status is Status.PASS
    assert "v4 got no reply" in outcome.detail
    assert outcome.evidence["replies"] == {"3": "SUCCESS", "4": "no reply"}


def test_nfs_server_that_closes_after_each_reply() -> None:
    outcome, heard = run(rpc.probe_nfs, table(GANESHA_NFS), close_after=True)
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.evidence["versions"] == [3, 4]
    assert len(heard) == 2


# The mountd probe.


def test_mountd_lists_exports_with_groups() -> None:
    outcome, heard = run(rpc.probe_mountd, table(GANESHA_MOUNTD))
    assert (outcome.status, outcome.reason) == (Status.PASS, Reason.OK)
    assert outcome.evidence["exports"] == [
        {
            "dir": "/tmp/rpccap/export",
            "groups": ["127.0.0.1/32", "10.1.0.0/16"],
        },
        {"dir": "/tmp/rpccap/export2", "groups": []},
    ]
    assert "exports /tmp/rpccap/export, /tmp/rpccap/export2" in outcome.detail
    assert [(c.prog, c.vers, c.proc) for c in heard] == [
        (100005, 3, 0),
        (100005, 3, 5),
    ]


def test_mountd_over_udp() -> None:
    answers = {
        (100005, 3, 0): record(MOUNT3_NULL_TCP_REPLY),
        (100005, 3, 5): EXPORT_UDP_REPLY,
    }
    outcome, _ = run(rpc.probe_mountd, table(answers), Transport.UDP)
    assert outcome.status is Status.PASS, outcome.detail
    exports = [{"dir": "/tmp/rpccap/export", "groups": []}]
    assert outcome.evidence["exports"] == exports


def test_mountd_empty_export_list_passes_with_a_note() -> None:
    answers = {(100005, 3, 0): success(), (100005, 3, 5): exports_result([])}
    outcome, _ = run(rpc.probe_mountd, table(answers))
    assert outcome.status is Status.PASS
    assert "exports nothing" in outcome.detail
    assert outcome.evidence["exports"] == []


def test_mountd_many_exports_are_shortened_in_the_detail() -> None:
    many: list[tuple[str, list[str]]] = [(f"/share{n}", []) for n in range(8)]
    answers = {(100005, 3, 0): success(), (100005, 3, 5): exports_result(many)}
    outcome, _ = run(rpc.probe_mountd, table(answers))
    assert "/share4 and 3 more" in outcome.detail
    exports = outcome.evidence["exports"]
    assert isinstance(exports, list)
    assert len(exports) == 8


def test_mountd_refused_export_list_still_passes() -> None:
    answers = {(100005, 3, 0): success(), (100005, 3, 5): AUTH_TOOWEAK}
    outcome, heard = run(rpc.probe_mountd, table(answers))
    assert outcome.status is Status.PASS
    refused = "refused the export list (AUTH_ERROR/AUTH_TOOWEAK)"
    assert refused in outcome.detail
    assert outcome.evidence["exports"] is None
    # AUTH_NONE, then once more with AUTH_SYS.
    assert [c.flavor for c in heard[1:]] == [0, 1]


def test_mountd_unreadable_export_list_warns() -> None:
    answers = {
        (100005, 3, 0): success(),
        (100005, 3, 5): success(bytes.fromhex("00000001 00000500")),
    }
    outcome, _ = run(rpc.probe_mountd, table(answers))
    assert (outcome.status, outcome.reason) == (
        Status.WARN,
        Reason.PROTOCOL_ERROR,
    )
    assert "cannot be read" in outcome.detail


def test_mountd_without_version_3_fails() -> None:
    outcome, _ = run(rpc.probe_mountd, table({(100005, 3, 0): mismatch(1, 1)}))
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.PROTOCOL_ERROR,
    )
    assert "does not offer mountd v3; it supports v1 only" in outcome.detail
    assert outcome.evidence["supported_range"] == {"low": 1, "high": 1}


# Hostile and broken peers over TCP.


def sends(
    *chunks: bytes, first: bool = False, hold: float = 0.0
) -> Callable[[Reader, Writer], Awaitable[None]]:
    """A server that writes ``chunks`` right after connect (``first``)
    or after the first bytes of the call, then holds the connection."""

    async def handler(reader: Reader, writer: Writer) -> None:
        if not first:
            await reader.read(1)
        for chunk in chunks:
            writer.write(chunk)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.sleep(0.02)
        await asyncio.sleep(hold)
        writer.close()

    return handler


ALL_PROBES = [rpc.probe_portmap, rpc.probe_nfs, rpc.probe_mountd]


@pytest.mark.parametrize("probe", ALL_PROBES)
def test_an_ssh_server_is_the_wrong_protocol(probe: ProbeFn) -> None:
    # An SSH server sends its banner as soon as the connection opens.
    outcome = run_raw(probe, sends(SSH_BANNER, first=True, hold=2))
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.WRONG_PROTOCOL,
    )
    assert outcome.evidence["first_bytes"] == (
        "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\\r\\n"
    )
    assert "not ONC RPC" in outcome.detail
    assert outcome.remedy


def test_a_web_server_is_the_wrong_protocol() -> None:
    answer = b"HTTP/1.1 400 Bad Request\r\n\r\n"
    outcome = run_raw(rpc.probe_nfs, sends(answer, hold=2))
    assert outcome.reason is Reason.WRONG_PROTOCOL
    shown = "HTTP/1.1 400 Bad Request\\r\\n\\r\\n"
    assert outcome.evidence["first_bytes"] == shown


def test_a_close_without_a_reply_is_the_wrong_protocol() -> None:
    outcome = run_raw(rpc.probe_portmap, sends())
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.WRONG_PROTOCOL,
    )
    assert "closed the connection without an RPC reply" in outcome.detail
    assert outcome.evidence["first_bytes"] == ""


def test_a_close_at_once_is_the_wrong_protocol() -> None:
    outcome = run_raw(rpc.probe_mountd, sends(first=True))
    assert outcome.reason is Reason.WRONG_PROTOCOL


def test_silence_after_connect_is_a_timeout() -> None:
    outcome = run_raw(rpc.probe_nfs, sends(hold=2), seconds=0.5)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.TIMEOUT)
    assert "opened but no RPC reply came" in outcome.detail
    # Not the remedy of a drop: the handshake got through.
    assert "opens but the NFS server never answers" in outcome.remedy


def test_an_echo_is_the_wrong_protocol() -> None:
    async def echo(reader: Reader, writer: Writer) -> None:
        writer.write(await reader.read(4096))
        await writer.drain()
        await asyncio.sleep(2)
        writer.close()

    outcome = run_raw(rpc.probe_nfs, echo)
    assert outcome.reason is Reason.WRONG_PROTOCOL


def test_a_half_reply_then_silence_is_a_timeout() -> None:
    async def half(reader: Reader, writer: Writer) -> None:
        call = await reader.read(4096)
        xid = int.from_bytes(call[4:8], "big")
        reply = frame_record(with_xid(success(), xid))
        writer.write(reply[:12])
        await writer.drain()
        await asyncio.sleep(2)
        writer.close()

    outcome = run_raw(rpc.probe_nfs, half, seconds=0.5)
    assert outcome.reason is Reason.TIMEOUT
    assert "began a reply but did not finish it" in outcome.detail


def test_a_reply_cut_by_a_close_is_a_protocol_error() -> None:
    async def cut(reader: Reader, writer: Writer) -> None:
        call = await reader.read(4096)
        xid = int.from_bytes(call[4:8], "big")
        reply = frame_record(with_xid(success(), xid))
        writer.write(reply[:12])
        await writer.drain()
        writer.close()

    outcome = run_raw(rpc.probe_nfs, cut)
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "closed inside a record" in outcome.detail


def test_a_malformed_reply_to_our_xid_is_a_protocol_error() -> None:
    outcome, _ = run(rpc.probe_nfs, lambda _call: accepted(9))
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.PROTOCOL_ERROR,
    )
    assert "unknown accept_stat 9" in outcome.detail
    assert "first_bytes" in outcome.evidence


def test_a_stale_reply_is_skipped() -> None:
    async def stale_first(reader: Reader, writer: Writer) -> None:
        records = RecordReader()
        while chunk := await reader.read(4096):
            records.feed(chunk)
            while (message := records.next_record()) is not None:
                xid = parse_call(message).xid
                stale = frame_record(with_xid(success(), xid ^ 1))
                good = frame_record(with_xid(success(), xid))
                writer.write(stale + good)
                await writer.drain()
        writer.close()

    outcome = run_raw(rpc.probe_nfs, stale_first)
    assert outcome.status is Status.PASS, outcome.detail


def test_a_flood_of_stale_replies_is_a_protocol_error() -> None:
    async def flood(reader: Reader, writer: Writer) -> None:
        call = await reader.read(4096)
        xid = int.from_bytes(call[4:8], "big")
        stale = frame_record(with_xid(success(), xid ^ 1))
        writer.write(stale * (rpc.MAX_STRAY_REPLIES + 2))
        await writer.drain()
        await asyncio.sleep(2)
        writer.close()

    outcome = run_raw(rpc.probe_nfs, flood)
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "answering no call of ours" in outcome.detail


def test_a_fragmented_reply_is_reassembled() -> None:
    async def fragments(reader: Reader, writer: Writer) -> None:
        records = RecordReader()
        while chunk := await reader.read(4096):
            records.feed(chunk)
            while (message := records.next_record()) is not None:
                call = parse_call(message)
                reply = with_xid(record(EXPORT_GROUPS_TCP_REPLY), call.xid)
                if call.proc == 0:
                    reply = with_xid(success(), call.xid)
                for at in range(0, len(reply), 8):
                    piece = reply[at : at + 8]
                    last = 0x8000_0000 if at + 8 >= len(reply) else 0
                    writer.write((last | len(piece)).to_bytes(4, "big"))
                    await writer.drain()
                    writer.write(piece)
                    await writer.drain()
        writer.close()

    outcome = run_raw(rpc.probe_mountd, fragments)
    assert outcome.status is Status.PASS, outcome.detail
    exports = outcome.evidence["exports"]
    assert isinstance(exports, list)
    assert len(exports) == 2


def test_an_oversized_record_is_refused_at_its_mark() -> None:
    huge = (0x8000_0000 | (1 << 30)).to_bytes(4, "big") + b"\0" * 64
    outcome = run_raw(rpc.probe_nfs, sends(huge, hold=2))
    assert outcome.status is Status.FAIL
    assert outcome.reason in (Reason.WRONG_PROTOCOL, Reason.PROTOCOL_ERROR)


# Hostile and broken peers over UDP.


def test_udp_garbage_is_the_wrong_protocol() -> None:
    outcome = run_raw_udp(rpc.probe_nfs, lambda _data: [b"hello there\n"])
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.WRONG_PROTOCOL,
    )
    assert outcome.evidence["first_bytes"] == "hello there\\n"
    assert isinstance(outcome.evidence["rejected"], int)


def test_udp_echo_is_the_wrong_protocol() -> None:
    outcome = run_raw_udp(rpc.probe_portmap, lambda data: [data])
    assert outcome.reason is Reason.WRONG_PROTOCOL


def test_udp_replies_to_other_xids_are_a_protocol_error() -> None:
    def other(data: bytes) -> list[bytes]:
        xid = int.from_bytes(data[:4], "big")
        return [with_xid(success(), xid ^ 0xFFFF)]

    outcome = run_raw_udp(rpc.probe_nfs, other)
    assert outcome.reason is Reason.PROTOCOL_ERROR


def test_udp_a_stray_then_the_reply_passes() -> None:
    def stray_first(data: bytes) -> list[bytes]:
        xid = int.from_bytes(data[:4], "big")
        return [
            b"noise",
            with_xid(success(), xid ^ 1),
            with_xid(success(), xid),
        ]

    outcome = run_raw_udp(rpc.probe_nfs, stray_first)
    assert outcome.status is Status.PASS, outcome.detail


def test_udp_a_malformed_reply_to_our_xid_is_a_protocol_error() -> None:
    def broken(data: bytes) -> list[bytes]:
        xid = int.from_bytes(data[:4], "big")
        return [with_xid(accepted(7), xid)]

    outcome = run_raw_udp(rpc.probe_mountd, broken)
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "unknown accept_stat 7" in outcome.detail


def test_udp_silence_is_a_timeout_after_retransmits() -> None:
    outcome, heard = run(rpc.probe_nfs, silent, Transport.UDP, seconds=0.9)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.TIMEOUT)
    sent = outcome.evidence["sent"]
    assert isinstance(sent, int)
    assert sent >= 2
    # A retransmission is the same call: the same xid.
    assert len(heard) == sent
    assert len({call.xid for call in heard}) == 1
