"""Which daemons the lab runs, with what configs, and how to see them up.

`build` writes every config file into the work directory and returns
the daemons to start plus the readiness checks that prove each answers.

Limits: binaries are looked up on PATH (plus /usr/sbin); libfaketime is
looked up in Debian's multiarch library directories only.
"""

from __future__ import annotations

import glob
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import configs, nginx_conf, topology
from .certs import Pki
from .errors import LabUnsupported
from .procs import Daemon

BINARIES = ("ip", "nft", "sysctl", "dnsmasq", "chronyd", "nginx", "sshd",
            "tinyproxy")
_FAKETIME_GLOB = "/usr/lib/*/faketime/libfaketime.so.1"
_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Check:
    """One readiness check, run from the agent namespace."""

    name: str
    kind: str
    address: str
    port: int
    daemon: str

    def as_json(self) -> list[str | int]:
        return [self.name, self.kind, self.address, self.port]


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


class _Builder:
    """Accumulates daemons and checks while writing config files."""

    def __init__(self, workdir: Path, bins: dict[str, str]) -> None:
        self.workdir = workdir
        self.bins = bins
        self.daemons: list[Daemon] = []
        self.checks: list[Check] = []

    def conf(self, name: str, text: str) -> Path:
        path = self.workdir / "conf" / f"{name}.conf"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def add(self, name: str, argv: list[str], conf: Path,
            env: dict[str, str] | None = None) -> None:
        log = self.workdir / "logs" / f"{name}.log"
        self.daemons.append(Daemon(name, argv, str(conf), log, env))

    def check(self, daemon: str, kind: str, address: str,
              port: int) -> None:
        name = f"{daemon} {kind} {address}:{port}"
        self.checks.append(Check(name, kind, address, port, daemon))


def _dns(b: _Builder) -> None:
    conf = b.conf("dnsmasq", configs.dnsmasq(b.workdir))
    b.add("dnsmasq", [b.bins["dnsmasq"], "-k", "-C", str(conf)], conf)
    b.check("dnsmasq", "dns-udp", topology.DNS, 53)
    b.check("dnsmasq", "dns-tcp", topology.DNS, 53)


def _ntp(b: _Builder) -> None:
    faked = {"LD_PRELOAD": b.bins["libfaketime"],
             "FAKETIME": f"+{topology.FAKE_CLOCK_OFFSET_S // 60}m"}
    for address, synced, env in (
        (topology.NTP_GOOD, True, None),
        (topology.NTP_FAST, True, faked),
        (topology.NTP_UNSYNC, False, None),
    ):
        name = f"chronyd-{address.rsplit('.', 1)[1]}"
        conf = b.conf(name, configs.chrony(
            b.workdir, address, synchronised=synced))
        # -x: never touch the clock; -u root: stay able to read the
        # private work directory.
        argv = [b.bins["chronyd"], "-d", "-x", "-u", "root", "-f", str(conf)]
        b.add(name, argv, conf, env)
        b.check(name, "ntp", address, 123)


def _nginx(b: _Builder, pki: Pki) -> None:
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (b.workdir / "nginx" / sub).mkdir(parents=True, exist_ok=True)
    conf = b.conf("nginx", nginx_conf.render(b.workdir, pki))
    log = b.workdir / "logs" / "nginx.log"
    # -e: nginx's built-in error log path is used before the config is
    # read; point it at the work directory too.
    argv = [b.bins["nginx"], "-e", str(log), "-p", f"{b.workdir}/nginx/",
            "-c", str(conf)]
    b.add("nginx", argv, conf)
    for address in pki.leaves:
        b.check("nginx", "tcp", address, 443)
    b.check("nginx", "tcp", topology.NOT_SSH, 22)
    b.check("nginx", "tcp", topology.GATEWAY_BROKEN, 80)
    for port in (80, *topology.GATEWAY_TCP_PORTS):
        b.check("nginx", "tcp", topology.GATEWAY, port)


def _sshd(b: _Builder, pki: Pki) -> None:
    # Privilege separation needs this directory; it may be missing on
    # a host that never ran sshd.  Left in place at stop: it is shared.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    conf = b.conf("sshd", configs.sshd(b.workdir, pki))
    b.add("sshd", [b.bins["sshd"], "-D", "-e", "-f", str(conf)], conf)
    b.check("sshd", "tcp", topology.SSH, 22)


def _proxies(b: _Builder) -> None:
    auth = (topology.PROXY_USER, topology.PROXY_PASSWORD)
    for address, ports, basic in (
        (topology.PROXY, (443,), None),
        (topology.PROXY_AUTH, (443,), auth),
        (topology.PROXY_NO_CONNECT, (563,), None),
    ):
        name = f"tinyproxy-{address.rsplit('.', 1)[1]}"
        conf = b.conf(name, configs.tinyproxy(
            b.workdir, address, connect_ports=ports, basic_auth=basic))
        b.add(name, [b.bins["tinyproxy"], "-d", "-c", str(conf)], conf)
        b.check(name, "tcp", address, topology.PROXY_PORT)


def build(workdir: Path, pki: Pki,
          bins: dict[str, str]) -> tuple[list[Daemon], list[Check]]:
    """Write all configs; return daemons to start and checks to pass."""
    (workdir / "logs").mkdir(exist_ok=True)
    b = _Builder(workdir, bins)
    _dns(b)
    _ntp(b)
    _nginx(b, pki)
    _sshd(b, pki)
    _proxies(b)
    return b.daemons, b.checks
