"""Addresses, names and DNS data of the network test lab.

Everything here is plain data: which address plays which part, which
names resolve where, and the fixed answers the fake servers give.  Tests
import these constants instead of repeating literal addresses.

Who listens where (all TCP unless marked):

* DNS 53 tcp+udp, NTP 123 udp (good, 5 min fast, unsynchronised), HTTPS
  443 (good, inspecting CA, expired, wrong name), SSH 22, not-SSH 22,
  proxies 8080: see the constants below;
* GATEWAY: activation answers on 80 (nginx), iSCSI 3260 (tgtd, target
  ISCSI_TARGET, no CHAP), SMB 139/445 (smbd, SMB2/3, guest share
  SMB_SHARE), portmapper 111 (rpcbind, on every server address), NFS
  v3/v4 2049 and mountd 20048 (nfs-ganesha, export NFS_EXPORT); all
  three on UDP too while NFS_UDP is True;
* GATEWAY_BROKEN: a wrong activation answer on 80;
* GATEWAY_CHAP: iSCSI 3260 (a second tgtd) refusing every login, the
  discovery login included, that offers no CHAP credentials;
* GATEWAY_SMB1: SMB 139/445 speaking SMB1 (NT1) only;
* IMPOSTOR: sshd on every storage and directory port, in a namespace
  of its own (see `netns`), so each of those probes meets SSH;
* DC: LDAP 389 and LDAPS 636 (slapd, suffix LDAP_SUFFIX, certificate
  for DC_NAME and DC from the good CA), NetBIOS name service 137 udp
  (nmbd as DC_NETBIOS_NAME; also 138 udp; its wildcard sockets receive
  137/138 on every server address).

Limits: IPv4 only, one /24 (10.231.0.0/24) shared by the agent and all
servers; the addresses exist only inside the lab's namespaces.
"""

from __future__ import annotations

import ipaddress

SUBNET = ipaddress.IPv4Network("10.231.0.0/24")
PREFIX_LEN = SUBNET.prefixlen

AGENT = "10.231.0.2"

DNS = "10.231.0.53"
NTP_GOOD = "10.231.0.123"
NTP_FAST = "10.231.0.124"
NTP_UNSYNC = "10.231.0.125"
TLS_GOOD = "10.231.0.43"
TLS_INSPECT = "10.231.0.44"
TLS_EXPIRED = "10.231.0.45"
TLS_WRONG_NAME = "10.231.0.46"
SSH = "10.231.0.22"
NOT_SSH = "10.231.0.23"
DC = "10.231.0.70"
GATEWAY = "10.231.0.80"
GATEWAY_BROKEN = "10.231.0.81"
GATEWAY_CHAP = "10.231.0.82"
GATEWAY_SMB1 = "10.231.0.83"
IMPOSTOR = "10.231.0.84"
PROXY = "10.231.0.88"
PROXY_AUTH = "10.231.0.89"
PROXY_NO_CONNECT = "10.231.0.90"
CLOSED = "10.231.0.99"

# The first address becomes the primary one on the server bridge; the
# others are added after it and so become secondary addresses.
SERVER_ADDRS: tuple[str, ...] = (
    DNS,
    NTP_GOOD,
    NTP_FAST,
    NTP_UNSYNC,
    TLS_GOOD,
    TLS_INSPECT,
    TLS_EXPIRED,
    TLS_WRONG_NAME,
    SSH,
    NOT_SSH,
    DC,
    GATEWAY,
    GATEWAY_BROKEN,
    GATEWAY_CHAP,
    GATEWAY_SMB1,
    PROXY,
    PROXY_AUTH,
    PROXY_NO_CONNECT,
    CLOSED,
)
# Addresses of the impostor namespace: on the same /24, but away from
# the wildcard sockets of the server namespace (rpcbind's TCP 111).
IMPOSTOR_ADDRS: tuple[str, ...] = (IMPOSTOR,)

