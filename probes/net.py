"""The connection layer every probe stands on.

It answers the first question about any rule: did the packets get there?
A TCP connect ends in one of four ways, and each is a different fix:

- refused: a TCP reset came back (nothing listens, or a firewall rejects
  with a reset);
- timeout: nothing came back (a firewall drops silently);
- prohibited: an ICMP administratively-prohibited error came back (a
  firewall rejects, and the report names the device that said so);
- unreachable: an ICMP host or network unreachable, or no local route.

For UDP, a datagram is answered, refused with ICMP port-unreachable, stopped
with another ICMP error, or met with silence. The ICMP details come from the
socket's error queue (see :mod:`probes.icmp`), so no raw socket is needed.

Names are resolved with the configured resolvers, as the gateway itself
would, not with this host's own resolver library. Every step takes its
time from the probe's one :class:`~probes.base.Deadline`.

Limits: IPv4 is tried before IPv6 and only the first address of a name is
probed; a host whose first address is broken and whose second works shows
as failed, which is what a gateway that does the same would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import asyncio_dgram
import dns.asyncresolver
import dns.exception
import dns.resolver

from probes.base import (
    Deadline,
    Outcome,
    ProbeRequest,
    Reason,
    Status,
    failed,
)
from probes.icmp import (
    IcmpReport,
    Origin,
    enable_error_queue,
    read_error_queue,
)

# asyncio-dgram keeps ICMP errors apart from datagrams and does not wake a
# pending receive for them, so a receive waits in slices of this length
# and looks at the error slot between them.
_UDP_POLL = 0.05
# A hostile peer may flood a UDP socket with datagrams that do not match
# the request; after this many the exchange gives up.
MAX_STRAY_DATAGRAMS = 64


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def resolve(
    host: str, resolvers: tuple[str, ...], deadline: Deadline
) -> list[str] | Outcome:
    """Resolve ``host`` to addresses, IPv4 first, or say why not."""
    if is_address(host):
        return [host]
    resolver = _resolver(resolvers)
    addresses: list[str] = []
    last: Outcome | None = None
    for rdtype in ("A", "AAAA"):
        result = await _query(resolver, host, rdtype, deadline)
        if isinstance(result, Outcome):
            last = result
            if result.evidence.get("rcode") == "NXDOMAIN":
                break
            continue
        addresses.extend(result)
        if addresses:
            break
    if addresses:
        return addresses
    assert last is not None
    return last


def _resolver(resolvers: tuple[str, ...]) -> dns.asyncresolver.Resolver:
    if not resolvers:
        return dns.asyncresolver.Resolver()
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = list(resolvers)
    return resolver


async def _query(
    resolver: dns.asyncresolver.Resolver,
    host: str,
    rdtype: str,
    deadline: Deadline,
) -> list[str] | Outcome:
    servers = ", ".join(str(n) for n in resolver.nameservers)
    try:
        answer = await resolver.resolve(
            host, rdtype, lifetime=max(deadline.remaining(), 0.01)
        )
    except dns.resolver.NXDOMAIN:
        return _dns_failed(host, "does not exist (NXDOMAIN)", servers, "NXDOMAIN")
    except dns.resolver.NoAnswer:
        return _dns_failed(host, f"has no {rdtype} record", servers, "NOERROR")
    except dns.resolver.NoNameservers:
        return _dns_failed(
            host, "got no usable answer (SERVFAIL or REFUSED)", servers, None
        )
    except dns.exception.Timeout:
        return _dns_failed(host, "got no answer in time", servers, None)
    return [str(rdata) for rdata in answer]


def _dns_failed(host: str, what: str, servers: str, rcode: str | None) -> Outcome:
    return failed(
        Reason.DNS_FAILURE,
        f"{host} {what} from resolver {servers}",
        f"Make the gateway's DNS servers ({servers}) resolve {host}.",
        resolver=servers,
        rcode=rcode,
        name=host,
    )


async def address_of(request: ProbeRequest) -> str | Outcome:
    """The address to probe: the one given, or the first one resolved."""
    if request.address is not None:
        return request.address
    found = await resolve(request.host, request.settings.resolvers, request.deadline)
    if isinstance(found, Outcome):
        return found
    return found[0]


async def connect(request: ProbeRequest) -> Connection | Outcome:
    """Resolve the request's host if need be, then connect to its port."""
    address = await address_of(request)
    if isinstance(address, Outcome):
        return address
    return await open_tcp(address, request.port, request.deadline)


