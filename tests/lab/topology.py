"""Addresses, names and DNS data of the network test lab.

Everything here is plain data: which address plays which part, which
names resolve where, and the fixed answers the fake servers give.  Tests
import these constants instead of repeating literal addresses.

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
GATEWAY = "10.231.0.80"
GATEWAY_BROKEN = "10.231.0.81"
PROXY = "10.231.0.88"
PROXY_AUTH = "10.231.0.89"
PROXY_NO_CONNECT = "10.231.0.90"
CLOSED = "10.231.0.99"

# The first address becomes the primary one on the server veth; the
# others are added after it and so become secondary addresses.
SERVER_ADDRS: tuple[str, ...] = (
    DNS, NTP_GOOD, NTP_FAST, NTP_UNSYNC,
    TLS_GOOD, TLS_INSPECT, TLS_EXPIRED, TLS_WRONG_NAME,
    SSH, NOT_SSH, GATEWAY, GATEWAY_BROKEN,
    PROXY, PROXY_AUTH, PROXY_NO_CONNECT, CLOSED,
)

FAKE_CLOCK_OFFSET_S = 300
PROXY_PORT = 8080
PROXY_USER = "labuser"
PROXY_PASSWORD = "labpass"
GATEWAY_TCP_PORTS: tuple[int, ...] = (111, 139, 445, 2049, 3260, 20048)
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

LAB_HOSTS: dict[str, str] = {
    "gateway.lab.test": GATEWAY,
    "ssh.lab.test": SSH,
    "ntp.lab.test": NTP_GOOD,
    "proxy.lab.test": PROXY,
}

# Zones dnsmasq treats as its own: a name under them that has no record
# gets NXDOMAIN instead of being forwarded (there is no upstream).
LOCAL_ZONES: tuple[str, ...] = (
    "amazonaws.com", "cloudfront.net", "amazon.com", "lab.test",
)


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
