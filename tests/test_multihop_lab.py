"""Sanity tests of the routed lab, run from its client namespace.

Each test checks one thing the agent's multi-hop tests will rely on:
the path works end to end, each router answers a TTL-limited probe with
time-exceeded from its near address, each fault looks from the client
the way `multihop` documents it, and a lowered MTU black-holes DF
packets while the router's frag-needed is dropped.  Plain sockets with
IP_RECVERR (through `probes.icmp`) read the ICMP errors; a raw socket
sees the RSTs; nmap's traceroute is the independent judge of the hops.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.lab import LabError, MultiHopLab
from tests.lab import multihop as mh
from tests.lab import netns as lab_netns

# Loads the `multihop` and `multihop_faults` fixtures while no conftest
# provides them.  Once tests/conftest.py imports them this line is
# redundant (the conftest's win; both share one MultiHopLab).

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("multihop_faults")]

CLOSED_UDP = 33434
CLOSED_TCP = 444

UDP_PROBE = """
    import errno, json, select, socket, sys
    from probes.icmp import enable_error_queue, read_error_queue
    address, port, ttl, size, wait = sys.argv[1:6]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    enable_error_queue(sock)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, int(ttl))
    # IP_MTU_DISCOVER (10) = IP_PMTUDISC_DO (2): DF set, never fragment.
    sock.setsockopt(socket.IPPROTO_IP, 10, 2)
    sock.connect((address, int(port)))
    out = {"sent": "ok", "icmp": None, "from": None, "errno": None}
    try:
        # `size` counts the IP (20) and UDP (8) headers.
        sock.send(bytes(int(size) - 28))
    except OSError as exc:
        out["sent"] = errno.errorcode.get(exc.errno or 0, str(exc))
    poller = select.poll()
    poller.register(sock, select.POLLERR)
    if out["sent"] == "ok" and poller.poll(float(wait) * 1000):
        report = read_error_queue(sock)
        if report is not None:
            out["icmp"], out["from"] = report.name(), report.offender
            out["errno"] = errno.errorcode.get(report.errno)
    # IP_MTU (14): the path MTU the kernel now holds for the route.
    out["mtu"] = sock.getsockopt(socket.IPPROTO_IP, 14)
    print(json.dumps(out))
"""

CONNECT = """
    import errno, json, socket, struct, sys
    from probes.icmp import enable_error_queue, read_error_queue
    address, port, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    # A raw TCP socket gets a copy of every TCP packet the client
    # receives: the RSTs, with the source and TTL they arrive with.
    sniff = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    sock = socket.socket()
    sock.bind(("0.0.0.0", 0))
    local = sock.getsockname()[1]
    enable_error_queue(sock)
    sock.settimeout(wait)
    out = {"result": "connected", "icmp": None, "from": None, "rst": []}
    try:
        sock.connect((address, port))
        if port == 22:
            out["banner"] = sock.recv(64).decode(errors="replace").strip()
    except TimeoutError:
        out["result"] = "timeout"
    except OSError as exc:
        out["result"] = errno.errorcode.get(exc.errno or 0, str(exc))
    # Non-blocking, or Python waits out the timeout before reading.
    sock.setblocking(False)
    report = read_error_queue(sock)
    if report is not None:
        out["icmp"], out["from"] = report.name(), report.offender
    sniff.setblocking(False)
    for _ in range(256):
        try:
            pkt = sniff.recv(65535)
        except BlockingIOError:
            break
        ihl = (pkt[0] & 0x0F) * 4
        sport, dport = struct.unpack("!HH", pkt[ihl : ihl + 4])
        if (sport, dport) == (port, local) and pkt[ihl + 13] & 0x04:
            out["rst"].append([socket.inet_ntoa(pkt[12:16]), pkt[8]])
    print(json.dumps(out))
"""

ECHO = """
    import json, socket, sys
    address, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sock = socket.create_connection((address, port), timeout=2)
    sock.sendall(b"x" * size)
    got = 0
    try:
        for _ in range(1000):
            chunk = sock.recv(65536)
            got += len(chunk)
            if not chunk or got >= size:
                break
    except TimeoutError:
        pass
    mss = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
    print(json.dumps({"echoed": got, "mss": mss}))
