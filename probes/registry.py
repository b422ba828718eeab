"""The one registry of probes: the names the matrix may use, and their code.

Importing this module imports every probe module, none of which pulls in
anything slow (scapy is never imported from here).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from probes import activation, dns, ntp, port, proxy, ssh, tls
from probes.base import Probe

PROBES: Mapping[str, Probe] = MappingProxyType(
    {
        "activation": activation.probe,
        "dns": dns.probe,
        "ntp": ntp.probe,
        "proxy": proxy.probe,
        "ssh": ssh.probe,
        "tcp": port.probe_tcp,
        "tls": tls.probe,
        "udp-path": port.probe_udp_path,
    }
)
