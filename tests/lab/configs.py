"""Configuration files for the lab's daemons, rendered as text.

Each function returns the whole file for one daemon instance; paths
inside point into the lab's work directory so nothing on the host is
read or written (no /etc, /var/log or /run pid files).

Limits: the configs are tuned for a lab, not for safety: every daemon
runs as root inside its namespace, nginx serves only canned answers and
the LDAP directory is readable by anyone.
"""

from __future__ import annotations

from pathlib import Path

from . import topology
from .certs import Pki


def dnsmasq(workdir: Path) -> str:
    """dnsmasq as the only resolver, answering from its own records."""
    lines = [
        "no-resolv",
        "no-hosts",
        "no-poll",
        f"listen-address={topology.DNS}",
        # Without bind-interfaces dnsmasq binds the wildcard address and
        # would also answer on every other lab address.
        "bind-interfaces",
        "user=root",
        # An empty pid-file keeps dnsmasq away from /run/dnsmasq.
        "pid-file=",
        "log-queries",
        "log-facility=-",
        "local-ttl=30",
    ]
    lines += [f"local=/{zone}/" for zone in topology.LOCAL_ZONES]
    # "#" matches every domain: names outside the lab zones get
    # NXDOMAIN too, where dnsmasq would otherwise answer REFUSED.
    lines.append("local=/#/")
    lines += [
        f"host-record={name},{address}"
        for name, address in sorted(topology.dns_records().items())
    ]
    lines += [
        f"srv-host={name},{target},{port}"
        for name, (target, port) in sorted(topology.SRV_RECORDS.items())
    ]
    return "\n".join(lines) + "\n"


def chrony(workdir: Path, address: str, *, synchronised: bool) -> str:
    """One chronyd serving NTP on `address` only.

    Without `local` and without sources chronyd still answers clients,
    but marks itself unsynchronised (leap 3, stratum 0).
    """
    lines = [
        f"bindaddress {address}",
        "port 123",
        "allow all",
        # No command socket: several chronyd instances would fight over
        # /run/chrony/chronyd.sock.
        "cmdport 0",
        f"pidfile {workdir}/chrony-{address}.pid",
    ]
    if synchronised:
        lines.append("local stratum 8")
    return "\n".join(lines) + "\n"


def sshd(
    workdir: Path,
    pki: Pki,
    *,
    name: str = "sshd",
    listen: tuple[tuple[str, int], ...] = ((topology.SSH, 22),),
) -> str:
    """OpenSSH that shows its banner but lets nobody log in.

    `listen`: (address, port) pairs; `name` keeps pid files apart.
    """
    return (
        "\n".join(
            [
                *(f"ListenAddress {address}:{port}" for address, port in listen),
                f"HostKey {pki.ssh_host_key}",
                f"PidFile {workdir}/{name}.pid",
                "UsePAM no",
                "PermitRootLogin no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "AuthorizedKeysFile none",
                "UseDNS no",
                "LoginGraceTime 10",
                # Probes open many short connections; the default 10:30:100
                # would start dropping them.
                "MaxStartups 100",
                "LogLevel VERBOSE",
            ]
        )
        + "\n"
    )


def slapd(workdir: Path, pki: Pki, database: Path) -> str:
    """slapd.conf: one mdb database under LDAP_SUFFIX, LDAPS by `pki`.

    Anyone may read everything, the root DSE and schema included, as
    an AD domain controller lets anonymous clients read its root DSE.
    """
    return (
        "\n".join(
            [
                *(
                    f"include /etc/ldap/schema/{name}.schema"
                    for name in ("core", "cosine", "inetorgperson")
                ),
                f"pidfile {workdir}/slapd.pid",
                f"argsfile {workdir}/slapd.args",
                "modulepath /usr/lib/ldap",
                "moduleload back_mdb",
                f"TLSCertificateFile {pki.dc.cert}",
                f"TLSCertificateKeyFile {pki.dc.key}",
                'access to dn.base="" by * read',
                'access to dn.base="cn=Subschema" by * read',
                "access to * by * read",
                "database mdb",
                # The map is sparse; 16 MiB is plenty for a few entries.
                "maxsize 16777216",
                f'suffix "{topology.LDAP_SUFFIX}"',
                f'rootdn "cn=admin,{topology.LDAP_SUFFIX}"',
                f"directory {database}",
            ]
        )
        + "\n"
    )


def ldap_base_entries() -> str:
    """LDIF of the suffix entry and one organisational unit."""
    suffix = topology.LDAP_SUFFIX
    return (
        f"dn: {suffix}\n"
        "objectClass: dcObject\n"
        "objectClass: organization\n"
        f"dc: {suffix.split(',')[0].removeprefix('dc=')}\n"
        "o: sgw-reach lab\n"
        "\n"
        f"dn: ou=Users,{suffix}\n"
        "objectClass: organizationalUnit\n"
        "ou: Users\n"
    )


def tinyproxy(
    workdir: Path,
    address: str,
    *,
    connect_ports: tuple[int, ...],
    basic_auth: tuple[str, str] | None = None,
) -> str:
    """tinyproxy on `address`:8080 allowing CONNECT to `connect_ports`."""
    lines = [
        f"Listen {address}",
        f"Port {topology.PROXY_PORT}",
        "Timeout 30",
        "MaxClients 50",
        f'PidFile "{workdir}/tinyproxy-{address}.pid"',
        "LogLevel Info",
        "DisableViaHeader Yes",
    ]
    lines += [f"ConnectPort {port}" for port in connect_ports]
    if basic_auth is not None:
        lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
    return "\n".join(lines) + "\n"
