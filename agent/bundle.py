"""``sgw-reach bundle``: one archive with what support needs to see.

The archive (``.tar.gz``) holds, after ``manifest.json``, which comes first
and lists every other member with its size, SHA-256 and purpose:

- ``report.json``: the last report a watch kept in the state directory,
  or the report of a check run now when ``--type`` and ``--region`` are
  given;
- ``history.json``: the watch's latest rounds, its state changes, and the
  recent results of every rule of the report, ``--history`` rounds deep;
- ``environment.json``: what on this host decides reachability: the
  resolver configuration, ``/etc/hosts``, the ``hosts`` line of
  nsswitch.conf, the routes, the interfaces with their addresses and
  MTUs, the proxy variables, the clock and its offset measured now
  against the report's NTP servers, and the agent's and Python's versions;
- ``matrix.toml`` and ``endpoints.toml``: the rules and names in use;
- ``logs.txt``: the last lines of the watch's log, when there is one.

Everything in it has gone through ``agent.redact`` first: passwords in
URLs, tokens, signatures, keys and activation keys are replaced. The
archive is written to a temporary file beside its destination, then
renamed, so a reader never sees half of one; its members carry fixed
owners and modes, and the creation time.

Limits: the NTP offset is this host's, measured with the NTP probe's
exchange (only a reply that echoes the request's timestamp counts), one
sample per server, each server bounded to 2 s and all of them to 5 s;
the gateway's own clock is not measured. Interface addresses come from
``ip -j addr`` when it is installed, otherwise from ioctls and ``/proc``
(one IPv4 address per interface then). Exit code 0 when the archive was
written, 2 for bad input (an output that cannot be written, a state
directory that is not a store, no report to put in).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import gzip
import hashlib
import io
import ipaddress
import json
import os
import platform
import re
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import tarfile
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from agent import inputs
from agent.checking import prepare_check, run_round
from agent.errors import UsageError
from agent.redact import redact, redact_environ, redact_text
from agent.report import agent_version, write_atomic
from agent.store import Store, StoreError, default_state_dir
from probes import ntp
from probes.base import (
    Deadline,
    Outcome,
    ProbeRequest,
    ProbeSettings,
    Reason,
    Transport,
)
from rules import load_endpoints
from rules.endpoints import default_endpoints_path
from rules.matrix import default_matrix_path

SCHEMA_ID = "sgw-reach/bundle/v1"
LOG_FILES = ("agent.log.1", "agent.log")
NTP_QUERY_SECONDS = 2.0
NTP_TOTAL_SECONDS = 5.0
_IP_SECONDS = 2.0
_MAX_TEXT_BYTES = 1 << 20
_MAX_LOG_BYTES = 4 << 20
_OWNER = "root"
# The options that choose what a check checks.
_CHECK_CHOICE = ("gateway_type", "region")
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
_ETC = Path("/etc")
_PROC_NET = Path("/proc/net")
_SYS_NET = Path("/sys/class/net")
# <linux/sockios.h>: the address and netmask of an interface.
_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B
# <linux/route.h>: route flags as `route -n` shows them.
_ROUTE_FLAGS = ((0x1, "U"), (0x2, "G"), (0x4, "H"), (0x10, "D"), (0x200, "!"))


@dataclass(frozen=True)
class Member:
    """One file of the archive."""

    name: str
    data: bytes
    description: str


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    # agent.cli imports this module to register the command, so its
    # shared check options are taken when the parser is built.
    from agent.cli import add_check_arguments  # noqa: PLC0415

    parser = commands.add_parser(
        "bundle",
        help="write a .tar.gz for support: report, history, environment, logs",
        description="With --type and --region, a check runs now and its "
        "report goes in; without them, the last report the watch kept in "
        "the state directory, or, when there is none, a check of "
        "SGW_REACH_TYPE and SGW_REACH_REGION if they are set. The check "
        "options below are those of `check`.",
        parents=[common],
    )
    add_check_arguments(parser, required=False, omit=("--output", "--format"))
    # The variables that configure a watch must not hide the report it
    # kept: they count only when there is no saved report.
    fallback = {dest: parser.get_default(dest) for dest in _CHECK_CHOICE}
    parser.set_defaults(gateway_type=None, region=None, environment_check=fallback)
    add = parser.add_argument
    add(
        "--output",
        metavar="FILE",
        type=inputs.output_file,
        help="the archive to write (default: "
        "sgw-reach-bundle-HOST-TIMESTAMP.tar.gz in the current folder)",
    )
    add(
        "--state-dir",
        metavar="DIR",
        type=Path,
        help="the watch's state directory (default as for watch)",
    )
    add(
        "--history",
        metavar="N",
        type=inputs.positive_count,
        default=50,
        help="rounds of history to include (default 50)",
    )
    add(
        "--log-lines",
        metavar="N",
        type=inputs.positive_count,
        default=1000,
        help="last lines of the watch's log to include (default 1000)",
    )


def run(args: argparse.Namespace) -> int:
    created = datetime.now(UTC)
    state_dir: Path = args.state_dir or default_state_dir()
    output: Path = args.output or default_output(created)
    _check_writable(output)
    report, source, history = _gather(args, state_dir)
    members = [
        _json_member("report.json", redact(report), f"the report: {source}"),
        _json_member(
            "history.json",
            redact(history),
            f"up to the latest {args.history} rounds, with their state "
            "changes and the results of each rule",
        ),
        _json_member(
            "environment.json",
            redact(environment(report)),
            "resolver, hosts, routes, interfaces, proxy, clock, versions",
        ),
        *_rule_files(args.matrix),
        *_log_member(state_dir, args.log_lines),
    ]
    data = build_archive(members, created)
    write_bytes_atomic(output, data)
    sys.stdout.write(f"{output}: {len(members) + 1} files, {len(data)} bytes\n")
    return 0


def default_output(created: datetime) -> Path:
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"
    return Path(f"sgw-reach-bundle-{host}-{created:%Y%m%dT%H%M%SZ}.tar.gz")


def _check_writable(output: Path) -> None:
    """Fail before a check runs, not after, when the archive cannot go
    where it is asked."""
    problem = inputs.unwritable(output)
    if problem:
        raise UsageError(f"--output {output}: {problem}")


def _gather(
    args: argparse.Namespace, state_dir: Path
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The report, where it came from, and the history around it."""
    store = _open_store(state_dir)
    try:
        report, source = _report(args, store, state_dir)
        history = _history(store, report, args.history, state_dir)
    except sqlite3.Error as exc:
        raise UsageError(
            f"--state-dir {state_dir}: not a readable sgw-reach store: {exc}"
        ) from exc
    finally:
        if store is not None:
            store.close()
    return report, source, history


