"""Hostile peers on loopback: servers that stall, flood, lie or cut off.

Whatever answers a probe, it must end with a classified outcome before
its deadline, hold a bounded amount of memory, and take no answer that
does not match its request. These servers give the worst answers a test
can think of. Each TCP one is an async context manager that listens on
an ephemeral port of 127.0.0.1 and yields that port:

- :func:`tarpit` accepts and never answers;
- :func:`random_bytes` sends a few kilobytes of noise and holds on;
- :func:`endless` sends a plausible start, then bytes that never end:
  one line with no end (:data:`ENDLESS_LINE`), or lines without end
  (:data:`ENDLESS_LINES`);
- :func:`endless_tls` sends a TLS record header and then bytes without
  end, or valid-looking handshake records without end;
- :func:`resetting` resets the connection (``SO_LINGER`` 0) after
  reading the request, or after a partial answer;
- :func:`trickle` sends one byte at a time;
- :func:`huge_iscsi_segment` answers a login with a Login Response
  whose data segment claims 16 MiB;
- :func:`answering` sends fixed bytes and closes (a redirect, say), and
  records what it was asked;
- :func:`dns_tcp` and :func:`rpc_tcp` answer framed DNS and ONC RPC
  requests, spoiled as asked.

For UDP the servers are :func:`tests.fakes.serving_udp` with a handler
from :data:`UDP_NOISE` (silence, noise, an echo, a flood, a huge
datagram) or a correct answer to a DNS, NTP, ONC RPC or NetBIOS request
(:func:`dns_reply`, :func:`ntp_reply`, :func:`rpc_reply`,
:func:`nbns_reply`), spoiled one field at a time: a wrong id, xid or
origin timestamp, the TC bit, a huge size; ``serving_udp``'s
``reply_from`` sends it from a source the probe did not ask.

Every server is bounded, as a load generator must be: a connection sends
at most :data:`MAX_SENT` bytes, reads at most :data:`MAX_READS` times and
lives at most :data:`LIFETIME` seconds, and all of it stays on loopback.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import dns.flags
import dns.message
import dns.rrset

from probes import netbios, ntp
from probes.oncrpc import MAX_AUTH_BODY, Unpacker
from tests.fakes import UdpHandler

MAX_SENT = 64 * 1024 * 1024
"""Bytes one connection sends at most, endless or not."""
MAX_READS = 4096
"""Reads one connection makes at most."""
LIFETIME = 20.0
"""Seconds one connection lives at most."""
REQUEST_WAIT = 0.5
"""Seconds a server waits for the client's request before going on."""
_CHUNK = 16 * 1024

ENDLESS_LINE = b"A" * _CHUNK
"""A line that never ends: no line feed, ever."""
ENDLESS_LINES = (b"x" * 62 + b"\r\n") * 256
"""Lines that never end: short ones, without a stop."""

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Handler = Callable[[Reader, Writer], Awaitable[None]]
Server = AbstractAsyncContextManager[int]


@asynccontextmanager
async def serving_tcp(handler: Handler, host: str = "127.0.0.1") -> AsyncIterator[int]:
    """Run ``handler`` for each connection to a fresh port on ``host``.

    A handler is cut at :data:`LIFETIME`, its connection dropped when it
    ends, and every handler still running is stopped on the way out.
    """
    running: set[asyncio.Task[None]] = set()

    async def guarded(reader: Reader, writer: Writer) -> None:
        task = asyncio.current_task()
        if task is not None:
            running.add(task)
        try:
            async with asyncio.timeout(LIFETIME):
                await handler(reader, writer)
        except (OSError, TimeoutError):
            # A peer that hangs up is the usual end of a hostile talk.
            pass
        except asyncio.CancelledError:
            # Stopped on the way out: end quietly, since asyncio's stream
            # server reads each handler's exception when it is done.
            pass
        finally:
            writer.transport.abort()
            if task is not None:
                running.discard(task)

    server = await asyncio.start_server(guarded, host, 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        left = list(running)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)


async def read_request(reader: Reader, wait: float = REQUEST_WAIT) -> bytes:
    """The first bytes the client sends, or nothing after ``wait``."""
    try:
        async with asyncio.timeout(wait):
            return await reader.read(_CHUNK)
    except TimeoutError:
        return b""


