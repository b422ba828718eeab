"""Network namespaces, the veth links, resolv.conf and nftables faults.

Thin wrappers over `ip`, `sysctl` and `nft`; every call has a timeout and
raises `LabError` with the command's output when it fails.

Layout: the agent namespace and the impostor namespace each hang on a
bridge in the server namespace by a veth pair, so all three share one
/24 and one Ethernet segment.  Server addresses sit on the bridge, the
impostor's on its own veth: the impostor is a separate host whose ports
no wildcard socket of the server namespace (rpcbind's TCP 111) can
take.

Names: a lab owned by process PID uses namespaces ``sgwr{PID}a``
(agent), ``sgwr{PID}s`` (servers) and ``sgwr{PID}i`` (impostor), veths
``sgwr{PID}a0``, ``sgwr{PID}i0`` and their server-side peers
``sgwr{PID}s0``, ``sgwr{PID}s1`` on the bridge ``sgwr{PID}b0`` (at most
13 characters, under the 15 the kernel allows).  Stale namespaces of
dead processes are recognised from that name.

Limits: IPv4 only; no route leaves the namespaces (no default route, no
link to the host's own namespace).  Bridged frames skip the server
namespace's IP hooks (no br_netfilter), so each host namespace keeps its
own fault table.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import NamedTuple

from . import topology
from .errors import LabError

NETNS_ETC = Path("/etc/netns")
NFT_TABLE = "sgwr_lab"
FAULT_ACTIONS: dict[str, str] = {
    "drop": "drop",
    "reset": "reject with tcp reset",
    "prohibited": "reject with icmp type admin-prohibited",
    "host-unreachable": "reject with icmp type host-unreachable",
}
_NAME_RE = re.compile(r"^sgwr(\d+)[asi]$")
_CMD_TIMEOUT = 10.0


def run(argv: list[str], stdin: str | None = None) -> str:
    """Run a setup command; return stdout or raise LabError."""
    try:
        done = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=_CMD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        raise LabError(
            f"{' '.join(argv)} exited {done.returncode}: "
            f"{done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


class LabNames(NamedTuple):
    """Namespace and link names of the lab owned by one process."""

    agent: str
    server: str
    impostor: str
    agent_if: str
    impostor_if: str
    server_agent_if: str
    server_impostor_if: str
    bridge: str

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return self.agent, self.server, self.impostor


def names_for(pid: int) -> LabNames:
    """Every namespace and link name of the lab owned by `pid`."""
    base = f"sgwr{pid}"
    return LabNames(
        agent=f"{base}a",
        server=f"{base}s",
        impostor=f"{base}i",
        agent_if=f"{base}a0",
        impostor_if=f"{base}i0",
        server_agent_if=f"{base}s0",
        server_impostor_if=f"{base}s1",
        bridge=f"{base}b0",
    )


def namespace_for(names: LabNames, address: str) -> str:
    """The namespace whose own address `address` is (server if none)."""
    addr = str(ipaddress.IPv4Address(address))
    if addr in topology.IMPOSTOR_ADDRS:
        return names.impostor
    return names.server


def list_namespaces() -> list[str]:
    """Names of all named network namespaces on the machine."""
    out = run(["ip", "netns", "list"])
    # Lines look like "NAME" or "NAME (id: 3)".
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(ns: str) -> list[int]:
    """Processes currently inside namespace `ns`."""
    try:
        out = run(["ip", "netns", "pids", ns])
    except LabError:
        return []
    return [int(tok) for tok in out.split() if tok.isdigit()]


def kill_namespace_members(ns: str) -> None:
    """SIGKILL whatever still runs inside `ns`.

    Only called for namespaces this lab code created (its own, or stale
    ones carrying the lab prefix and a dead owner's pid): whatever is
    inside was started by a lab.  It catches children the lab did not
    record itself, such as nginx workers or dnsmasq's TCP helpers.
    """
    for pid in namespace_pids(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def delete_namespace(ns: str) -> None:
    """Remove `ns` and its /etc/netns directory; no error if absent."""
    if ns in list_namespaces():
        kill_namespace_members(ns)
        run(["ip", "netns", "del", ns])
    etc_dir = NETNS_ETC / ns
    (etc_dir / "resolv.conf").unlink(missing_ok=True)
    if etc_dir.is_dir() and not any(etc_dir.iterdir()):
        etc_dir.rmdir()


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def remove_stale(own_pid: int) -> list[str]:
    """Delete lab namespaces whose owning process is gone."""
    removed: list[str] = []
    for ns in list_namespaces():
        match = _NAME_RE.match(ns)
        if match is None:
            continue
        owner = int(match.group(1))
        if owner == own_pid or _pid_alive(owner):
            continue
        delete_namespace(ns)
        removed.append(ns)
    return removed


def _batch(ns: str, commands: list[str]) -> None:
    # One `ip -batch` per namespace instead of a process per address.
    run(["ip", "-n", ns, "-batch", "-"], stdin="\n".join(commands) + "\n")


def _write_resolv_conf(ns: str) -> None:
    etc_dir = NETNS_ETC / ns
    etc_dir.mkdir(parents=True, exist_ok=True)
    (etc_dir / "resolv.conf").write_text(
        f"nameserver {topology.DNS}\n", encoding="ascii"
    )


def _quiet_icmp_limits(ns: str) -> None:
    # Both settings are per namespace on current kernels.  Without this
    # the kernel sends only a burst of unreachables per second per peer
    # and later probes would time out instead of being refused.
    run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.icmp_ratelimit=0",
            "net.ipv4.icmp_msgs_per_sec=100000",
        ]
    )


def _veth(name: str, ns: str, peer: str, peer_ns: str) -> None:
    run(
        [
            "ip",
            "link",
            "add",
            name,
            "netns",
            ns,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            peer_ns,
        ]
    )


def _wire_server(n: LabNames) -> None:
    # With STP off (the default) bridge ports forward at once.
    plen = topology.PREFIX_LEN
    _batch(
        n.server,
        [
            "link set lo up",
            f"link add {n.bridge} type bridge",
            f"link set {n.server_agent_if} master {n.bridge}",
            f"link set {n.server_impostor_if} master {n.bridge}",
            *(f"addr add {a}/{plen} dev {n.bridge}" for a in topology.SERVER_ADDRS),
            f"link set {n.server_agent_if} up",
            f"link set {n.server_impostor_if} up",
            f"link set {n.bridge} up",
        ],
    )


def _wire_host(ns: str, link: str, addresses: tuple[str, ...]) -> None:
    plen = topology.PREFIX_LEN
    _batch(
        ns,
        [
            "link set lo up",
            *(f"addr add {a}/{plen} dev {link}" for a in addresses),
            f"link set {link} up",
        ],
    )


def _wire(n: LabNames) -> None:
    _veth(n.agent_if, n.agent, n.server_agent_if, n.server)
    _veth(n.impostor_if, n.impostor, n.server_impostor_if, n.server)
    _wire_server(n)
    _wire_host(n.agent, n.agent_if, (topology.AGENT,))
    _wire_host(n.impostor, n.impostor_if, topology.IMPOSTOR_ADDRS)


def _fault_table(ns: str) -> None:
    run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        stdin=(
            f"table ip {NFT_TABLE} {{\n"
            "  chain input {\n"
            "    type filter hook input priority filter; policy accept;\n"
            "  }\n"
            "}\n"
        ),
    )


def create(pid: int) -> None:
    """Create the namespaces, links, addresses, resolv.conf and tables."""
    names = names_for(pid)
    for ns in names.namespaces:
        run(["ip", "netns", "add", ns])
    _wire(names)
    for ns in names.namespaces:
        _quiet_icmp_limits(ns)
        _write_resolv_conf(ns)
    for ns in (names.server, names.impostor):
        _fault_table(ns)


def fault_rule(action: str, address: str, port: int | None, proto: str) -> str:
    """The nft rule text for one fault; validates every part."""
    if action not in FAULT_ACTIONS:
        raise ValueError(
            f"unknown fault action {action!r}; expected one of {sorted(FAULT_ACTIONS)}"
        )
    addr = ipaddress.IPv4Address(address)
    if addr not in topology.SUBNET:
        raise ValueError(f"{address} is not a lab address")
    if proto not in ("tcp", "udp"):
        raise ValueError(f"proto must be 'tcp' or 'udp', not {proto!r}")
    if action == "reset" and proto != "tcp":
        raise ValueError("a tcp reset only applies to tcp")
    match = f"ip daddr {addr}"
    if port is not None:
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        match += f" {proto} dport {port}"
    elif action == "reset":
        match += " meta l4proto tcp"
    return f"{match} counter {FAULT_ACTIONS[action]}"


def add_fault(ns: str, rule: str) -> None:
    run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "nft",
            "add",
            "rule",
            "ip",
            NFT_TABLE,
            "input",
            *rule.split(),
        ]
    )


def clear_faults(ns: str) -> None:
    run(["ip", "netns", "exec", ns, "nft", "flush", "chain", "ip", NFT_TABLE, "input"])


def netns_exec_argv(ns: str, argv: list[str]) -> list[str]:
    """argv that runs `argv` inside `ns` (ip execs, keeping the pid)."""
    ip = shutil.which("ip") or "ip"
    return [ip, "netns", "exec", ns, *argv]