def _open_store(state_dir: Path) -> Store | None:
    if state_dir.exists() and not state_dir.is_dir():
        raise UsageError(f"--state-dir {state_dir}: not a folder")
    try:
        return Store.open_existing(state_dir)
    except StoreError as exc:
        raise UsageError(f"--state-dir {exc}") from exc


def _report(
    args: argparse.Namespace, store: Store | None, state_dir: Path
) -> tuple[dict[str, Any], str]:
    """The report typed for, else the saved one, else the environment's."""
    typed = {dest: getattr(args, dest) for dest in _CHECK_CHOICE}
    choice = {
        dest: value if value is not None else args.environment_check[dest]
        for dest, value in typed.items()
    }
    if any(value is not None for value in typed.values()):
        if None in choice.values():
            raise UsageError("bundle: give both --type and --region to run a check")
        return _run_check(args, choice), "a check run for this bundle"
    saved = store.last_report(complete=True) if store is not None else None
    if saved is not None:
        return saved, f"the last whole round kept in {state_dir}"
    if None not in choice.values():
        ran = _run_check(args, choice)
        return ran, "a check run for this bundle (SGW_REACH_TYPE and _REGION)"
    raise UsageError(
        f"no saved report in {state_dir}: give --type and --region to run a check"
    )


def _run_check(args: argparse.Namespace, choice: dict[str, Any]) -> dict[str, Any]:
    plan = prepare_check(argparse.Namespace(**{**vars(args), **choice}))
    return asyncio.run(run_round(plan))


def _history(
    store: Store | None, report: dict[str, Any], rounds: int, state_dir: Path
) -> dict[str, Any]:
    """The last ``rounds`` rounds, and the events and results within them."""
    if store is None:
        return {
            "state_dir": str(state_dir),
            "note": "no watch store there",
            "rounds": [],
            "events": [],
            "rules": {},
        }
    kept = store.rounds(rounds)
    oldest = min((r["round"] for r in kept), default=0)
    targets = Counter(r["rule"] for r in report["results"])
    # Each target can change once a round, and has one result a round.
    events = store.events(rounds * max(1, len(report["results"])))
    return {
        "state_dir": str(state_dir),
        "rounds": kept,
        "events": [e for e in events if e["round"] >= oldest],
        "rules": {
            rule: [
                h for h in store.history(rule, rounds * count) if h["round"] >= oldest
            ]
            for rule, count in targets.items()
        },
    }


