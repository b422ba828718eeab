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
    """Answers every datagram with what its handler returns; from its own
    socket, or from ``sender`` when one is set (a spoofed source)."""

    def __init__(
        self, handler: UdpHandler, sender: asyncio.DatagramTransport | None = None
    ) -> None:
        self.handler = handler
        self.sender = sender
        self.transport: asyncio.DatagramTransport | None = None
        self.seen: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Peer) -> None:
        self.seen.append(data)
        out = self.sender or self.transport
        assert out is not None
        for reply in self.handler(data):
            out.sendto(reply, addr)


@asynccontextmanager
async def serving_udp(
    handler: UdpHandler,
    *,
    reply_from: tuple[str, int | None] | None = None,
) -> AsyncIterator[tuple[UdpServer, int]]:
    """A UdpServer on 127.0.0.1 and its port, closed on the way out.

    With ``reply_from`` the replies leave from a second socket bound to
    that address and port (None: the server's own port), so they come
    from a source the asker did not send to.
    """
    loop = asyncio.get_running_loop()
    server = UdpServer(handler)
    transport, _protocol = await loop.create_datagram_endpoint(
        lambda: server, local_addr=("127.0.0.1", 0)
    )
    port: int = transport.get_extra_info("sockname")[1]
    try:
        if reply_from is not None:
            address, from_port = reply_from
            server.sender, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol,
                local_addr=(address, port if from_port is None else from_port),
            )
        yield server, port
    finally:
        transport.close()
        if server.sender is not None:
            server.sender.close()
