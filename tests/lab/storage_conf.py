"""Configuration of the storage and NetBIOS servers, rendered as text.

smb.conf for each smbd and for nmbd, ganesha.conf for nfs-ganesha, and
the tgtadm commands that build the iSCSI targets.  Every path points
into the instance's own directory of the lab work directory.

Limits: Samba 4.17 and nfs-ganesha 4.3 option names (Debian 12).
Samba writes some paths whatever smb.conf says, so each Samba daemon
gets private /run and /var/log mounts (see `samba_dirs`).
"""

from __future__ import annotations

from pathlib import Path

from . import topology

# smb.conf parameter -> subdirectory of the instance's home.
_SAMBA_DIRS: dict[str, str] = {
    "private dir": "private",
    "lock directory": "lock",
    "state directory": "state",
    "cache directory": "cache",
    "pid directory": "pid",
    "ncalrpc dir": "ncalrpc",
    "binddns dir": "binddns",
}


# Paths Samba writes whatever smb.conf says (samba-dcerpcd's logs under
# /var/log/samba, nmbd's socket under /run/samba/nmbd): each instance
# gets these host directories privately, with a "samba" subdirectory.
SAMBA_PRIVATE_MOUNTS = ("/run", "/var/log")


def samba_dirs(home: Path) -> tuple[tuple[str, str], ...]:
    """Make an instance's directories; return its private bind mounts.

    The mounts are (directory in `home`, host path) pairs for
    `procs.Daemon.binds`.
    """
    for name in _SAMBA_DIRS.values():
        (home / name).mkdir(parents=True, exist_ok=True)
    binds: list[tuple[str, str]] = []
    for host_path in SAMBA_PRIVATE_MOUNTS:
        mine = home / "private-mounts" / host_path.strip("/")
        (mine / "samba").mkdir(parents=True, exist_ok=True)
        binds.append((str(mine), host_path))
    return tuple(binds)


def _samba_global(home: Path, address: str, netbios_name: str) -> list[str]:
    return [
        "[global]",
        "server role = standalone server",
        f"workgroup = {topology.NETBIOS_WORKGROUP}",
        f"netbios name = {netbios_name}",
        # Only this address: several instances share the namespace.
        f"interfaces = {address}",
        "bind interfaces only = yes",
        *(f"{param} = {home / sub}" for param, sub in _SAMBA_DIRS.items()),
        f"log file = {home / 'samba.log'}",
        "load printers = no",
        "printing = bsd",
        "printcap name = /dev/null",
        "disable spoolss = yes",
        "usershare path =",
    ]


def smbd(home: Path, address: str, share: Path, *, smb1_only: bool) -> str:
    """smb.conf of one standalone smbd on `address` ports 445 and 139.

    One guest share SMB_SHARE; SMB2_02 to SMB3 unless `smb1_only`, then
    NT1 alone.  Guests act as root on the share: the work directory is
    root's alone.
    """
    if smb1_only:
        protocols = ["server min protocol = NT1", "server max protocol = NT1"]
        name = "SGW-LAB-SMB1"
    else:
        protocols = ["server min protocol = SMB2_02"]
        name = "SGW-LAB"
    lines = [
        *_samba_global(home, address, name),
        "smb ports = 445 139",
        *protocols,
        "map to guest = Bad User",
        "guest account = nobody",
        f"passdb backend = tdbsam:{home / 'private' / 'passdb.tdb'}",
        f"[{topology.SMB_SHARE}]",
        f"path = {share}",
        "read only = no",
        "guest ok = yes",
        "force user = root",
    ]
    return "\n".join(lines) + "\n"


def nmbd(home: Path) -> str:
    """smb.conf of nmbd answering NetBIOS name service for the DC.

    It never tries to become a browse master: no elections, no
    broadcast traffic beyond registering its own names.
    """
    lines = [
        *_samba_global(home, topology.DC, topology.DC_NETBIOS_NAME),
        "local master = no",
        "domain master = no",
        "preferred master = no",
    ]
    return "\n".join(lines) + "\n"


def ganesha(home: Path, export: Path, *, udp: bool) -> str:
    """ganesha.conf: NFS v3/v4 of `export` on GATEWAY, mountd on 20048.

    The v3 mount path is the pseudo path NFS_EXPORT, as for v4.  No
    NLM or rquota (no rpc.statd here), no grace period at start.
    """
    transports = "TCP, UDP" if udp else "TCP"
    return f"""\
NFS_CORE_PARAM {{
    Bind_Addr = {topology.GATEWAY};
    NFS_Port = 2049;
    MNT_Port = 20048;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = {str(udp).lower()};
    Protocols = 3, 4;
    Mount_Path_Pseudo = true;
}}
NFSV4 {{
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = {home / "recovery"};
}}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1;
    Path = {export};
    Pseudo = {topology.NFS_EXPORT};
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    Protocols = 3, 4;
    Transports = {transports};
    FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = EVENT; }}
"""


def tgt_target(tgtadm: str, target: str, lun: Path) -> list[list[str]]:
    """tgtadm commands: target 1 named `target`, LUN 1 on `lun`, open
    to every initiator."""
    base = [tgtadm, "--lld", "iscsi"]
    return [
        [
            *base,
            "--mode",
            "target",
            "--op",
            "new",
            "--tid",
            "1",
            "--targetname",
            target,
        ],
        [
            *base,
            "--mode",
            "logicalunit",
            "--op",
            "new",
            "--tid",
            "1",
            "--lun",
            "1",
            "--backing-store",
            str(lun),
        ],
        [*base, "--mode", "target", "--op", "bind", "--tid", "1", "-I", "ALL"],
    ]


def tgt_chap(tgtadm: str) -> list[list[str]]:
    """tgtadm commands requiring CHAP for target 1 and for discovery.

    An account bound without --tid is the discovery account, and it
    holds for every portal of that tgtd: hence a tgtd of its own.
    """
    base = [tgtadm, "--lld", "iscsi", "--mode", "account"]
    user = topology.ISCSI_CHAP_USER
    return [
        [
            *base,
            "--op",
            "new",
            "--user",
            user,
            "--password",
            topology.ISCSI_CHAP_SECRET,
        ],
        [*base, "--op", "bind", "--tid", "1", "--user", user],
        [*base, "--op", "bind", "--user", user],
    ]


def tgt_stop(tgtadm: str) -> list[list[str]]:
    """tgtadm commands that make tgtd exit (it ignores SIGTERM)."""
    base = [tgtadm, "--lld", "iscsi"]
    return [
        [*base, "--mode", "target", "--op", "delete", "--force", "--tid", "1"],
        [*base, "--mode", "system", "--op", "delete"],
    ]