FAKE_CLOCK_OFFSET_S = 300
PROXY_PORT = 8080
PROXY_USER = "labuser"
PROXY_PASSWORD = "labpass"
GATEWAY_TCP_PORTS: tuple[int, ...] = (111, 139, 445, 2049, 3260, 20048)
IMPOSTOR_TCP_PORTS: tuple[int, ...] = (111, 139, 389, 445, 636, 2049, 3260, 20048)
# Whether rpcbind and nfs-ganesha also listen on UDP on GATEWAY (111,
# 2049, 20048).  Off, the kernel answers those ports with ICMP
# port-unreachable instead: what a gateway without NFS over UDP shows.
NFS_UDP = True
NFS_EXPORT = "/lab-bucket"
SMB_SHARE = "lab-bucket"
ISCSI_TARGET = "iqn.1997-05.com.amazon:sgw-lab-vol1"
ISCSI_CHAP_TARGET = "iqn.1997-05.com.amazon:sgw-lab-chapvol"
ISCSI_CHAP_USER = "labchap"
ISCSI_CHAP_SECRET = "labchapsecret1"
ACTIVATION_KEY = "ABCD1-EFGH2-IJKL3-MNOP4-QRST5"
DEFAULT_ACTIVATION_REGION = "us-east-1"
BROKEN_GATEWAY_BODY = "internal error"
WRONG_NAME = "wrong.lab.test"

# Region -> HTTPS server every endpoint name of that region resolves to.
REGION_TLS: dict[str, str] = {
    "us-east-1": TLS_GOOD,
    "us-west-2": TLS_INSPECT,
    "eu-west-1": TLS_EXPIRED,
    "eu-central-1": TLS_WRONG_NAME,
}
UNRESOLVED_REGION = "ap-southeast-2"
REGIONS: tuple[str, ...] = (*REGION_TLS, UNRESOLVED_REGION)

GLOBAL_NAMES: tuple[str, ...] = (
    "s3.amazonaws.com",
    "d4kdq0yaxexbo.cloudfront.net",
    "console.aws.amazon.com",
)

AD_DOMAIN = "lab.test"
# A domain whose DC is found only by the fallback SRV name, and one
# without any SRV record.
AD_FALLBACK_DOMAIN = "other.test"
AD_NO_DC_DOMAIN = "nodc.test"
DC_NAME = "dc.lab.test"
LDAP_SUFFIX = "dc=lab,dc=test"
DC_NETBIOS_NAME = "LABDC"
NETBIOS_WORKGROUP = "LAB"

LAB_HOSTS: dict[str, str] = {
    DC_NAME: DC,
    "gateway.lab.test": GATEWAY,
    "ssh.lab.test": SSH,
    "ntp.lab.test": NTP_GOOD,
    "proxy.lab.test": PROXY,
}

# Zones dnsmasq treats as its own: a name under them that has no record
# gets NXDOMAIN instead of being forwarded (there is no upstream).
LOCAL_ZONES: tuple[str, ...] = (
    "amazonaws.com",
    "cloudfront.net",
    "amazon.com",
    AD_DOMAIN,
    AD_FALLBACK_DOMAIN,
    AD_NO_DC_DOMAIN,
)

# SRV name -> (target, port): how a client finds the domain controller.
SRV_RECORDS: dict[str, tuple[str, int]] = {
    f"_ldap._tcp.dc._msdcs.{AD_DOMAIN}": (DC_NAME, 389),
    f"_ldap._tcp.{AD_DOMAIN}": (DC_NAME, 389),
    f"_ldap._tcp.{AD_FALLBACK_DOMAIN}": (DC_NAME, 389),
}


def endpoint_names(region: str) -> tuple[str, ...]:
    """Every AWS endpoint name the agent may contact for `region`."""
    sgw = f"storagegateway.{region}.amazonaws.com"
    return (
        f"anon-cp.{sgw}",
        f"client-cp.{sgw}",
        f"proxy-app.{sgw}",
        f"dp-1.{sgw}",
        sgw,
        f"s3.{region}.amazonaws.com",
        f"lab-bucket.s3.{region}.amazonaws.com",
    )


def all_endpoint_names() -> tuple[str, ...]:
    """Endpoint names of every region, resolvable or not, plus globals."""
    names: list[str] = []
    for region in REGIONS:
        names.extend(endpoint_names(region))
    names.extend(GLOBAL_NAMES)
    return tuple(names)


def dns_records() -> dict[str, str]:
    """Name -> IPv4 address for every A record the lab DNS serves."""
    records: dict[str, str] = {}
    for region, address in REGION_TLS.items():
        for name in endpoint_names(region):
            records[name] = address
    for name in GLOBAL_NAMES:
        records[name] = TLS_GOOD
    records.update(LAB_HOSTS)
    return records
