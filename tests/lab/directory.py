"""The stand-in domain controller on DC: slapd (LDAP, LDAPS) and nmbd.

slapd serves LDAP_SUFFIX from an mdb database loaded with slapadd at
build time, LDAPS with the DC_NAME certificate.  nmbd answers NetBIOS
name queries and node status requests for DC_NETBIOS_NAME in workgroup
NETBIOS_WORKGROUP.

Limits: no Kerberos, no SMB, no AD schema: enough for reachability and
root-DSE probes, not for a domain join.  nmbd binds 0.0.0.0:137/138 as
well as DC's (for broadcasts), so UDP 137/138 to any server address
reaches it.
"""

from __future__ import annotations

from . import configs, netns, storage_conf, topology
from .builder import Builder
from .certs import Pki
from .procs import Daemon

BINARIES = ("slapd", "slapadd", "nmbd")


def ldap(b: Builder, pki: Pki) -> None:
    """slapd on DC ports 389 and 636."""
    database = b.dir("slapd-db")
    conf = b.conf("slapd", configs.slapd(b.workdir, pki, database))
    ldif = b.workdir / "conf" / "base.ldif"
    ldif.write_text(configs.ldap_base_entries(), encoding="utf-8")
    # -q: no consistency checks, for a database made a moment ago.
    netns.run([b.bins["slapadd"], "-q", "-f", str(conf), "-l", str(ldif)])
    urls = f"ldap://{topology.DC}/ ldaps://{topology.DC}/"
    # -d 256 (stats): stay in the foreground, one log line per request.
    argv = [b.bins["slapd"], "-d", "256", "-f", str(conf), "-h", urls]
    b.daemon("slapd", argv, conf)
    for port in (389, 636):
        b.check("slapd", "tcp", topology.DC, port)


def netbios(b: Builder) -> None:
    """nmbd for DC: NetBIOS name service on UDP 137 (and 138)."""
    binds = storage_conf.samba_dirs(b.dir("nmbd"))
    conf = b.conf("nmbd", storage_conf.nmbd(b.workdir / "nmbd"))
    argv = [
        b.bins["nmbd"],
        "-F",
        "--no-process-group",
        "--debug-stdout",
        "-s",
        str(conf),
    ]
    b.add(Daemon("nmbd", argv, str(conf), b.log("nmbd"), binds=binds))
    b.check("nmbd", "nbstat", topology.DC, 137)