async def pump(writer: Writer, chunks: Iterable[bytes], interval: float = 0.0) -> None:
    """Send ``chunks`` in turn, waiting for the peer to take each, until
    they end, :data:`MAX_SENT` bytes went out, or the peer goes away."""
    sent = 0
    for chunk in chunks:
        if sent >= MAX_SENT:
            return
        writer.write(chunk)
        await writer.drain()
        sent += len(chunk)
        if interval:
            await asyncio.sleep(interval)


def forever(lead: bytes, unit: bytes) -> Iterable[bytes]:
    """``lead``, then ``unit`` again and again, up to :data:`MAX_SENT`."""
    return itertools.chain((lead,), itertools.repeat(unit, MAX_SENT // len(unit)))


async def drain_until_closed(reader: Reader) -> None:
    """Read and drop what the client sends until it hangs up."""
    for _ in range(MAX_READS):
        if not await reader.read(_CHUNK):
            return


def reset(writer: Writer) -> None:
    """Drop the connection with a TCP reset: linger on, with a zero time."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# TCP servers.


def tarpit() -> Server:
    """Accept, read everything, never answer."""

    async def hold(reader: Reader, _writer: Writer) -> None:
        await drain_until_closed(reader)

    return serving_tcp(hold)


def random_bytes(seed: int = 0, size: int = 4096) -> Server:
    """Send ``size`` bytes of seeded noise at once, then hold on."""
    noise = random.Random(seed).randbytes(size)

    async def talk(reader: Reader, writer: Writer) -> None:
        await pump(writer, (noise,))
        await drain_until_closed(reader)

    return serving_tcp(talk)


def endless(lead: bytes = b"", unit: bytes = ENDLESS_LINE) -> Server:
    """Send ``lead`` and then ``unit`` without end, as fast as the peer
    takes it, without waiting for a request."""

    async def talk(_reader: Reader, writer: Writer) -> None:
        await pump(writer, forever(lead, unit))

    return serving_tcp(talk)


# RFC 8446 5.1: a handshake record (22) of TLS 1.2's legacy version and
# the largest plaintext length, 16384.
_TLS_RECORD = b"\x16\x03\x03\x40\x00"
# RFC 8446 4: a ServerHello (2) that claims 2**24 - 1 bytes.
_HUGE_SERVER_HELLO = b"\x02\xff\xff\xff"


def endless_tls(lead: bytes = b"", records: bool = False) -> Server:
    """A handshake record that opens a ServerHello of 16 MiB, and then
    bytes without end (``records`` false) or more full handshake records
    without end, each carrying more of that ServerHello."""
    body = b"\x41" * (0x4000 - len(_HUGE_SERVER_HELLO))
    first = lead + _TLS_RECORD + _HUGE_SERVER_HELLO + body
    unit = _TLS_RECORD + b"\x41" * 0x4000 if records else ENDLESS_LINE
    return endless(first, unit)


def resetting(partial: bytes = b"") -> Server:
    """Read the request, send ``partial`` (if any), then reset."""

    async def talk(reader: Reader, writer: Writer) -> None:
        await read_request(reader)
        if partial:
            await pump(writer, (partial,))
            # Let the partial answer reach the peer before the reset,
            # which makes its kernel drop whatever is still queued.
            await asyncio.sleep(0.05)
        reset(writer)

    return serving_tcp(talk)


def trickle(lead: bytes = b"", interval: float = 1.0) -> Server:
    """Send ``lead`` and then filler, one byte every ``interval`` s."""
    data = lead + ENDLESS_LINE
    count = min(len(data), int(LIFETIME / interval) + 1)

    async def talk(_reader: Reader, writer: Writer) -> None:
        await pump(writer, (data[i : i + 1] for i in range(count)), interval)

    return serving_tcp(talk)


def huge_iscsi_segment() -> Server:
    """Answer a Login Request with a Login Response (RFC 7143 11.13) for
    its task whose DataSegmentLength is 2**24 - 1, then bytes without
    end."""

    async def talk(reader: Reader, writer: Writer) -> None:
        request = await read_request(reader)
        bhs = bytearray(48)
        bhs[0] = 0x23  # Login Response
        bhs[1] = 0x81  # T, and NSG 1
        bhs[5:8] = b"\xff\xff\xff"
        bhs[16:20] = request[16:20].ljust(4, b"\x00")
        await pump(writer, forever(bytes(bhs), ENDLESS_LINE))

    return serving_tcp(talk)


def answering(
    answer: bytes, seen: list[bytes] | None = None, host: str = "127.0.0.1"
) -> Server:
    """Read the request (kept in ``seen``), send ``answer``, close."""

    async def talk(reader: Reader, writer: Writer) -> None:
        request = await read_request(reader)
        if seen is not None:
            seen.append(request)
        await pump(writer, (answer,))

    return serving_tcp(talk, host)


# UDP noise: handlers for tests.fakes.serving_udp.

FLOOD = 200
"""Datagrams sent back for each one received by :func:`flood`."""
_NOISE = random.Random(1).randbytes(65000)


def silent(_data: bytes) -> list[bytes]:
    return []


def noise(data: bytes) -> list[bytes]:
    """As many bytes of noise as were asked, at least 48."""
    return [_NOISE[: max(len(data), 48)]]


def echo(data: bytes) -> list[bytes]:
    """The request itself, back to the asker."""
    return [data]


def flood(_data: bytes) -> list[bytes]:
    return [_NOISE[:100]] * FLOOD


def huge(_data: bytes) -> list[bytes]:
    """One datagram of 65000 bytes, near the IPv4 limit."""
    return [_NOISE]


UDP_NOISE: dict[str, UdpHandler] = {
    "silent": silent,
    "noise": noise,
    "echo": echo,
    "flood": flood,
    "huge": huge,
}


# Correct answers, to be spoiled one field at a time.

_FIRST_ADDRESS = ipaddress.IPv4Address("198.18.0.1")


def dns_reply(
    query: bytes,
    *,
    wrong_id: bool = False,
    truncated: bool = False,
    records: int = 1,
) -> bytes:
    """An answer to a DNS query with ``records`` A records (RFC 1035
    4.1); with ``truncated``, the TC bit and no records at all."""
    # RFC 1035 4.1.1: the id is the first two bytes of both messages.
    query_id = int.from_bytes(query[:2], "big")
    if wrong_id:
        query_id ^= 0x5A5A
    body = _dns_reply_body(bytes(2) + query[2:], truncated, records)
    return query_id.to_bytes(2, "big") + body


@functools.lru_cache(maxsize=64)
def _dns_reply_body(query: bytes, truncated: bool, records: int) -> bytes:
    """All of an answer but its id. Kept, so that a server asked again
    answers at once: building thousands of records takes a while, and
    the event loop it runs on is the probe's own."""
    asked = dns.message.from_wire(query)
    reply = dns.message.make_response(asked)
    if truncated:
        reply.flags |= dns.flags.TC
    else:
        name = asked.question[0].name
        addresses = [str(_FIRST_ADDRESS + i) for i in range(records)]
        reply.answer.append(dns.rrset.from_text_list(name, 60, "IN", "A", addresses))
    return reply.to_wire()[2:]


def dns_udp(
    *, wrong_id: bool = False, truncated: bool = False, records: int = 1
) -> UdpHandler:
    """A DNS server's handler, spoiled as :func:`dns_reply` allows."""

    def handler(data: bytes) -> list[bytes]:
        return [
            dns_reply(data, wrong_id=wrong_id, truncated=truncated, records=records)
        ]

    return handler


def dns_tcp(
    *, wrong_id: bool = False, truncated: bool = False, records: int = 1
) -> Server:
    """DNS over TCP (RFC 1035 4.2.2): each framed query gets a framed
    answer, spoiled as :func:`dns_reply` allows."""

    async def talk(reader: Reader, writer: Writer) -> None:
        for _ in range(MAX_READS):
            size = int.from_bytes(await reader.readexactly(2), "big")
            query = await reader.readexactly(size)
            wire = dns_reply(
                query, wrong_id=wrong_id, truncated=truncated, records=records
            )
            await pump(writer, (len(wire).to_bytes(2, "big") + wire,))

    return serving_tcp(_ending_quietly(talk))


def _ending_quietly(handler: Handler) -> Handler:
    """A framed-request handler that stops when the peer hangs up."""

    async def talk(reader: Reader, writer: Writer) -> None:
        try:
            await handler(reader, writer)
        except asyncio.IncompleteReadError:
            return

    return talk


def ntp_reply(request: bytes, *, wrong_origin: bool = False) -> bytes:
    """A synchronised stratum-2 server's answer (RFC 5905 7.3) that
    echoes the request's transmit timestamp as its origin, or another
    value with ``wrong_origin``."""
    now = ntp.ntp_time(time.time_ns()).to_bytes(8, "big")
    origin = int.from_bytes(request[40:48], "big")
    if wrong_origin:
        origin ^= 1
    # LI 0, version 4, mode 4 (server); stratum 2, poll 6, precision
    # -20; root delay and dispersion 0; reference id 192.0.2.1.
    header = bytes([0x24, 2, 6, 0xEC]) + bytes(8) + bytes([192, 0, 2, 1])
    return header + now + origin.to_bytes(8, "big") + now + now


def ntp_udp(*, wrong_origin: bool = False) -> UdpHandler:
    def handler(data: bytes) -> list[bytes]:
        return [ntp_reply(data, wrong_origin=wrong_origin)]

    return handler


# RFC 1833 and RFC 1813: where the portmapper says NFS and mountd are.
_PORTS = {100003: 2049, 100005: 20048}


def rpc_reply(call: bytes, *, wrong_xid: bool = False) -> bytes:
    """A SUCCESS reply (RFC 5531 9) to a call of the probes: GETPORT
    and DUMP of the portmapper (with NFS and mountd at their standard
    ports), mountd's EXPORT (an empty list), and NULL of anything."""
    unpacker = Unpacker(call)
    xid, _mtype, _rpcvers, prog, _vers, proc = (unpacker.uint() for _ in range(6))
    for _auth in range(2):
        unpacker.uint()
        unpacker.opaque(MAX_AUTH_BODY)
    args = unpacker.rest()
    results = b""
    if (prog, proc) == (100000, 3):
        wanted = int.from_bytes(args[:4], "big")
        results = _PORTS.get(wanted, 0).to_bytes(4, "big")
    elif (prog, proc) == (100000, 4):
        results = _dump_list()
    elif (prog, proc) == (100005, 5):
        results = bytes(4)
    if wrong_xid:
        xid ^= 0x5A5A5A5A
    # xid, REPLY, MSG_ACCEPTED, verifier AUTH_NONE (flavor, length),
    # SUCCESS, then the results.
    head = struct.pack(">IIIIII", xid, 1, 0, 0, 0, 0)
    return head + results


def _dump_list() -> bytes:
    out = b""
    for prot in (6, 17):
        for prog, port in _PORTS.items():
            out += struct.pack(">IIIII", 1, prog, 3, prot, port)
    return out + bytes(4)


def rpc_udp(*, wrong_xid: bool = False) -> UdpHandler:
    def handler(data: bytes) -> list[bytes]:
        return [rpc_reply(data, wrong_xid=wrong_xid)]

    return handler


def rpc_tcp(*, wrong_xid: bool = False) -> Server:
    """ONC RPC over TCP (RFC 5531 11): each one-fragment record gets a
    one-fragment reply."""

    async def talk(reader: Reader, writer: Writer) -> None:
        for _ in range(MAX_READS):
            mark = int.from_bytes(await reader.readexactly(4), "big")
            call = await reader.readexactly(mark & 0x7FFF_FFFF)
            reply = rpc_reply(call, wrong_xid=wrong_xid)
            framed = (0x8000_0000 | len(reply)).to_bytes(4, "big") + reply
            await pump(writer, (framed,))

    return serving_tcp(_ending_quietly(talk))


def nbns_reply(request: bytes, *, wrong_id: bool = False) -> bytes:
    """A NODE STATUS RESPONSE (RFC 1002 4.2.18) naming one file server."""
    trn_id = int.from_bytes(request[:2], "big")
    if wrong_id:
        trn_id ^= 0x5A5A
    # Response, opcode 0, authoritative; no question, one answer.
    header = struct.pack(">HHHHHH", trn_id, 0x8400, 0, 1, 0, 0)
    name = netbios.wire_name(b"*".ljust(netbios.NAME_SIZE, b"\x00"))
    entry = netbios.pad_name("HOSTILE", netbios.SERVER_SUFFIX) + b"\x04\x00"
    rdata = b"\x01" + entry + bytes(6) + bytes(40)
    record = struct.pack(">HHIH", netbios.RrType.NBSTAT, 1, 0, len(rdata))
    return header + name + record + rdata


def nbns_udp(*, wrong_id: bool = False) -> UdpHandler:
    def handler(data: bytes) -> list[bytes]:
        return [nbns_reply(data, wrong_id=wrong_id)]

    return handler