def _json_member(name: str, value: Any, description: str) -> Member:
    text = json.dumps(value, indent=2) + "\n"
    return Member(name, text.encode("utf-8"), description)


def _rule_files(matrix: Path | None) -> list[Member]:
    """The matrix in use (``--matrix`` or the packaged one) and the names."""
    files = (
        ("matrix.toml", matrix or default_matrix_path(), "the port matrix used"),
        ("endpoints.toml", default_endpoints_path(), "the AWS endpoint names"),
    )
    members: list[Member] = []
    for name, path, description in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror}") from exc
        data = redact_text(text).encode("utf-8")
        members.append(Member(name, data, f"{description} ({path})"))
    return members


def _log_member(state_dir: Path, lines: int) -> list[Member]:
    """The last ``lines`` lines of the watch's log, older file first."""
    paths = [state_dir / name for name in LOG_FILES]
    present = [path for path in paths if path.is_file()]
    if not present:
        return []
    tail: deque[str] = deque(maxlen=lines)
    for path in present:
        tail.extend(_read_tail(path).splitlines())
    text = "".join(_redact_log_line(line) + "\n" for line in tail)
    description = f"the last {len(tail)} lines of {', '.join(LOG_FILES)}"
    return [Member("logs.txt", text.encode("utf-8"), description)]


def _read_tail(path: Path) -> str:
    """The end of a log file, at most a few MiB, from a whole line."""
    try:
        with path.open("rb") as stream:
            size = stream.seek(0, os.SEEK_END)
            stream.seek(max(0, size - _MAX_LOG_BYTES))
            data = stream.read(_MAX_LOG_BYTES)
    except OSError:
        return ""
    if size > _MAX_LOG_BYTES:
        data = data.partition(b"\n")[2]
    return data.decode("utf-8", errors="replace")


def _redact_log_line(line: str) -> str:
    """A JSON log event has its members redacted by name; other lines as
    text."""
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):
        return redact_text(line)
    if not isinstance(event, dict):
        return redact_text(line)
    return json.dumps(redact(event))


def build_archive(members: Sequence[Member], created: datetime) -> bytes:
    """The .tar.gz: the manifest, then ``members`` in order."""
    manifest = _manifest(members, created)
    mtime = int(created.timestamp())
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=mtime) as packed,
        tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for member in (manifest, *members):
            tar.addfile(_tar_info(member, mtime), io.BytesIO(member.data))
    return buffer.getvalue()


def _manifest(members: Sequence[Member], created: datetime) -> Member:
    listing = [
        {
            "name": m.name,
            "size": len(m.data),
            "sha256": hashlib.sha256(m.data).hexdigest(),
            "description": m.description,
        }
        for m in members
    ]
    manifest = {
        "schema": SCHEMA_ID,
        "created_at": _iso(created),
        "agent_version": agent_version(),
        "redacted": "secrets in every member are replaced by REDACTED",
        "members": listing,
    }
    return _json_member("manifest.json", manifest, "this list")


def _tar_info(member: Member, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(member.name)
    info.size = len(member.data)
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = _OWNER
    info.mtime = mtime
    info.type = tarfile.REGTYPE
    return info


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole, as reports are written, or raise
    UsageError naming it and leave nothing behind."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise UsageError(
            f"--output {path}: cannot write: {exc.strerror or exc}"
        ) from exc


