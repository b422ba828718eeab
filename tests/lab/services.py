"""Which daemons the lab runs, with what configs, and how to see them up.

`build` writes every config file into the work directory and returns
the daemons to start, the setup steps to run and the readiness checks
that prove each answers.  Storage servers live in `storage`, the
directory servers in `directory`.

Limits: binaries are looked up on PATH (plus /usr/sbin); libfaketime is
looked up in Debian's multiarch library directories only.
"""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

from . import configs, directory, nginx_conf, storage, topology
from .builder import Builder, Check, Step
from .certs import Pki
from .errors import LabUnsupported
from .procs import Daemon

BINARIES = (
    "ip",
    "nft",
    "sysctl",
    "mount",
    "dnsmasq",
    "chronyd",
    "nginx",
    "sshd",
    "tinyproxy",
    *storage.BINARIES,
    *directory.BINARIES,
)
_FAKETIME_GLOB = "/usr/lib/*/faketime/libfaketime.so.1"
_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

__all__ = ["Check", "Step", "build", "find_binaries"]


def find_binaries() -> dict[str, str]:
    """Absolute path of every binary the lab needs, or LabUnsupported."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for name in BINARIES:
        path = shutil.which(name, path=_SEARCH_PATH)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    libs = sorted(glob.glob(_FAKETIME_GLOB))
    if not libs:
        missing.append("libfaketime (package faketime)")
    else:
        found["libfaketime"] = libs[0]
    if missing:
        raise LabUnsupported(f"missing programs: {', '.join(missing)}")
    return found


def _dns(b: Builder) -> None:
    conf = b.conf("dnsmasq", configs.dnsmasq(b.workdir))
    b.daemon("dnsmasq", [b.bins["dnsmasq"], "-k", "-C", str(conf)], conf)
    b.check("dnsmasq", "dns-udp", topology.DNS, 53)
    b.check("dnsmasq", "dns-tcp", topology.DNS, 53)


def _ntp(b: Builder) -> None:
    faked = {
        "LD_PRELOAD": b.bins["libfaketime"],
        "FAKETIME": f"+{topology.FAKE_CLOCK_OFFSET_S // 60}m",
    }
    for address, synced, env in (
        (topology.NTP_GOOD, True, None),
        (topology.NTP_FAST, True, faked),
        (topology.NTP_UNSYNC, False, None),
    ):
        name = f"chronyd-{address.rsplit('.', 1)[1]}"
        conf = b.conf(name, configs.chrony(b.workdir, address, synchronised=synced))
        # -x: never touch the clock; -u root: stay able to read the
        # private work directory.
        argv = [b.bins["chronyd"], "-d", "-x", "-u", "root", "-f", str(conf)]
        b.daemon(name, argv, conf, env)
        b.check(name, "ntp", address, 123)


def _nginx(b: Builder, pki: Pki) -> None:
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (b.workdir / "nginx" / sub).mkdir(parents=True, exist_ok=True)
    conf = b.conf("nginx", nginx_conf.render(b.workdir, pki))
    log = b.workdir / "logs" / "nginx.log"
    # -e: nginx's built-in error log path is used before the config is
    # read; point it at the work directory too.
    argv = [
        b.bins["nginx"],
        "-e",
        str(log),
        "-p",
        f"{b.workdir}/nginx/",
        "-c",
        str(conf),
    ]
    b.daemon("nginx", argv, conf)
    for address in pki.leaves:
        b.check("nginx", "tcp", address, 443)
    b.check("nginx", "tcp", topology.NOT_SSH, 22)
    b.check("nginx", "tcp", topology.GATEWAY_BROKEN, 80)
    b.check("nginx", "tcp", topology.GATEWAY, 80)


def _sshd(b: Builder, pki: Pki) -> None:
    # Privilege separation needs this directory; it may be missing on
    # a host that never ran sshd.  Left in place at stop: it is shared.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    conf = b.conf("sshd", configs.sshd(b.workdir, pki))
    b.daemon("sshd", [b.bins["sshd"], "-D", "-e", "-f", str(conf)], conf)
    b.check("sshd", "tcp", topology.SSH, 22)


def _impostor(b: Builder, pki: Pki) -> None:
    # An SSH server on every storage and directory port, in the
    # impostor namespace, where no wildcard socket takes those ports.
    name = "sshd-impostor"
    listen = tuple((topology.IMPOSTOR, port) for port in topology.IMPOSTOR_TCP_PORTS)
    conf = b.conf(name, configs.sshd(b.workdir, pki, name=name, listen=listen))
    argv = [b.bins["sshd"], "-D", "-e", "-f", str(conf)]
    b.add(Daemon(name, argv, str(conf), b.log(name), host="impostor"))
    for port in topology.IMPOSTOR_TCP_PORTS:
        b.check(name, "tcp", topology.IMPOSTOR, port)


def _proxies(b: Builder) -> None:
    auth = (topology.PROXY_USER, topology.PROXY_PASSWORD)
    for address, ports, basic in (
        (topology.PROXY, (443,), None),
        (topology.PROXY_AUTH, (443,), auth),
        (topology.PROXY_NO_CONNECT, (563,), None),
    ):
        name = f"tinyproxy-{address.rsplit('.', 1)[1]}"
        conf = b.conf(
            name,
            configs.tinyproxy(
                b.workdir, address, connect_ports=ports, basic_auth=basic
            ),
        )
        b.daemon(name, [b.bins["tinyproxy"], "-d", "-c", str(conf)], conf)
        b.check(name, "tcp", address, topology.PROXY_PORT)


def build(
    workdir: Path, pki: Pki, bins: dict[str, str]
) -> tuple[list[Daemon], list[Step], list[Check]]:
    """Write all configs; return daemons, setup steps and checks."""
    (workdir / "logs").mkdir(exist_ok=True)
    b = Builder(workdir, bins)
    _dns(b)
    _ntp(b)
    _nginx(b, pki)
    _sshd(b, pki)
    _impostor(b, pki)
    _proxies(b)
    storage.iscsi(b)
    storage.smb(b)
    storage.nfs(b)
    directory.ldap(b, pki)
    directory.netbios(b)
    return b.daemons, b.steps, b.checks
