"""Small in-process servers for probe tests on loopback.

Real servers are tested in the lab; these stand in for behaviour no real
server shows (a wrong id, garbage, a flood) and keep unit tests fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

# Answers to one datagram: each reply is sent back to the asker.
UdpHandler = Callable[[bytes], list[bytes]]
Peer = tuple[str | int, ...]


class UdpServer(asyncio.DatagramProtocol):
    """Answers every datagram with what its handler returns."""

    def __init__(self, handler: UdpHandler) -> None:
        self.handler = handler
        self.transport: asyncio.DatagramTransport | None = None
        self.seen: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Peer) -> None:
        self.seen.append(data)
        assert self.transport is not None
        for reply in self.handler(data):
            self.transport.sendto(reply, addr)


@asynccontextmanager
async def serving_udp(
    handler: UdpHandler,
) -> AsyncIterator[tuple[UdpServer, int]]:
    """A UdpServer on 127.0.0.1 and its port, closed on the way out."""
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: UdpServer(handler), local_addr=("127.0.0.1", 0)
    )
    try:
        yield server, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()
