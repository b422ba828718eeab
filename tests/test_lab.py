"""Sanity tests of the network lab itself, run from the agent namespace.

Each test checks that one lab service answers the way the agent's tests
will rely on: DNS data, TLS chains, SSH banner, fault rules, NTP clocks,
proxies and the gateway's activation answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.lab import Lab, topology
from tests.lab import netns as lab_netns

# Loads the `lab` and `faults` fixtures while no conftest provides them.
# Once a conftest imports them this line is redundant (its definitions
# win, both share one Lab) and only earns an assert-rewrite warning.

pytestmark = pytest.mark.lab

US_EAST = "anon-cp.storagegateway.us-east-1.amazonaws.com"


def run_py(lab: Lab, code: str, *args: str,
           timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in the agent namespace."""
    return lab.exec_agent_ns(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        timeout=timeout)


def py_json(lab: Lab, code: str, *args: str) -> object:
    done = run_py(lab, code, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- DNS ------------------------------------------------------------------

RESOLVE = """
    import json, sys
    import dns.resolver
    resolver = dns.resolver.Resolver()
    out = {"nameservers": [str(n) for n in resolver.nameservers]}
    for name in sys.argv[1:]:
        try:
            out[name] = [r.to_text() for r in resolver.resolve(name, "A")]
        except dns.resolver.NXDOMAIN:
            out[name] = "NXDOMAIN"
    print(json.dumps(out))
"""


def test_dns_records_and_nxdomain(lab: Lab) -> None:
    names = {
        US_EAST: [topology.TLS_GOOD],
        "s3.us-west-2.amazonaws.com": [topology.TLS_INSPECT],
        "dp-1.storagegateway.eu-west-1.amazonaws.com":
            [topology.TLS_EXPIRED],
        "storagegateway.eu-central-1.amazonaws.com":
            [topology.TLS_WRONG_NAME],
        "lab-bucket.s3.us-east-1.amazonaws.com": [topology.TLS_GOOD],
        "d4kdq0yaxexbo.cloudfront.net": [topology.TLS_GOOD],
        "console.aws.amazon.com": [topology.TLS_GOOD],
        "gateway.lab.test": [topology.GATEWAY],
        "proxy.lab.test": [topology.PROXY],
        "anon-cp.storagegateway.ap-southeast-2.amazonaws.com": "NXDOMAIN",
        "no-such-name.amazonaws.com": "NXDOMAIN",
        "example.com": "NXDOMAIN",
    }
    out = py_json(lab, RESOLVE, *names)
    assert isinstance(out, dict)
    # The namespace's own resolv.conf is in effect.
    assert out.pop("nameservers") == [topology.DNS]
    assert out == names


def test_dns_over_tcp_and_rcode(lab: Lab) -> None:
    code = """
        import json, sys
        import dns.message, dns.query, dns.rcode
        out = []
        for name in sys.argv[2:]:
            query = dns.message.make_query(name, "A")
            for send in (dns.query.udp, dns.query.tcp):
                reply = send(query, sys.argv[1], timeout=2)
                out.append(dns.rcode.to_text(reply.rcode()))
        print(json.dumps(out))
    """
    out = py_json(lab, code, topology.DNS, US_EAST, "unknown.lab.test")
    assert out == ["NOERROR", "NOERROR", "NXDOMAIN", "NXDOMAIN"]


# -- TLS ------------------------------------------------------------------

def s_client(lab: Lab, address: str, name: str,
             cafile: str) -> subprocess.CompletedProcess[str]:
    return lab.exec_agent_ns([
        "openssl", "s_client", "-connect", f"{address}:443",
        "-servername", name, "-verify_hostname", name,
        "-CAfile", cafile, "-verify_return_error", "-brief",
    ], timeout=15)


def test_tls_good_chain(lab: Lab) -> None:
    for name in (US_EAST, "s3.amazonaws.com", "d4kdq0yaxexbo.cloudfront.net"):
        done = s_client(lab, topology.TLS_GOOD, name, str(lab.ca_bundle))
        assert done.returncode == 0, done.stderr


def test_tls_inspecting_ca(lab: Lab) -> None:
    name = "client-cp.storagegateway.us-west-2.amazonaws.com"
    bad = s_client(lab, topology.TLS_INSPECT, name, str(lab.ca_bundle))
    assert bad.returncode != 0
    assert "unable to get local issuer certificate" in bad.stderr
    good = s_client(lab, topology.TLS_INSPECT, name, str(lab.inspect_ca))
    assert good.returncode == 0, good.stderr


def test_tls_expired(lab: Lab) -> None:
    name = "anon-cp.storagegateway.eu-west-1.amazonaws.com"
    done = s_client(lab, topology.TLS_EXPIRED, name, str(lab.ca_bundle))
    assert done.returncode != 0
    assert "certificate has expired" in done.stderr


def test_tls_wrong_name(lab: Lab) -> None:
    name = "anon-cp.storagegateway.eu-central-1.amazonaws.com"
    done = s_client(lab, topology.TLS_WRONG_NAME, name, str(lab.ca_bundle))
    assert done.returncode != 0
    assert "hostname mismatch" in done.stderr
    ok = s_client(lab, topology.TLS_WRONG_NAME, topology.WRONG_NAME,
                  str(lab.ca_bundle))
    assert ok.returncode == 0, ok.stderr


# -- TCP, SSH and faults ----------------------------------------------------

CONNECT = """
    import errno, socket, sys
    address, port, wait, mode, line = sys.argv[1:6]
    sock = socket.socket()
    sock.settimeout(float(wait))
    try:
        sock.connect((address, int(port)))
        if mode == "send":
            sock.sendall(line.encode() + b"\\r\\n")
        got = sock.recv(64) if mode != "quiet" else b""
        print("connected", got.decode(errors="replace"))
    except TimeoutError:
        print("timeout")
    except OSError as exc:
        print(errno.errorcode.get(exc.errno or 0, str(exc)))
"""


def connect(lab: Lab, address: str, port: int, *, wait: float = 2.0,
            mode: str = "read", line: str = "") -> str:
    """Connect from the agent; mode "read" waits for the server to
    speak first, "send" sends `line` then reads, "quiet" reads nothing.
    """
    done = run_py(lab, CONNECT, address, str(port), str(wait), mode, line)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_ssh_banner(lab: Lab) -> None:
    assert connect(lab, topology.SSH, 22).startswith("connected SSH-2.0-")


def test_not_ssh_answers_http(lab: Lab) -> None:
    out = connect(lab, topology.NOT_SSH, 22, mode="send",
                  line="SSH-2.0-labtest")
    assert out.startswith("connected HTTP/1.1 400")


def test_closed_address_refuses(lab: Lab) -> None:
    assert connect(lab, topology.CLOSED, 443, mode="quiet") == (
        "ECONNREFUSED")


def test_faults(lab: Lab, faults: None) -> None:
    lab.fault("drop", topology.SSH, 22)
    assert connect(lab, topology.SSH, 22, wait=1.0) == "timeout"
    lab.clear_faults()
    lab.fault("reset", topology.SSH, 22)
    assert connect(lab, topology.SSH, 22) == "ECONNREFUSED"
    lab.clear_faults()
    lab.fault("prohibited", topology.SSH, 22)
    assert connect(lab, topology.SSH, 22) == "EHOSTUNREACH"
    lab.clear_faults()
    lab.fault("host-unreachable", topology.SSH)
    assert connect(lab, topology.SSH, 22) == "EHOSTUNREACH"
    lab.clear_faults()
    assert connect(lab, topology.SSH, 22).startswith("connected SSH-2.0-")


def test_fault_arguments_checked(lab: Lab) -> None:
    with pytest.raises(ValueError):
        lab.fault("reset", topology.SSH, 22, proto="udp")
    with pytest.raises(ValueError):
        lab.fault("drop", "192.0.2.1")
    with pytest.raises(ValueError):
        lab.fault("explode", topology.SSH)


UDP_PROBE = """
    import errno, socket, sys
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.connect((sys.argv[1], int(sys.argv[2])))
    sock.send(b"lab")
    try:
        sock.recv(64)
        print("answer")
    except TimeoutError:
        print("timeout")
    except OSError as exc:
        print(errno.errorcode.get(exc.errno or 0, str(exc)))
"""


def test_gateway_ports(lab: Lab, faults: None) -> None:
    for port in topology.GATEWAY_TCP_PORTS:
        out = connect(lab, topology.GATEWAY, port, mode="quiet")
        assert out == "connected"
    # Nothing listens on UDP: the kernel answers port-unreachable.
    udp = run_py(lab, UDP_PROBE, topology.GATEWAY, "2049")
    assert udp.stdout.strip() == "ECONNREFUSED"
    lab.fault("prohibited", topology.GATEWAY, 2049, proto="udp")
    udp = run_py(lab, UDP_PROBE, topology.GATEWAY, "2049")
    assert udp.stdout.strip() == "EHOSTUNREACH"


# -- NTP ------------------------------------------------------------------

NTP_QUERY = """
    import json, sys
    import ntplib
    reply = ntplib.NTPClient().request(sys.argv[1], version=4, timeout=2)
    print(json.dumps({"stratum": reply.stratum, "leap": reply.leap,
                      "offset": reply.offset}))
"""


def ntp(lab: Lab, address: str) -> dict[str, float]:
    out = py_json(lab, NTP_QUERY, address)
    assert isinstance(out, dict)
    return out


def test_ntp_servers(lab: Lab) -> None:
    good = ntp(lab, topology.NTP_GOOD)
    assert good["leap"] == 0 and good["stratum"] <= 9
    assert abs(good["offset"]) < 1
    fast = ntp(lab, topology.NTP_FAST)
    assert abs(fast["offset"] - topology.FAKE_CLOCK_OFFSET_S) < 5
    unsync = ntp(lab, topology.NTP_UNSYNC)
    assert unsync["leap"] == 3
    assert unsync["stratum"] in (0, 16)


# -- proxies --------------------------------------------------------------

PROXY_CONNECT = """
    import base64, json, socket, ssl, sys
    proxy, target, auth, cafile = sys.argv[1:5]
    sock = socket.create_connection((proxy, 8080), timeout=5)
    head = f"CONNECT {target}:443 HTTP/1.1\\r\\nHost: {target}:443\\r\\n"
    if auth:
        token = base64.b64encode(auth.encode()).decode()
        head += f"Proxy-Authorization: Basic {token}\\r\\n"
    sock.sendall((head + "\\r\\n").encode())
    reply = b""
    for _ in range(50):
        if b"\\r\\n\\r\\n" in reply:
            break
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    status = int(reply.split(b" ", 2)[1])
    version = None
    if status == 200:
        ctx = ssl.create_default_context(cafile=cafile)
        with ctx.wrap_socket(sock, server_hostname=target) as tls:
            version = tls.version()
    print(json.dumps([status, version]))
"""


def proxy_connect(lab: Lab, proxy: str, auth: str = "") -> list[object]:
    """[CONNECT status, TLS version through the tunnel or None]."""
    out = py_json(lab, PROXY_CONNECT, proxy, US_EAST, auth,
                  str(lab.ca_bundle))
    assert isinstance(out, list)
    return out


def test_proxies(lab: Lab) -> None:
    assert proxy_connect(lab, topology.PROXY) in (
        [200, "TLSv1.3"], [200, "TLSv1.2"])
    assert proxy_connect(lab, topology.PROXY_AUTH) == [407, None]
    creds = f"{topology.PROXY_USER}:{topology.PROXY_PASSWORD}"
    assert proxy_connect(lab, topology.PROXY_AUTH, creds)[0] == 200
    assert proxy_connect(lab, topology.PROXY_NO_CONNECT) == [403, None]


# -- gateway activation ---------------------------------------------------

HTTP_GET = """
    import http.client, json, sys
    conn = http.client.HTTPConnection(sys.argv[1], 80, timeout=5)
    conn.request("GET", sys.argv[2])
    resp = conn.getresponse()
    print(json.dumps([resp.status, resp.getheader("Location"),
                      resp.read().decode()]))
"""


def http_get(lab: Lab, address: str, path: str) -> list[object]:
    """[status, Location header or None, body]."""
    out = py_json(lab, HTTP_GET, address, path)
    assert isinstance(out, list)
    return out


def test_activation(lab: Lab) -> None:
    key = topology.ACTIVATION_KEY
    got = http_get(lab, topology.GATEWAY,
                   "/?activationRegion=us-east-1&no_redirect")
    assert got == [200, None, key]
    for query, region in (("?activationRegion=us-east-1", "us-east-1"),
                          ("?activationRegion=eu-west-1", "eu-west-1"),
                          ("", "us-east-1")):
        location = ("http://lab.test/?activationKey="
                    f"{key}&activationRegion={region}")
        got = http_get(lab, topology.GATEWAY, f"/{query}")
        assert got[:2] == [302, location]
    broken = http_get(lab, topology.GATEWAY_BROKEN,
                      "/?activationRegion=us-east-1&no_redirect")
    assert broken == [200, None, topology.BROKEN_GATEWAY_BODY]


# -- lab housekeeping -----------------------------------------------------

def test_netns_resolv_conf(lab: Lab) -> None:
    for ns in (lab.agent_ns, lab.server_ns):
        conf = lab_netns.NETNS_ETC / ns / "resolv.conf"
        assert conf.read_text() == f"nameserver {topology.DNS}\n"


def test_unstarted_lab_stops_quietly() -> None:
    idle = Lab()
    idle.stop()
    idle.stop()
    assert not idle.running


def test_stale_namespace_removed(lab: Lab) -> None:
    # A pid that just exited stands in for a test run that died.
    child = subprocess.Popen(["true"])
    child.wait()
    stale = f"sgwr{child.pid}a"
    lab_netns.run(["ip", "netns", "add", stale])
    removed = lab_netns.remove_stale(os.getpid())
    assert stale in removed
    assert stale not in lab_netns.list_namespaces()
