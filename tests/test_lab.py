"""Sanity tests of the network lab itself, run from the agent namespace.

Each test checks that one lab service answers the way the agent's tests
will rely on: DNS data, TLS chains, SSH banner, fault rules, NTP clocks,
proxies, the gateway's activation answers, its iSCSI, SMB and NFS
servers, the directory server and the impostor.  Where a real client
exists (nmap, smbclient, rpcinfo, nfs-ls, ldapsearch, nmblookup) it is
the judge.
"""

from __future__ import annotations

import json
import os
import shutil
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
SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def run_py(
    lab: Lab, code: str, *args: str, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in the agent namespace."""
    return lab.exec_agent_ns(
        [sys.executable, "-c", textwrap.dedent(code), *args], timeout=timeout
    )


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
        "dp-1.storagegateway.eu-west-1.amazonaws.com": [topology.TLS_EXPIRED],
        "storagegateway.eu-central-1.amazonaws.com": [topology.TLS_WRONG_NAME],
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


def s_client(
    lab: Lab, address: str, name: str, cafile: str
) -> subprocess.CompletedProcess[str]:
    return lab.exec_agent_ns(
        [
            "openssl",
            "s_client",
            "-connect",
            f"{address}:443",
            "-servername",
            name,
            "-verify_hostname",
            name,
            "-CAfile",
            cafile,
            "-verify_return_error",
            "-brief",
        ],
        timeout=15,
    )


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
    ok = s_client(lab, topology.TLS_WRONG_NAME, topology.WRONG_NAME, str(lab.ca_bundle))
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


def connect(
    lab: Lab,
    address: str,
    port: int,
    *,
    wait: float = 2.0,
    mode: str = "read",
    line: str = "",
) -> str:
    """Connect from the agent; mode "read" waits for the server to
    speak first, "send" sends `line` then reads, "quiet" reads nothing.
    """
    done = run_py(lab, CONNECT, address, str(port), str(wait), mode, line)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_ssh_banner(lab: Lab) -> None:
    assert connect(lab, topology.SSH, 22).startswith("connected SSH-2.0-")


def test_not_ssh_answers_http(lab: Lab) -> None:
    out = connect(lab, topology.NOT_SSH, 22, mode="send", line="SSH-2.0-labtest")
    assert out.startswith("connected HTTP/1.1 400")


def test_closed_address_refuses(lab: Lab) -> None:
    assert connect(lab, topology.CLOSED, 443, mode="quiet") == ("ECONNREFUSED")


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
    # SMB has no UDP side: the kernel answers port-unreachable.
    udp = run_py(lab, UDP_PROBE, topology.GATEWAY, "445")
    assert udp.stdout.strip() == "ECONNREFUSED"
    lab.fault("prohibited", topology.GATEWAY, 445, proto="udp")
    udp = run_py(lab, UDP_PROBE, topology.GATEWAY, "445")
    assert udp.stdout.strip() == "EHOSTUNREACH"


# -- iSCSI ----------------------------------------------------------------

ISCSI_LOGIN = """
    import json, socket, struct, sys
    address, session, target, methods = sys.argv[1:5]
    keys = ["InitiatorName=iqn.2024-01.test.lab:probe",
            f"SessionType={session}", f"AuthMethod={methods}"]
    if target:
        keys.append(f"TargetName={target}")
    text = b"".join(k.encode() + b"\\0" for k in keys)
    # Login request (immediate), transit from security negotiation to
    # operational, versions 0; byte 4 (no AHS) and the 3-byte data
    # length packed as one word; an ISID in enterprise-number format,
    # TSIH 0, ITT 1, CID 0, CmdSN 0, ExpStatSN 0.
    bhs = struct.pack("!4BI6sHIHxxII16x", 0x43, 0x81, 0, 0, len(text),
                      bytes.fromhex("400001370000"), 0, 1, 0, 0, 0)
    with socket.create_connection((address, 3260), timeout=5) as sock:
        sock.sendall(bhs + text + bytes(-len(text) % 4))
        reply = b""
        for _ in range(100):
            chunk = sock.recv(4096)
            reply += chunk
            if not chunk or len(reply) >= 48 + int.from_bytes(
                    reply[5:8], "big"):
                break
    size = int.from_bytes(reply[5:8], "big")
    words = [w.decode() for w in reply[48:48 + size].split(b"\\0") if w]
    # Opcode, status class, status detail, text keys.
    print(json.dumps([reply[0], reply[36], reply[37], words]))
"""


def iscsi_login(
    lab: Lab, address: str, session: str, target: str = "", methods: str = "None"
) -> list[object]:
    """[opcode, status class, status detail, text keys] of the reply."""
    out = py_json(lab, ISCSI_LOGIN, address, session, target, methods)
    assert isinstance(out, list)
    return out


def test_iscsi_open_target(lab: Lab) -> None:
    done = lab.exec_agent_ns(
        ["nmap", "-Pn", "-n", "-p", "3260", "--script", "iscsi-info", topology.GATEWAY],
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert topology.ISCSI_TARGET in done.stdout
    assert f"{topology.GATEWAY}:3260" in done.stdout
    for args in (("Discovery",), ("Normal", topology.ISCSI_TARGET)):
        opcode, klass, detail, keys = iscsi_login(lab, topology.GATEWAY, *args)
        # 0x23: login response; class 0: success.
        assert (opcode, klass, detail) == (0x23, 0, 0), keys
        assert isinstance(keys, list)
        assert "AuthMethod=None" in keys


def test_iscsi_chap_portal_rejects_logins_without_chap(lab: Lab) -> None:
    for args in (("Discovery",), ("Normal", topology.ISCSI_CHAP_TARGET)):
        opcode, klass, detail, keys = iscsi_login(lab, topology.GATEWAY_CHAP, *args)
        # Class 2 (initiator error), detail 1: authentication failure.
        assert (opcode, klass, detail) == (0x23, 2, 1), args
        assert isinstance(keys, list)
        assert "AuthMethod=Reject" in keys
    # An initiator that offers CHAP is taken on to the CHAP exchange.
    opcode, klass, detail, keys = iscsi_login(
        lab, topology.GATEWAY_CHAP, "Discovery", "", "CHAP,None"
    )
    assert (opcode, klass, detail) == (0x23, 0, 0)
    assert isinstance(keys, list)
    assert "AuthMethod=CHAP" in keys


# -- SMB ------------------------------------------------------------------


def smbclient(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return lab.exec_agent_ns(["smbclient", "-N", *args], timeout=30)


def test_smb_share(lab: Lab) -> None:
    listing = smbclient(lab, "-L", f"//{topology.GATEWAY}")
    assert listing.returncode == 0, listing.stderr
    assert topology.SMB_SHARE in listing.stdout
    share = f"//{topology.GATEWAY}/{topology.SMB_SHARE}"
    files = smbclient(lab, "-m", "SMB3", share, "-c", "ls")
    assert files.returncode == 0, files.stderr
    assert "README.txt" in files.stdout
    # The healthy gateway refuses SMB1.
    old = smbclient(
        lab,
        "-m",
        "NT1",
        "--option=client min protocol=NT1",
        "-L",
        f"//{topology.GATEWAY}",
    )
    assert old.returncode != 0


def test_smb1_only_server(lab: Lab) -> None:
    nt1 = ("-m", "NT1", "--option=client min protocol=NT1")
    listing = smbclient(lab, *nt1, "-L", f"//{topology.GATEWAY_SMB1}")
    assert listing.returncode == 0, listing.stderr
    assert topology.SMB_SHARE in listing.stdout
    smb3 = smbclient(lab, "-m", "SMB3", "-L", f"//{topology.GATEWAY_SMB1}")
    assert smb3.returncode != 0
    assert "NT_STATUS_CONNECTION_DISCONNECTED" in smb3.stdout + smb3.stderr


# -- NFS ------------------------------------------------------------------


def test_rpcinfo_lists_nfs_and_mountd(lab: Lab) -> None:
    done = lab.exec_agent_ns(["rpcinfo", "-p", topology.GATEWAY])
    assert done.returncode == 0, done.stderr
    rows = {tuple(line.split()[:4]) for line in done.stdout.splitlines()}
    protos = ("tcp", "udp") if topology.NFS_UDP else ("tcp",)
    for proto in protos:
        assert ("100003", "3", proto, "2049") in rows
        assert ("100003", "4", proto, "2049") in rows
        assert ("100005", "3", proto, "20048") in rows
    if not topology.NFS_UDP:
        assert not any(r[0] in ("100003", "100005") and r[2] == "udp" for r in rows)
        return
    # A NULL call over UDP, the way an NFS client checks the server.
    for program in ("nfs", "mountd"):
        null = lab.exec_agent_ns(["rpcinfo", "-u", topology.GATEWAY, program, "3"])
        assert "ready and waiting" in null.stdout, null.stderr


def test_nfs_export(lab: Lab) -> None:
    # showmount comes with nfs-common, which the lab does not need.
    if shutil.which("showmount", path=SBIN_PATH):
        shown = lab.exec_agent_ns(["showmount", "-e", topology.GATEWAY])
        assert shown.returncode == 0, shown.stderr
        assert topology.NFS_EXPORT in shown.stdout
    url = f"nfs://{topology.GATEWAY}{topology.NFS_EXPORT}"
    for query in ("", "?version=4"):
        listing = lab.exec_agent_ns(["nfs-ls", url + query])
        assert listing.returncode == 0, (query, listing.stderr)
        assert "README.txt" in listing.stdout


# -- directory ------------------------------------------------------------

SRV_QUERY = """
    import json, sys
    import dns.resolver
    out = {}
    for name in sys.argv[1:]:
        try:
            answer = dns.resolver.resolve(name, "SRV")
            out[name] = [[str(r.target).rstrip("."), r.port]
                         for r in answer]
        except dns.resolver.NXDOMAIN:
            out[name] = "NXDOMAIN"
    print(json.dumps(out))
"""


def test_dns_domain_controller_records(lab: Lab) -> None:
    dc = [[topology.DC_NAME, 389]]
    expected: dict[str, object] = {
        "_ldap._tcp.dc._msdcs.lab.test": dc,
        "_ldap._tcp.lab.test": dc,
        "_ldap._tcp.dc._msdcs.other.test": "NXDOMAIN",
        "_ldap._tcp.other.test": dc,
        "_ldap._tcp.dc._msdcs.nodc.test": "NXDOMAIN",
        "_ldap._tcp.nodc.test": "NXDOMAIN",
    }
    assert py_json(lab, SRV_QUERY, *expected) == expected
    out = py_json(lab, RESOLVE, topology.DC_NAME)
    assert isinstance(out, dict)
    assert out[topology.DC_NAME] == [topology.DC]


def ldapsearch(lab: Lab, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return lab.exec_agent_ns(
        [
            "env",
            f"LDAPTLS_CACERT={lab.ca_bundle}",
            "ldapsearch",
            "-x",
            "-LLL",
            "-o",
            "nettimeout=5",
            "-H",
            url,
            *args,
        ],
        timeout=30,
    )


def test_ldap_root_dse(lab: Lab) -> None:
    for url in (
        f"ldap://{topology.DC}",
        f"ldaps://{topology.DC_NAME}",
        f"ldaps://{topology.DC}",
    ):
        done = ldapsearch(
            lab, url, "-s", "base", "-b", "", "namingContexts", "supportedLDAPVersion"
        )
        assert done.returncode == 0, (url, done.stderr)
        assert f"namingContexts: {topology.LDAP_SUFFIX}" in done.stdout
        assert "supportedLDAPVersion: 3" in done.stdout
    tree = ldapsearch(
        lab, f"ldap://{topology.DC}", "-b", topology.LDAP_SUFFIX, "(ou=Users)", "dn"
    )
    assert f"dn: ou=Users,{topology.LDAP_SUFFIX}" in tree.stdout
    # Only the good CA vouches for the certificate.
    foreign = lab.exec_agent_ns(
        [
            "env",
            f"LDAPTLS_CACERT={lab.inspect_ca}",
            "ldapsearch",
            "-x",
            "-H",
            f"ldaps://{topology.DC_NAME}",
            "-s",
            "base",
            "-b",
            "",
        ]
    )
    assert foreign.returncode != 0


def test_netbios_node_status(lab: Lab) -> None:
    done = lab.exec_agent_ns(["nmblookup", "-A", topology.DC])
    assert done.returncode == 0, done.stderr
    names = {
        tuple(line.split()[:2])
        for line in done.stdout.splitlines()
        if "<ACTIVE>" in line
    }
    assert (topology.DC_NETBIOS_NAME, "<00>") in names
    assert (topology.NETBIOS_WORKGROUP, "<00>") in names


# -- impostor -------------------------------------------------------------


def test_impostor_speaks_ssh_everywhere(lab: Lab, faults: None) -> None:
    for port in topology.IMPOSTOR_TCP_PORTS:
        out = connect(lab, topology.IMPOSTOR, port)
        assert out.startswith("connected SSH-2.0-"), port
    # Its faults live in its own namespace and still work.
    lab.fault("reset", topology.IMPOSTOR, 3260)
    assert connect(lab, topology.IMPOSTOR, 3260) == "ECONNREFUSED"
    lab.clear_faults()
    assert connect(lab, topology.IMPOSTOR, 3260).startswith("connected SSH-2.0-")


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
    out = py_json(lab, PROXY_CONNECT, proxy, US_EAST, auth, str(lab.ca_bundle))
    assert isinstance(out, list)
    return out


def test_proxies(lab: Lab) -> None:
    assert proxy_connect(lab, topology.PROXY) in ([200, "TLSv1.3"], [200, "TLSv1.2"])
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
    got = http_get(lab, topology.GATEWAY, "/?activationRegion=us-east-1&no_redirect")
    assert got == [200, None, key]
    for query, region in (
        ("?activationRegion=us-east-1", "us-east-1"),
        ("?activationRegion=eu-west-1", "eu-west-1"),
        ("", "us-east-1"),
    ):
        location = f"http://lab.test/?activationKey={key}&activationRegion={region}"
        got = http_get(lab, topology.GATEWAY, f"/{query}")
        assert got[:2] == [302, location]
    broken = http_get(
        lab, topology.GATEWAY_BROKEN, "/?activationRegion=us-east-1&no_redirect"
    )
    assert broken == [200, None, topology.BROKEN_GATEWAY_BODY]


# -- lab housekeeping -----------------------------------------------------


def test_netns_resolv_conf(lab: Lab) -> None:
    for ns in (lab.agent_ns, lab.server_ns, lab.impostor_ns):
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
    stale = [f"sgwr{child.pid}{role}" for role in "asi"]
    for ns in stale:
        lab_netns.run(["ip", "netns", "add", ns])
    removed = lab_netns.remove_stale(os.getpid())
    assert set(stale) <= set(removed)
    assert not set(stale) & set(lab_netns.list_namespaces())
