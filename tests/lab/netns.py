"""Network namespaces, the veth link, resolv.conf and nftables faults.

Thin wrappers over `ip`, `sysctl` and `nft`; every call has a timeout and
raises `LabError` with the command's output when it fails.

Names: a lab owned by process PID uses namespaces ``sgwr{PID}a`` (agent)
and ``sgwr{PID}s`` (servers) joined by veths ``sgwr{PID}a0`` and
``sgwr{PID}s0`` (at most 13 characters, under the 15 the kernel allows).
Stale namespaces of dead processes are recognised from that name.

Limits: IPv4 only; no route leaves the namespaces (no default route, no
link to the host's own namespace).
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
_NAME_RE = re.compile(r"^sgwr(\d+)[as]$")
_CMD_TIMEOUT = 10.0


def run(argv: list[str], stdin: str | None = None) -> str:
    """Run a setup command; return stdout or raise LabError."""
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True,
            timeout=_CMD_TIMEOUT, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        raise LabError(
            f"{' '.join(argv)} exited {done.returncode}: "
            f"{done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


def names_for(pid: int) -> tuple[str, str, str, str]:
    """(agent ns, server ns, agent veth, server veth) for `pid`."""
    return f"sgwr{pid}a", f"sgwr{pid}s", f"sgwr{pid}a0", f"sgwr{pid}s0"


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
        f"nameserver {topology.DNS}\n", encoding="ascii")


def _quiet_icmp_limits(ns: str) -> None:
    # Both settings are per namespace on current kernels.  Without this
    # the kernel sends only a burst of unreachables per second per peer
    # and later probes would time out instead of being refused.
    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
         "net.ipv4.icmp_ratelimit=0",
         "net.ipv4.icmp_msgs_per_sec=100000"])


def create(pid: int) -> None:
    """Create both namespaces, the veth pair, addresses and resolv.conf."""
    agent, server, agent_if, server_if = names_for(pid)
    run(["ip", "netns", "add", agent])
    run(["ip", "netns", "add", server])
    run(["ip", "link", "add", agent_if, "netns", agent, "type", "veth",
         "peer", "name", server_if, "netns", server])
    plen = topology.PREFIX_LEN
    _batch(agent, [
        "link set lo up",
        f"addr add {topology.AGENT}/{plen} dev {agent_if}",
        f"link set {agent_if} up",
    ])
    _batch(server, [
        "link set lo up",
        *(f"addr add {a}/{plen} dev {server_if}"
          for a in topology.SERVER_ADDRS),
        f"link set {server_if} up",
    ])
    for ns in (agent, server):
        _quiet_icmp_limits(ns)
        _write_resolv_conf(ns)
    run(["ip", "netns", "exec", server, "nft", "-f", "-"], stdin=(
        f"table ip {NFT_TABLE} {{\n"
        "  chain input {\n"
        "    type filter hook input priority filter; policy accept;\n"
        "  }\n"
        "}\n"
    ))


def fault_rule(action: str, address: str, port: int | None,
               proto: str) -> str:
    """The nft rule text for one fault; validates every part."""
    if action not in FAULT_ACTIONS:
        raise ValueError(f"unknown fault action {action!r}; "
                         f"expected one of {sorted(FAULT_ACTIONS)}")
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


def add_fault(server_ns: str, rule: str) -> None:
    run(["ip", "netns", "exec", server_ns, "nft", "add", "rule", "ip",
         NFT_TABLE, "input", *rule.split()])


def clear_faults(server_ns: str) -> None:
    run(["ip", "netns", "exec", server_ns, "nft", "flush", "chain", "ip",
         NFT_TABLE, "input"])


def netns_exec_argv(ns: str, argv: list[str]) -> list[str]:
    """argv that runs `argv` inside `ns` (ip execs, keeping the pid)."""
    ip = shutil.which("ip") or "ip"
    return [ip, "netns", "exec", ns, *argv]
