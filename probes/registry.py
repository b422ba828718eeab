"""The one registry of probes: the names the matrix may use, and their code.

Importing this module imports every probe module, none of which pulls in
anything slow (scapy is never imported from here).
"""

from __future__ import annotations

from collections.abc import Mapping
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
