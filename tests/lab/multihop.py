"""A routed lab: the client, two routers and a far gateway host in a line.

Four network namespaces, three point-to-point veth links, each link its
own /24 in 10.232.0.0/16 (away from the bridged lab's 10.231.0.0/24)::

    client .1.2 --- .1.1 r1 .2.1 --- .2.2 r2 .3.1 --- .3.2 gateway

The routers forward (``ip_forward=1``) by static routes; the client and
the gateway send 10.232.0.0/16 to their router.  No namespace has a
default route.  ICMP rate limits are off everywhere, so every reject
and every time-exceeded arrives.  The gateway runs one small listener
on TCP 22 and 443 (see `_LISTENER`); nothing listens on UDP there, so
a UDP probe gets port-unreachable from GATEWAY.

Faults live in each router's own nftables table (`netns.NFT_TABLE`):
its forward chain holds the drop and reject rules for traffic toward
GATEWAY, its output chain the rule that drops the router's own
frag-needed errors (the kernel sends its ICMP errors through output,
not forward).  What the client sees:

* drop: silence; a TCP connect times out.
* reset: ECONNREFUSED.  The router sends the RST itself with GATEWAY as
  its source address; only the TTL gives it away (64 when r1 sends it,
  63 from r2, where the gateway's own RST arrives with 62).
* prohibited: EHOSTUNREACH, with an ICMP admin-prohibited whose source
  is the router's address on the link toward the client (R1_NEAR or
  R2_NEAR), for TCP and UDP alike.
* set_mtu: a smaller MTU on the link after the router; while its
  frag-needed errors are dropped, DF packets larger than that MTU
  vanish (a path MTU black hole) and smaller ones pass.  Without the
  block the client gets frag-needed from the router's near address
  carrying the new MTU, and caches it (see `clear_faults`).  TCP only
  falls into the hole behind r1: behind r2 the gateway's own interface
  has the small MTU, so its SYN-ACK already offers a smaller MSS.

Names: a MultiHopLab owned by process PID uses namespaces
``sgwr{PID}c``, ``sgwr{PID}r1``, ``sgwr{PID}r2`` and ``sgwr{PID}g``;
each veth is named ``sgwr{PID}`` plus its end (``c1``/``1c``,
``12``/``21``, ``2g``/``g2``): at most 13 characters, under the 15
the kernel allows, and none clashes with the bridged lab's names.
Namespaces of a dead owner are removed at the next start.

Limits: IPv4 only; one MultiHopLab per process; needs root, iproute2,
nftables and sysctl.  Frag-needed is blocked toward the client only:
large replies from the gateway meet r2's unblocked frag-needed (behind
r1) or the gateway's own MTU (behind r2).  There is no DNS server: the
client's resolv.conf names GATEWAY, whose UDP 53 is closed (glibc
fails at once, dnspython after its timeout), so tests use addresses.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from . import netns
from .errors import LabError, LabUnsupported
from .lab import Lab
from .procs import Daemon, stop_all

# -- topology ---------------------------------------------------------------

SUBNET = ipaddress.IPv4Network("10.232.0.0/16")
LINK_PREFIX_LEN = 24
CLIENT = "10.232.1.2"
R1_NEAR = "10.232.1.1"
R1_FAR = "10.232.2.1"
R2_NEAR = "10.232.2.2"
R2_FAR = "10.232.3.1"
GATEWAY = "10.232.3.2"
GATEWAY_TCP_PORTS: tuple[int, ...] = (22, 443)
SSH_BANNER = "SSH-2.0-sgwr-multihop-lab"
BASE_MTU = 1500
ROUTERS: tuple[str, ...] = ("r1", "r2")

_NAME_RE = re.compile(r"^sgwr(\d+)(?:c|r1|r2|g)$")
_WORKDIR_PREFIX = "sgwr-multihop"
_BINARIES = ("ip", "nft", "sysctl")
_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PROBE = Path(__file__).resolve().with_name("probe.py")
_START_BUDGET_S = 10.0
_PROBE_ROUND_S = 0.5
_MAX_PROBE_ROUNDS = 100

# The gateway's listener.  Port 22 greets with an SSH banner, then every
# port echoes what it reads, so a test can push large segments through
# the path.  Bounded: at most _ROUNDS select rounds and _LIFE seconds,
# and at most 64 open connections (the oldest is closed first).
_LISTENER = f'''\
import selectors, socket, sys, time
_ROUNDS, _LIFE, _MAX_CONN = 10_000_000, 86_400.0, 64
address, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
sel = selectors.DefaultSelector()
for port in ports:
    srv = socket.create_server((address, port), backlog=64)
    srv.setblocking(False)
    sel.register(srv, selectors.EVENT_READ, port)
print("listening", address, ports, flush=True)
conns = []
deadline = time.monotonic() + _LIFE
for _ in range(_ROUNDS):
    if time.monotonic() >= deadline:
        break
    for key, _mask in sel.select(timeout=1.0):
        sock = key.fileobj
        if key.data is not None:
            try:
                conn, _peer = sock.accept()
            except OSError:
                continue
            if key.data == 22:
                conn.sendall(b"{SSH_BANNER}\\r\\n")
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ, None)
            conns.append(conn)
            if len(conns) > _MAX_CONN:
                old = conns.pop(0)
                sel.unregister(old)
                old.close()
            continue
        try:
            data = sock.recv(65536)
            if data:
                sock.setblocking(True)
                sock.settimeout(5.0)
                sock.sendall(data)
                sock.setblocking(False)
                continue
        except OSError:
            pass
        sel.unregister(sock)
        conns.remove(sock)
        sock.close()
'''


class MultiHopNames(NamedTuple):
    """Namespace and link names of the routed lab owned by one process."""

    client: str
    r1: str
    r2: str
    gateway: str
    base: str

    @property
    def namespaces(self) -> tuple[str, str, str, str]:
        return self.client, self.r1, self.r2, self.gateway

    def ns(self, host: str) -> str:
        """Namespace of `host`: "client", "r1", "r2" or "gateway"."""
        return {
            "client": self.client,
            "r1": self.r1,
            "r2": self.r2,
            "gateway": self.gateway,
        }[host]

    def link(self, a: str, b: str) -> str:
        """The veth in `a`'s namespace whose peer is in `b`'s.

        Hosts are "c", "1", "2" and "g", so ``link("1", "2")`` is r1's
        end of the r1-r2 link.
        """
        return f"{self.base}{a}{b}"


def names_for(pid: int) -> MultiHopNames:
    """Every namespace name of the routed lab owned by `pid`."""
    base = f"sgwr{pid}"
    return MultiHopNames(f"{base}c", f"{base}r1", f"{base}r2", f"{base}g", base)


# Per link: (host, address) at each end; hosts as in MultiHopNames.link.
_LINKS: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = (
    (("c", CLIENT), ("1", R1_NEAR)),
    (("1", R1_FAR), ("2", R2_NEAR)),
    (("2", R2_FAR), ("g", GATEWAY)),
)
_HOST_NS = {"c": "client", "1": "r1", "2": "r2", "g": "gateway"}
_ROUTES: dict[str, tuple[str, ...]] = {
    "c": (f"{SUBNET} via {R1_NEAR}",),
    "1": (f"10.232.3.0/{LINK_PREFIX_LEN} via {R2_NEAR}",),
    "2": (f"10.232.1.0/{LINK_PREFIX_LEN} via {R1_FAR}",),
    "g": (f"{SUBNET} via {R2_FAR}",),
}
# Router -> the two ends of the link after it, toward the gateway.
_LINK_AFTER: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "r1": (("1", "2"), ("2", "1")),
    "r2": (("2", "g"), ("g", "2")),
}
_FRAG_NEEDED_RULE = "icmp type destination-unreachable icmp code frag-needed"


# -- namespaces ---------------------------------------------------------------


def remove_stale(own_pid: int) -> list[str]:
    """Delete routed-lab namespaces (and work dirs) of dead owners."""
    removed: list[str] = []
    for ns in netns.list_namespaces():
        match = _NAME_RE.match(ns)
        if match is None:
            continue
        owner = int(match.group(1))
        if owner == own_pid or Path(f"/proc/{owner}").exists():
            continue
        netns.delete_namespace(ns)
        removed.append(ns)
        pattern = f"{_WORKDIR_PREFIX}-{owner}-*"
        for path in Path(tempfile.gettempdir()).glob(pattern):
            shutil.rmtree(path, ignore_errors=True)
    return removed


def _sysctl(ns: str, *settings: str) -> None:
    netns.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *settings])


def _wire(n: MultiHopNames) -> None:
    commands: dict[str, list[str]] = {host: ["link set lo up"] for host in _HOST_NS}
    for end, other in _LINKS:
        netns._veth(
            n.link(end[0], other[0]),
            n.ns(_HOST_NS[end[0]]),
            n.link(other[0], end[0]),
            n.ns(_HOST_NS[other[0]]),
        )
        for (host, address), (peer, _) in ((end, other), (other, end)):
            link = n.link(host, peer)
            commands[host] += [
                f"addr add {address}/{LINK_PREFIX_LEN} dev {link}",
                f"link set {link} up",
            ]
    for host, name in _HOST_NS.items():
        routes = [f"route add {route}" for route in _ROUTES[host]]
        netns._batch(n.ns(name), commands[host] + routes)


def _router_table(ns: str) -> None:
    netns.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        stdin=(
            f"table ip {netns.NFT_TABLE} {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter; policy accept;\n"
            "  }\n"
            "  chain output {\n"
            "    type filter hook output priority filter; policy accept;\n"
            "  }\n"
            "}\n"
        ),
    )


def _write_resolv_conf(ns: str) -> None:
    # No DNS server in this lab: point the client at the gateway, whose
    # closed UDP 53 answers port-unreachable, so no query leaves the
    # namespaces.  glibc gives up at once; resolvers on unconnected
    # sockets (dnspython) never see the error and wait out their timeout.
    etc_dir = netns.NETNS_ETC / ns
    etc_dir.mkdir(parents=True, exist_ok=True)
    (etc_dir / "resolv.conf").write_text(f"nameserver {GATEWAY}\n", encoding="ascii")


def create(pid: int) -> None:
    """Create the namespaces, links, routes, sysctls and fault tables."""
    n = names_for(pid)
    for ns in n.namespaces:
        netns.run(["ip", "netns", "add", ns])
    _wire(n)
    for ns in n.namespaces:
        netns._quiet_icmp_limits(ns)
    for router in (n.r1, n.r2):
        _sysctl(router, "net.ipv4.ip_forward=1")
        _router_table(router)
    _write_resolv_conf(n.client)


def fault_rule(action: str, port: int | None, proto: str) -> str:
    """The nft forward-chain rule for one fault toward GATEWAY."""
    if action not in netns.FAULT_ACTIONS:
        raise ValueError(
            f"unknown fault action {action!r}; "
            f"expected one of {sorted(netns.FAULT_ACTIONS)}"
        )
    if proto not in ("tcp", "udp"):
        raise ValueError(f"proto must be 'tcp' or 'udp', not {proto!r}")
    if action == "reset" and proto != "tcp":
        raise ValueError("a tcp reset only applies to tcp")
    match = f"ip daddr {GATEWAY}"
    if port is not None:
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        match += f" {proto} dport {port}"
    elif action == "reset":
        match += " meta l4proto tcp"
    return f"{match} counter {netns.FAULT_ACTIONS[action]}"


def _nft(ns: str, *args: str) -> None:
    netns.run(["ip", "netns", "exec", ns, "nft", *args])


def _add_rule(ns: str, chain: str, rule: str) -> None:
    _nft(ns, "add", "rule", "ip", netns.NFT_TABLE, chain, *rule.split())


def _check_router(router: str) -> None:
    if router not in ROUTERS:
        raise ValueError(f"router must be one of {ROUTERS}, not {router!r}")


def _find_binaries() -> None:
    missing = [b for b in _BINARIES if shutil.which(b, path=_SEARCH_PATH) is None]
    if missing:
        raise LabUnsupported(f"missing programs: {', '.join(missing)}")


# -- the lab ------------------------------------------------------------------


class MultiHopLab:
    """Client, r1, r2 and gateway namespaces with the gateway listening.

    Use as a context manager or call start() and stop(); stop() is safe
    at any time and more than once.
    """

    CLIENT = CLIENT
    R1_NEAR = R1_NEAR
    R1_FAR = R1_FAR
    R2_NEAR = R2_NEAR
    R2_FAR = R2_FAR
    GATEWAY = GATEWAY

    def __init__(
        self, *, keep_workdir: bool = False, start_budget: float = _START_BUDGET_S
    ) -> None:
        self.pid = os.getpid()
        self._names = names_for(self.pid)
        self.client_ns: str = self._names.client
        self.r1_ns: str = self._names.r1
        self.r2_ns: str = self._names.r2
        self.gateway_ns: str = self._names.gateway
        self.keep_workdir = keep_workdir
        self.start_budget = start_budget
        self._workdir: Path | None = None
        self._daemons: list[Daemon] = []
        self._created_ns = False
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise LabError("the lab has not been started")
        return self._workdir

    # -- lifecycle ------------------------------------------------------

    def start(self) -> None:
        """Build the namespaces, start the listener, wait until it answers."""
        if self._running:
            raise LabError("the multi-hop lab is already running")
        self._preflight()
        try:
            self._start()
        except BaseException as exc:
            unsupported = isinstance(exc, LabUnsupported)
            left = self._teardown(keep_workdir=not unsupported)
            if isinstance(exc, LabError) and self._workdir is not None:
                note = f"(lab files kept in {self._workdir})"
                if left:
                    note += f"\n(daemons that did not stop: {left})"
                raise type(exc)(f"{exc}\n{note}") from exc
            raise
        self._running = True

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise LabUnsupported("network namespaces need root")
        _find_binaries()
        remove_stale(self.pid)
        taken = set(self._names.namespaces) & set(netns.list_namespaces())
        if taken:
            raise LabError(
                f"namespaces {'/'.join(sorted(taken))} already exist: "
                "another MultiHopLab in this process is running"
            )

    def _start(self) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}-{self.pid}-"))
        self._created_ns = True
        try:
            create(self.pid)
        except LabError as exc:
            raise LabUnsupported(f"cannot create namespaces: {exc}") from exc
        listener = self._listener()
        self._daemons.append(listener)
        listener.start(self.gateway_ns)
        self._wait_ready(listener)

    def _listener(self) -> Daemon:
        script = self.workdir / "listener.py"
        script.write_text(_LISTENER, encoding="utf-8")
        ports = [str(p) for p in GATEWAY_TCP_PORTS]
        argv = [sys.executable, "-I", str(script), GATEWAY, *ports]
        log = self.workdir / "logs" / "listener.log"
        log.parent.mkdir(exist_ok=True)
        return Daemon("listener", argv, str(script), log, host="gateway")

    def _wait_ready(self, listener: Daemon) -> None:
        # From the client, so the routes are proven along with the
        # listener; short rounds so a dead listener is reported at once.
        spec = [[f"tcp {GATEWAY}:{p}", "tcp", GATEWAY, p] for p in GATEWAY_TCP_PORTS]
        deadline = time.monotonic() + self.start_budget
        failed = "not probed"
        for _ in range(_MAX_PROBE_ROUNDS):
            if listener.exited() is not None:
                raise LabError(f"listener exited during start:\n{listener.describe()}")
            wait = max(min(_PROBE_ROUND_S, deadline - time.monotonic()), 0.0)
            done = self.exec_client(
                [sys.executable, "-I", str(_PROBE), f"{wait:.3f}", json.dumps(spec)],
                timeout=wait + 20.0,
            )
            if done.returncode != 0:
                raise LabError(f"readiness probe failed: {done.stderr.strip()}")
            failed = done.stdout.strip()
            if failed == "{}":
                return
            if time.monotonic() >= deadline:
                break
        raise LabError(
            f"gateway not answering after {self.start_budget:.0f} s: {failed}\n"
            f"{listener.describe()}"
        )

    def stop(self) -> None:
        """Stop everything this lab started; safe to call at any time."""
        left = self._teardown(keep_workdir=self.keep_workdir)
        if left:
            raise LabError(f"daemons did not stop: {', '.join(left)}")

    def _teardown(self, *, keep_workdir: bool) -> list[str]:
        """Stop the listener, delete namespaces; names of daemons left."""
        self._running = False
        left = stop_all(self._daemons)
        self._daemons = []
        if self._created_ns:
            for ns in self._names.namespaces:
                netns.delete_namespace(ns)
            self._created_ns = False
        if self._workdir is not None and not keep_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        return left

    # -- faults -----------------------------------------------------------

    def fault(
        self, router: str, action: str, port: int | None = None, proto: str = "tcp"
    ) -> None:
        """Make `router` ("r1" or "r2") misbehave for traffic to GATEWAY.

        action: "drop" (silence), "reset" (a TCP RST the router sends
        with GATEWAY as source; tcp only), "prohibited" (ICMP
        admin-prohibited from the router's near address) or
        "host-unreachable" (likewise).  With `port` only that `proto`
        port matches, else every packet toward GATEWAY (tcp only for
        "reset").  Rules add up until clear_faults().
        """
        _check_router(router)
        rule = fault_rule(action, port, proto)
        _add_rule(self._names.ns(router), "forward", rule)

    def set_mtu(self, router: str, mtu: int, block_frag_needed: bool = True) -> None:
        """Set the MTU of the link after `router`, toward the gateway.

        r1: the r1-r2 link; r2: the r2-gateway link; both ends of it.
        With `block_frag_needed` the router's own ICMP frag-needed
        errors are dropped in its output chain, so DF packets larger
        than `mtu` disappear without a word.  Limits: 576 <= mtu <= 1500
        (the kernel ignores frag-needed below its min_pmtu of 552).
        """
        _check_router(router)
        if not 576 <= mtu <= BASE_MTU:
            raise ValueError(f"mtu {mtu} outside 576..{BASE_MTU}")
        for a, b in _LINK_AFTER[router]:
            self._set_link_mtu(a, b, mtu)
        if block_frag_needed:
            rule = f"{_FRAG_NEEDED_RULE} counter drop"
            _add_rule(self._names.ns(router), "output", rule)

    def _set_link_mtu(self, a: str, b: str, mtu: int) -> None:
        ns = self._names.ns(_HOST_NS[a])
        link = self._names.link(a, b)
        netns.run(["ip", "-n", ns, "link", "set", link, "mtu", str(mtu)])

    def clear_faults(self) -> None:
        """Remove every fault rule, restore MTU 1500, forget learnt PMTUs.

        The route cache of every namespace is flushed: a client that got
        frag-needed keeps the smaller path MTU for 10 minutes otherwise.
        """
        for router in (self.r1_ns, self.r2_ns):
            for chain in ("forward", "output"):
                _nft(router, "flush", "chain", "ip", netns.NFT_TABLE, chain)
        for (a, _addr_a), (b, _addr_b) in _LINKS:
            self._set_link_mtu(a, b, BASE_MTU)
            self._set_link_mtu(b, a, BASE_MTU)
        for ns in self._names.namespaces:
            netns.run(["ip", "-n", ns, "route", "flush", "cache"])

    # -- running things in the namespaces -----------------------------

    def exec_in(
        self, host: str, argv: list[str], timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in "client", "r1", "r2" or "gateway"; text output."""
        return Lab._exec(self._names.ns(host), argv, timeout)

    def exec_client(
        self, argv: list[str], timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the client namespace, capturing text output."""
        return self.exec_in("client", argv, timeout)

    def run_agent(
        self, *args: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m agent ARGS`` in the client namespace."""
        return self.exec_client([sys.executable, "-m", "agent", *args], timeout)

    def __enter__(self) -> MultiHopLab:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