"""


def py_json(lab: MultiHopLab, code: str, *args: str) -> dict[str, object]:
    """Run a Python snippet in the client namespace; its JSON output."""
    done = lab.exec_client([sys.executable, "-c", textwrap.dedent(code), *args])
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def udp(
    lab: MultiHopLab,
    *,
    port: int = CLOSED_UDP,
    ttl: int = 64,
    size: int = 100,
    wait: float = 1.0,
) -> dict[str, object]:
    """One DF datagram of `size` bytes (IP header included) to GATEWAY."""
    args = (lab.GATEWAY, str(port), str(ttl), str(size), str(wait))
    return py_json(lab, UDP_PROBE, *args)


def connect(lab: MultiHopLab, port: int, wait: float = 2.0) -> dict[str, object]:
    """A TCP connect from the client to GATEWAY:port."""
    return py_json(lab, CONNECT, lab.GATEWAY, str(port), str(wait))


def frag_needed_drops(lab: MultiHopLab, router: str) -> int:
    """Packets the frag-needed rule in `router`'s output chain dropped."""
    listing = lab.exec_in(
        router, ["nft", "list", "chain", "ip", lab_netns.NFT_TABLE, "output"]
    ).stdout
    return sum(int(n) for n in re.findall(r"packets (\d+)", listing))


# -- the healthy path --------------------------------------------------------


def test_tcp_connect_reaches_gateway(multihop: MultiHopLab) -> None:
    assert connect(multihop, 443)["result"] == "connected"
    ssh = connect(multihop, 22)
    assert ssh["result"] == "connected"
    assert ssh["banner"] == mh.SSH_BANNER
    # The gateway's own answer for a closed port, for comparison below.
    closed = connect(multihop, CLOSED_TCP)
    assert closed["result"] == "ECONNREFUSED"
    assert closed["rst"] == [[mh.GATEWAY, 62]]


@pytest.mark.parametrize(
    ("ttl", "icmp", "sender"),
    [
        (1, "time-exceeded", mh.R1_NEAR),
        (2, "time-exceeded", mh.R2_NEAR),
        (3, "port-unreachable", mh.GATEWAY),
    ],
)
def test_ttl_limited_probe_names_each_hop(
    multihop: MultiHopLab, ttl: int, icmp: str, sender: str
) -> None:
    out = udp(multihop, ttl=ttl)
    assert (out["icmp"], out["from"]) == (icmp, sender)