def _iso(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


# The environment ---------------------------------------------------------


def environment(report: dict[str, Any]) -> dict[str, Any]:
    """What on this host decides what the gateway's network reaches.

    Not yet redacted: the caller passes it through ``agent.redact``.
    """
    return {
        "hostname": socket.gethostname(),
        "agent_version": agent_version(),
        "python": sys.version,
        "platform": platform.platform(),
        "clock": {
            "utc_now": _iso(datetime.now(UTC)),
            "ntp": measure_offsets(ntp_servers(report)),
        },
        "resolv_conf": _read_text(_ETC / "resolv.conf"),
        "hosts": _read_text(_ETC / "hosts"),
        "nsswitch_hosts": _nsswitch_hosts(),
        "routes": {"ipv4": ipv4_routes(), "ipv6": ipv6_routes()},
        "interfaces": interfaces(),
        "proxy": redact_environ(_proxy_variables()),
    }


def _read_text(path: Path) -> str | None:
    try:
        with path.open("rb") as stream:
            data = stream.read(_MAX_TEXT_BYTES)
    except OSError:
        return None
    return data.decode("utf-8", errors="replace")


def _nsswitch_hosts() -> str | None:
    text = _read_text(_ETC / "nsswitch.conf") or ""
    return next(
        (line.strip() for line in text.splitlines() if line.startswith("hosts:")),
        None,
    )


def _proxy_variables() -> dict[str, str]:
    names = [n for v in _PROXY_VARIABLES for n in (v, v.upper())]
    return {name: os.environ[name] for name in names if name in os.environ}


def ipv4_routes(path: Path = _PROC_NET / "route") -> list[dict[str, Any]]:
    """/proc/net/route decoded: addresses there are little-endian hex."""
    return _decoded(_table(path)[1:], _ipv4_route)


def _ipv4_route(fields: list[str]) -> dict[str, Any]:
    name, destination, gateway, flags = fields[:4]
    mask = _ipv4(fields[7])
    prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    return {
        "interface": name,
        "destination": f"{_ipv4(destination)}/{prefix}",
        "gateway": _ipv4(gateway),
        "flags": _flags(int(flags, 16)),
        "metric": int(fields[6]),
        "mtu": int(fields[8]),
    }


def _ipv4(little_endian_hex: str) -> str:
    return socket.inet_ntoa(struct.pack("<I", int(little_endian_hex, 16)))


def _flags(value: int) -> str:
    return "".join(letter for bit, letter in _ROUTE_FLAGS if value & bit)


def ipv6_routes(path: Path = _PROC_NET / "ipv6_route") -> list[dict[str, Any]]:
    """/proc/net/ipv6_route decoded: destination, its prefix length, source,
    its length, next hop, metric, use counts, flags, interface."""
    return _decoded(_table(path), _ipv6_route)


def _ipv6_route(fields: list[str]) -> dict[str, Any]:
    return {
        "interface": fields[9],
        "destination": f"{_ipv6(fields[0])}/{int(fields[1], 16)}",
        "gateway": _ipv6(fields[4]),
        "flags": _flags(int(fields[8], 16)),
        "metric": int(fields[5], 16),
    }


def _ipv6(hex_address: str) -> str:
    return str(ipaddress.IPv6Address(bytes.fromhex(hex_address)))


def _table(path: Path) -> list[list[str]]:
    """The whitespace-separated rows of a /proc table."""
    return [line.split() for line in (_read_text(path) or "").splitlines()]


def _decoded(
    rows: list[list[str]], decode: Callable[[list[str]], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each row that decodes; a short or garbled one is left out."""
    out: list[dict[str, Any]] = []
    for row in rows:
        with contextlib.suppress(ValueError, IndexError, struct.error):
            out.append(decode(row))
    return out


def interfaces() -> dict[str, Any]:
    """Each interface with its state, addresses and MTU."""
    found = _ip_addr()
    source = "ip -j addr"
    if found is None:
        found = _interfaces_from_kernel()
        source = "ioctl and /proc/net/if_inet6"
    for entry in found:
        mtu = _read_text(_SYS_NET / entry["name"] / "mtu")
        entry["mtu"] = int(mtu) if mtu and mtu.strip().isdigit() else entry.get("mtu")
    return {"source": source, "interfaces": found}


def _ip_addr() -> list[dict[str, Any]] | None:
    """``ip -j addr``, without a shell and bounded in time, or None."""
    program = shutil.which("ip")
    if program is None:
        return None
    try:
        done = subprocess.run(
            [program, "-j", "addr"],
            capture_output=True,
            timeout=_IP_SECONDS,
            check=True,
        )
        rows = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if not isinstance(rows, list):
        return None
    return [_from_ip(row) for row in rows if isinstance(row, dict)]


def _from_ip(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": str(row.get("ifname", "")),
        "index": row.get("ifindex"),
        "state": row.get("operstate"),
        "flags": row.get("flags", []),
        "mac": row.get("address"),
        "mtu": row.get("mtu"),
        "addresses": [
            f"{a.get('local')}/{a.get('prefixlen')}"
            for a in row.get("addr_info", [])
            if isinstance(a, dict) and a.get("local")
        ],
    }


def _interfaces_from_kernel() -> list[dict[str, Any]]:
    """One IPv4 address per interface (ioctl), every IPv6 one (/proc)."""
    ipv6 = _ipv6_addresses()
    found: list[dict[str, Any]] = []
    for index, name in socket.if_nameindex():
        state = _read_text(_SYS_NET / name / "operstate")
        mac = _read_text(_SYS_NET / name / "address")
        found.append(
            {
                "name": name,
                "index": index,
                "state": state.strip() if state else None,
                "mac": mac.strip() if mac else None,
                "addresses": [*_ipv4_address(name), *ipv6.get(name, [])],
            }
        )
    return found


def _ipv4_address(name: str) -> list[str]:
    request = struct.pack("256s", name.encode()[:15])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            address = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)[20:24]
            mask = fcntl.ioctl(sock.fileno(), _SIOCGIFNETMASK, request)[20:24]
    except OSError:
        return []
    prefix = ipaddress.IPv4Network(f"0.0.0.0/{socket.inet_ntoa(mask)}").prefixlen
    return [f"{socket.inet_ntoa(address)}/{prefix}"]


def _ipv6_addresses() -> dict[str, list[str]]:
    """/proc/net/if_inet6: address, index, prefix length, scope, flags,
    name."""
    found: dict[str, list[str]] = {}
    for fields in _table(_PROC_NET / "if_inet6"):
        with contextlib.suppress(ValueError, IndexError):
            address = f"{_ipv6(fields[0])}/{int(fields[2], 16)}"
            found.setdefault(fields[5], []).append(address)
    return found


# The clock ---------------------------------------------------------------


def ntp_servers(report: dict[str, Any]) -> list[tuple[str, int]]:
    """The NTP servers the report probed, else the default AWS ones."""
    probed = [
        (str(r["host"]), int(r["port"]))
        for r in report["results"]
        if r.get("probe") == "ntp" and r.get("host")
    ]
    return list(dict.fromkeys(probed)) or [
        (host, 123) for host in default_ntp_servers()
    ]


def default_ntp_servers() -> tuple[str, ...]:
    return load_endpoints().ntp_servers


def measure_offsets(
    servers: Sequence[tuple[str, int]],
    query_seconds: float | None = None,
    total_seconds: float | None = None,
) -> list[dict[str, Any]]:
    """This host's clock offset against each server, asked all at once.

    Each server is asked with the NTP probe's own exchange, so only a
    reply that echoes the request's transmit timestamp as its origin
    gives an offset; a stale or spoofed one does not. Whatever has not
    answered when ``total_seconds`` runs out is reported as unanswered.
    """
    query = query_seconds or NTP_QUERY_SECONDS
    total = total_seconds or NTP_TOTAL_SECONDS
    return asyncio.run(_measure_all(servers, query, total))


async def _measure_all(
    servers: Sequence[tuple[str, int]], query: float, total: float
) -> list[dict[str, Any]]:
    asks = [_ask_ntp(host, port, query) for host, port in servers]
    tasks = [asyncio.create_task(ask) for ask in asks]
    if tasks:
        await asyncio.wait(tasks, timeout=total)
    answers: list[dict[str, Any]] = []
    for task, (host, port) in zip(tasks, servers, strict=True):
        if task.done():
            answers.append(task.result())
            continue
        task.cancel()
        error = f"no answer in {total:g} s"
        answers.append({"server": host, "port": port, "error": error})
    return answers


async def _ask_ntp(host: str, port: int, seconds: float) -> dict[str, Any]:
    request = ProbeRequest(
        host=host,
        port=port,
        transport=Transport.UDP,
        deadline=Deadline.after(seconds),
        settings=ProbeSettings(),
        log=structlog.get_logger("sgw_reach.bundle").bind(
            probe="ntp", host=host, port=port
        ),
    )
    try:
        outcome = await ntp.probe(request)
    except Exception as exc:
        # The clock is one fact among many: a probe's bug must not cost
        # the whole bundle.
        error = f"{type(exc).__name__}: {exc}"
        return {"server": host, "port": port, "error": error}
    return _measured(host, port, outcome)


def _measured(host: str, port: int, outcome: Outcome) -> dict[str, Any]:
    """The offset when a server's time came back, else why not.

    A protocol error (a kiss-o'-death, zero timestamps) carries
    timestamps that are not a time, so no offset is taken from it.
    """
    evidence = outcome.evidence
    offset = evidence.get("offset_s")
    rtt_ms = evidence.get("rtt_ms")
    if (
        outcome.reason is Reason.PROTOCOL_ERROR
        or not isinstance(offset, int | float)
        or not isinstance(rtt_ms, int | float)
    ):
        return {"server": host, "port": port, "error": outcome.detail}
    return {
        "server": host,
        "port": port,
        "address": outcome.address,
        "offset_s": offset,
        "delay_s": round(rtt_ms / 1000, 6),
        "stratum": evidence.get("stratum"),
        "leap": evidence.get("leap"),
    }
