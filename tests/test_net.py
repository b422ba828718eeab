"""The connection layer on loopback: what it tells apart without a lab.

Silent drops and ICMP errors from a filter need nftables in a namespace;
those cases are in the lab tests.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncio_dgram

from probes.base import Deadline, Outcome, Reason
from probes.icmp import IcmpReport
from probes.net import (
    Connection,
    Datagram,
    Silence,
    open_tcp,
    resolve,
    udp_exchange,
    unanswered,
)

T = TypeVar("T")


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    return asyncio.run(main())


def test_tcp_connects() -> None:
    async def go() -> Connection | Outcome:
        server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await open_tcp("127.0.0.1", port, Deadline.after(2))

    conn = run(go)
    assert isinstance(conn, Connection)
    assert conn.local == "127.0.0.1"
    conn.close()


def test_tcp_refused() -> None:
    port = free_port(socket.SOCK_STREAM)
    outcome = run(lambda: open_tcp("127.0.0.1", port, Deadline.after(2)))
    assert isinstance(outcome, Outcome)
    assert outcome.reason is Reason.REFUSED
    assert outcome.address == "127.0.0.1"
    assert "TCP reset" in outcome.detail


def test_udp_port_unreachable_is_read_from_the_error_queue() -> None:
    port = free_port(socket.SOCK_DGRAM)
    result = run(lambda: udp_exchange("127.0.0.1", port, b"x", Deadline.after(2)))
    assert isinstance(result, IcmpReport)
    assert result.is_port_unreachable
    assert result.offender == "127.0.0.1"
    outcome = unanswered(result, "127.0.0.1", port)
    assert outcome.reason is Reason.REFUSED
    assert "port-unreachable" in outcome.detail


async def _serve_udp(replies: list[bytes]) -> asyncio_dgram.aio.DatagramServer:
    server = await asyncio_dgram.bind(("127.0.0.1", 0))

    async def answer() -> None:
        _data, peer = await server.recv()
        for reply in replies:
            await server.send(reply, peer)

    asyncio.get_running_loop().create_task(answer())
    return server


def test_udp_answer_skips_stray_datagrams() -> None:
    async def go() -> object:
        server = await _serve_udp([b"stray", b"also stray", b"good"])
        port = server.sockname[1]
        try:
            return await udp_exchange(
                "127.0.0.1",
                port,
                b"ask",
                Deadline.after(2),
                accept=lambda data: data == b"good",
            )
        finally:
            server.close()

    result = run(go)
    assert isinstance(result, Datagram)
    assert result.data == b"good"


def test_udp_silence_until_the_deadline() -> None:
    async def go() -> object:
        server = await asyncio_dgram.bind(("127.0.0.1", 0))
        try:
            return await udp_exchange(
                "127.0.0.1", server.sockname[1], b"ask", Deadline.after(0.4)
            )
        finally:
            server.close()

    result = run(go)
    assert isinstance(result, Silence)
    assert result.sent == 3
    outcome = unanswered(result, "127.0.0.1", 9)
    assert outcome.reason is Reason.TIMEOUT


def test_udp_flood_of_strays_ends_in_silence() -> None:
    async def go() -> object:
        server = await _serve_udp([b"junk"] * 200)
        try:
            return await udp_exchange(
                "127.0.0.1",
                server.sockname[1],
                b"ask",
                Deadline.after(2),
                accept=lambda _data: False,
            )
        finally:
            server.close()

    assert isinstance(run(go), Silence)


def test_resolve_takes_addresses_as_they_are() -> None:
    found = run(lambda: resolve("192.0.2.5", (), Deadline.after(1)))
    assert found == ["192.0.2.5"]