def test_nmap_traceroute_sees_both_routers(multihop: MultiHopLab) -> None:
    if shutil.which("nmap") is None:
        pytest.skip("nmap is not installed")
    done = multihop.exec_client(
        ["nmap", "-n", "-Pn", "-p", "22", "--traceroute", "-oX", "-", mh.GATEWAY],
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    hops = ET.fromstring(done.stdout).findall(".//trace/hop")
    assert [h.get("ipaddr") for h in hops] == [mh.R1_NEAR, mh.R2_NEAR, mh.GATEWAY]


# -- faults ---------------------------------------------------------------


def test_drop_on_r1_times_out(multihop: MultiHopLab) -> None:
    multihop.fault("r1", "drop", 443)
    assert connect(multihop, 443, wait=1.0)["result"] == "timeout"
    assert connect(multihop, 22)["result"] == "connected"


@pytest.mark.parametrize(("router", "ttl"), [("r1", 64), ("r2", 63)])
def test_reset_comes_with_gateway_address(
    multihop: MultiHopLab, router: str, ttl: int
) -> None:
    # The router forges the RST from the gateway's address; only the
    # TTL (the router's own 64, less the hops after it) tells it apart
    # from the gateway's own RST, which arrives with 62.
    multihop.fault(router, "reset", 443)
    out = connect(multihop, 443)
    assert out["result"] == "ECONNREFUSED"
    assert out["icmp"] is None
    assert out["rst"] == [[mh.GATEWAY, ttl]]


def test_prohibited_on_r2_comes_from_r2(multihop: MultiHopLab) -> None:
    multihop.fault("r2", "prohibited", 443)
    multihop.fault("r2", "prohibited", 53, proto="udp")
    tcp = connect(multihop, 443)
    assert (tcp["result"], tcp["icmp"], tcp["from"]) == (
        "EHOSTUNREACH",
        "admin-prohibited",
        mh.R2_NEAR,
    )
    dns = udp(multihop, port=53)
    assert (dns["icmp"], dns["from"]) == ("admin-prohibited", mh.R2_NEAR)
    # Only the ports named: 22 still connects.
    assert connect(multihop, 22)["result"] == "connected"


def test_prohibited_on_r1_comes_from_r1(multihop: MultiHopLab) -> None:
    multihop.fault("r1", "prohibited")
    out = udp(multihop)
    assert (out["icmp"], out["from"]) == ("admin-prohibited", mh.R1_NEAR)


def test_fault_arguments_checked(multihop: MultiHopLab) -> None:
    with pytest.raises(ValueError, match="router"):
        multihop.fault("r3", "drop")
    with pytest.raises(ValueError, match="reset"):
        multihop.fault("r1", "reset", 53, proto="udp")
    with pytest.raises(ValueError, match="unknown"):
        multihop.fault("r1", "explode")
    with pytest.raises(ValueError, match="mtu"):
        multihop.set_mtu("r1", 100)


# -- MTU ------------------------------------------------------------------


def test_mtu_black_hole_on_r1(multihop: MultiHopLab) -> None:
    multihop.set_mtu("r1", 1400)
    small = udp(multihop, size=1300)
    assert (small["icmp"], small["from"]) == ("port-unreachable", mh.GATEWAY)
    large = udp(multihop, size=1450)
    assert large["sent"] == "ok"
    assert large["icmp"] is None
    assert large["mtu"] == 1500
    # The kernel did try to answer: the output-chain rule ate it.
    assert frag_needed_drops(multihop, "r1") >= 1


def test_mtu_frag_needed_from_r1(multihop: MultiHopLab) -> None:
    multihop.set_mtu("r1", 1400, block_frag_needed=False)
    large = udp(multihop, size=1450)
    assert (large["icmp"], large["from"], large["errno"]) == (
        "frag-needed-unreachable",
        mh.R1_NEAR,
        "EMSGSIZE",
    )
    assert large["mtu"] == 1400
    # The client now knows the path MTU and refuses to send.
    assert udp(multihop, size=1450)["sent"] == "EMSGSIZE"
    multihop.clear_faults()
    again = udp(multihop, size=1450)
    assert (again["icmp"], again["mtu"]) == ("port-unreachable", 1500)


def test_mtu_frag_needed_from_r2(multihop: MultiHopLab) -> None:
    multihop.set_mtu("r2", 1400, block_frag_needed=False)
    large = udp(multihop, size=1450)
    assert (large["icmp"], large["from"]) == ("frag-needed-unreachable", mh.R2_NEAR)


def test_tcp_black_hole_depends_on_link(multihop: MultiHopLab) -> None:
    # Behind r1 neither end sees the small link: TCP data stalls.
    multihop.set_mtu("r1", 1400)
    stalled = py_json(multihop, ECHO, mh.GATEWAY, "443", "4000")
    assert stalled == {"echoed": 0, "mss": 1448}
    multihop.clear_faults()
    # Behind r2 the gateway's own MTU shrinks its MSS: TCP gets through.
    multihop.set_mtu("r2", 1400)
    clamped = py_json(multihop, ECHO, mh.GATEWAY, "443", "4000")
    assert clamped == {"echoed": 4000, "mss": 1348}


# -- lifecycle ------------------------------------------------------------


def test_second_lab_in_process_refused(multihop: MultiHopLab) -> None:
    other = MultiHopLab()
    with pytest.raises(LabError, match="already exist"):
        other.start()
    other.stop()
    assert connect(multihop, 443)["result"] == "connected"


def test_stale_namespace_of_dead_owner_removed(multihop: MultiHopLab) -> None:
    # A pid above pid_max can never belong to a live process.
    dead = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    stale = mh.names_for(dead).r1
    subprocess.run(["ip", "netns", "add", stale], check=True, timeout=10)
    try:
        assert mh.remove_stale(multihop.pid) == [stale]
    finally:
        lab_netns.delete_namespace(stale)
    assert stale not in lab_netns.list_namespaces()
    assert multihop.client_ns in lab_netns.list_namespaces()
