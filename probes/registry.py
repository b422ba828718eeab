"""The one registry of probes: the names the matrix may use, and their code.

``udp_request`` gives the first datagram a UDP probe sends, so that path
diagnostics on a UDP rule send what the probe sends: a firewall that
inspects payloads (DNS, NTP) treats the trace as it treats the probe.

Importing this module imports every probe module, none of which pulls in
anything slow (scapy is never imported from here).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from types import MappingProxyType

from probes import (
    activation,
    dns,
    iscsi,
    ldap,
    netbios,
    ntp,
    port,
    proxy,
    rpc,
    smb,
    ssh,
    tls,
)
from probes.base import Probe
from probes.oncrpc import (
    MOUNT_PROG,
    MOUNT_VERS,
    NFS_PROG,
    PMAP_PROG,
    PMAP_VERS,
    null_call,
)

PROBES: Mapping[str, Probe] = MappingProxyType(
    {
        "activation": activation.probe,
        "dns": dns.probe,
        "iscsi": iscsi.probe,
        "ldap": ldap.probe_ldap,
        "ldaps": ldap.probe_ldaps,
        "mountd": rpc.probe_mountd,
        "nbns": netbios.probe_name_status,
        "nfs": rpc.probe_nfs,
        "ntp": ntp.probe,
        "portmap": rpc.probe_portmap,
        "proxy": proxy.probe,
        "smb": smb.probe_direct,
        "smb-netbios": smb.probe_netbios_session,
        "ssh": ssh.probe,
        "tcp": port.probe_tcp,
        "tls": tls.probe,
        "udp-path": port.probe_udp_path,
    }
)

_TCP = frozenset({"tcp"})
_UDP = frozenset({"udp"})
_BOTH = _TCP | _UDP

# The transports each probe speaks, for the matrix's consistency check.
TRANSPORTS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "activation": _TCP,
        "dns": _BOTH,
        "iscsi": _TCP,
        "ldap": _TCP,
        "ldaps": _TCP,
        "mountd": _BOTH,
        "nbns": _UDP,
        "nfs": _BOTH,
        "ntp": _UDP,
        "portmap": _BOTH,
        "proxy": _TCP,
        "smb": _TCP,
        "smb-netbios": _TCP,
        "ssh": _TCP,
        "tcp": _TCP,
        "tls": _TCP,
        "udp-path": _UDP,
    }
)

# The name the DNS probe's diagnostic datagram asks for: any name does
# for the path, and this one every resolver the gateway uses must know.
_DIAGNOSTIC_NAME = "amazonaws.com"
_NFS_V3 = 3


def _rpc_null(prog: int, vers: int) -> Callable[[], bytes]:
    return lambda: null_call(secrets.randbits(32), prog, vers).encode()


_UDP_REQUESTS: Mapping[str, Callable[[], bytes]] = MappingProxyType(
    {
        "dns": lambda: dns.make_query(_DIAGNOSTIC_NAME).to_wire(),
        "ntp": lambda: ntp.build_request(secrets.randbits(64)),
        "nbns": lambda: netbios.node_status_request(secrets.randbelow(0x10000)),
        "portmap": _rpc_null(PMAP_PROG, PMAP_VERS),
        "nfs": _rpc_null(NFS_PROG, _NFS_V3),
        "mountd": _rpc_null(MOUNT_PROG, MOUNT_VERS),
    }
)


def udp_request(probe: str) -> bytes | None:
    """A fresh first datagram of the UDP probe named ``probe``, or None
    for a probe that sends no request of its own (``udp-path``)."""
    make = _UDP_REQUESTS.get(probe)
    return None if make is None else make()