@dataclass
class Connection:
    """A connected TCP socket and what it took to get it."""

    sock: socket.socket
    address: str
    local: str
    connect_ms: float

    def close(self) -> None:
        self.sock.close()

    async def streams(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Wrap the socket in asyncio streams (the socket then belongs to
        the writer, which closes it)."""
        return await asyncio.open_connection(sock=self.sock)


async def open_tcp(address: str, port: int, deadline: Deadline) -> Connection | Outcome:
    """Connect to ``address:port`` and tell how it failed if it did."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    # Probes exchange small requests and answers; Nagle's algorithm with
    # delayed acknowledgements would add tens of milliseconds to each.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    enable_error_queue(sock)
    started = loop.time()
    try:
        async with asyncio.timeout_at(deadline.when):
            await loop.sock_connect(sock, (address, port))
    except TimeoutError:
        sock.close()
        return _silent(address, port, "TCP", started, loop.time())
    except OSError as exc:
        report = read_error_queue(sock)
        sock.close()
        return connect_failure(exc, report, address, port)
    local = sock.getsockname()[0]
    elapsed = (loop.time() - started) * 1000
    return Connection(sock, address, str(local), round(elapsed, 1))


def _silent(address: str, port: int, proto: str, started: float, now: float) -> Outcome:
    waited = round(now - started, 1)
    return failed(
        Reason.TIMEOUT,
        f"no answer from {address} {proto} {port} in {waited} s: "
        "the packets are silently dropped on the way",
        waited_s=waited,
    ).at(address)


def connect_failure(
    exc: OSError, report: IcmpReport | None, address: str, port: int
) -> Outcome:
    """Classify a failed connect by its ICMP report, else by its errno."""
    if report is not None and report.origin in (Origin.ICMP, Origin.ICMP6):
        return _icmp_outcome(report, address, port, "TCP").with_evidence(
            errno=errno.errorcode.get(exc.errno or 0, str(exc.errno))
        )
    code = exc.errno
    name = errno.errorcode.get(code or 0, str(code))
    if code == errno.ECONNREFUSED:
        detail = (
            f"TCP reset from {address} port {port}: nothing listens there, "
            "or a firewall rejects with a reset"
        )
        return failed(Reason.REFUSED, detail, errno=name).at(address)
    if code in (errno.EACCES, errno.EPERM):
        detail = f"this host's own firewall forbids TCP to {address}:{port}"
        return failed(Reason.PROHIBITED, detail, errno=name).at(address)
    if code == errno.ETIMEDOUT:
        return failed(
            Reason.TIMEOUT,
            f"the kernel gave up connecting to {address}:{port}",
            errno=name,
        ).at(address)
    detail = f"{address} port {port} cannot be reached: {exc.strerror}"
    return failed(Reason.UNREACHABLE, detail, errno=name).at(address)


def _icmp_outcome(report: IcmpReport, address: str, port: int, proto: str) -> Outcome:
    reason = report.reason
    what = report.describe()
    if reason is Reason.PROHIBITED:
        detail = f"{proto} {port} to {address} rejected by a filter: {what}"
    elif reason is Reason.REFUSED:
        detail = f"{proto} {port} on {address} is closed: {what}"
    else:
        detail = f"{address} cannot be reached on {proto} {port}: {what}"
    return Outcome(
        Status.FAIL, reason, detail, dict(report.evidence()), address=address
    )


@dataclass(frozen=True)
class Datagram:
    """A reply to a UDP request."""

    data: bytes
    rtt_ms: float
    local: str


@dataclass(frozen=True)
class Silence:
    """No reply and no ICMP error before the deadline."""

    waited_s: float
    sent: int


UdpResult = Datagram | IcmpReport | Silence


async def udp_exchange(
    address: str,
    port: int,
    payload: bytes,
    deadline: Deadline,
    *,
    accept: Callable[[bytes], bool] = lambda _data: True,
    resends: int = 2,
) -> UdpResult:
    """Send ``payload`` and wait for a datagram ``accept`` takes.

    The socket is connected, so the kernel drops datagrams from any other
    source. Datagrams that ``accept`` refuses (a wrong id, a stale answer)
    are ignored, up to :data:`MAX_STRAY_DATAGRAMS`. The request is sent
    again ``resends`` times, evenly spread over the time left.
    """
    loop = asyncio.get_running_loop()
    sock = _udp_socket(address, port)
    if isinstance(sock, IcmpReport):
        return sock
    stream = await asyncio_dgram.from_socket(sock)
    # A connected socket always makes a client stream.
    assert isinstance(stream, asyncio_dgram.aio.DatagramClient)
    started = loop.time()
    try:
        return await _exchange(
            stream,
            sock,
            payload=payload,
            deadline=deadline,
            accept=accept,
            resends=resends,
            started=started,
        )
    finally:
        stream.close()


def _udp_socket(address: str, port: int) -> socket.socket | IcmpReport:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    enable_error_queue(sock)
    try:
        sock.connect((address, port))
    except OSError as exc:
        sock.close()
        return IcmpReport(exc.errno or 0, Origin.LOCAL, 0, 0, None)
    return sock


async def _exchange(
    stream: asyncio_dgram.aio.DatagramClient,
    sock: socket.socket,
    *,
    payload: bytes,
    deadline: Deadline,
    accept: Callable[[bytes], bool],
    resends: int,
    started: float,
) -> UdpResult:
    loop = asyncio.get_running_loop()
    step = deadline.remaining() / (resends + 1)
    sends = [started + step * i for i in range(resends + 1)]
    sent = 0
    strays = 0
    while not deadline.expired() and strays <= MAX_STRAY_DATAGRAMS:
        if sent < len(sends) and loop.time() >= sends[sent]:
            with contextlib.suppress(OSError):
                await stream.send(payload)
            sent += 1
        try:
            data, _peer = await asyncio.wait_for(
                stream.recv(), min(_UDP_POLL, max(deadline.remaining(), 0.001))
            )
        except TimeoutError:
            continue
        except asyncio_dgram.TransportClosed:
            break
        except OSError:
            report = read_error_queue(sock)
            if report is not None:
                return report
            continue
        if accept(data):
            rtt = (loop.time() - started) * 1000
            local = str(sock.getsockname()[0])
            return Datagram(data, round(rtt, 1), local)
        strays += 1
    return Silence(round(loop.time() - started, 1), sent)


ErrorT = TypeVar("ErrorT", bound=Exception)


@dataclass
class Rejects(Generic[ErrorT]):
    """Datagrams refused as replies, kept to explain a silence: how many,
    and the first one with the codec's reason for refusing it."""

    count: int = 0
    first: bytes = b""
    error: ErrorT | None = None

    def note(self, data: bytes, error: ErrorT) -> None:
        if self.count == 0:
            self.first, self.error = data, error
        self.count += 1


def unanswered(result: IcmpReport | Silence, address: str, port: int) -> Outcome:
    """The outcome of a UDP request that got no answer."""
    if isinstance(result, Silence):
        return failed(
            Reason.TIMEOUT,
            f"no answer from {address} UDP {port} in {result.waited_s} s "
            f"({result.sent} requests sent): dropped on the way, or no "
            "service there",
            waited_s=result.waited_s,
            sent=result.sent,
        ).at(address)
    return _icmp_outcome(result, address, port, "UDP")
