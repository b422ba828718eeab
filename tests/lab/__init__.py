"""Network test lab for sgw-reach: real servers in network namespaces.

`Lab` starts an agent namespace and a server namespace holding DNS, NTP,
HTTPS, SSH, HTTP and proxy servers, each address playing one healthy or
faulty part (see `topology`).  `fixtures` has the pytest fixtures.

Limits: Linux only, needs root and the Debian packages dnsmasq-base,
chrony, faketime, nginx-light, openssh-server, tinyproxy, nftables and
iproute2.
"""

from __future__ import annotations

from . import topology
from .errors import LabError, LabUnsupported
from .lab import Lab

__all__ = ["Lab", "LabError", "LabUnsupported", "topology"]
