"""Network test lab for sgw-reach: real servers in network namespaces.

`Lab` starts an agent namespace, a server namespace holding DNS, NTP,
HTTPS, SSH, HTTP, proxy, iSCSI, SMB, NFS, LDAP and NetBIOS servers, and
an impostor namespace (SSH on the storage ports), each address playing
one healthy or faulty part (see `topology`).  `MultiHopLab` routes a
client through two routers to a far gateway host, with faults and MTUs
set per router (see `multihop`).  `fixtures` has the pytest fixtures.

Limits: Linux only, needs root and the Debian packages dnsmasq-base,
chrony, faketime, nginx-light, openssh-server, tinyproxy, tgt, samba,
rpcbind, nfs-ganesha, nfs-ganesha-vfs, slapd, nftables and iproute2
(clients for the lab's own tests: smbclient, ldap-utils, libnfs-utils,
nmap).
"""

from __future__ import annotations

from . import topology
from .errors import LabError, LabUnsupported
from .lab import Lab
from .multihop import MultiHopLab

__all__ = ["Lab", "LabError", "LabUnsupported", "MultiHopLab", "topology"]
