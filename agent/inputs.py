"""Check what the user typed, before any probe runs.

Each ``argparse`` type function returns the clean value or raises
``argparse.ArgumentTypeError`` with a message that names what is wrong;
argparse puts the flag's name in front. Host names the user typed are
resolved up front with this host's resolver: a name that does not resolve
is a usage error, not a finding, because the user gave it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any

from agent.errors import UsageError
from rules import BucketError, Rule, check_bucket

RESOLV_CONF = Path("/etc/resolv.conf")
_MAX_SECONDS = 600.0
_MAX_CONCURRENCY = 1024


def host(text: str) -> str:
    """A host name or address: letters, digits, dots, hyphens, colons."""
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    if _is_address(candidate) or _is_hostname(candidate):
        return candidate
    raise argparse.ArgumentTypeError(f"{text!r} is not a host name or address")


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_hostname(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return 0 < len(text) <= 253 and all(
        0 < len(label) <= 63
        and label.replace("-", "").replace("_", "").isalnum()
        and label.isascii()
        and not label.startswith("-")
        for label in labels
    )


def domain(text: str) -> str:
    """A DNS domain name such as corp.example.com."""
    candidate = text.strip().rstrip(".")
    if "." in candidate and _is_hostname(candidate):
        return candidate
    raise argparse.ArgumentTypeError(f"{text!r} is not a DNS domain name")


def ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IP address (a resolver is given by address)"
        ) from None


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``HOST`` (port 8080).

    Credentials (``user:password@``) are refused, and not repeated in
    the message: the proxy probe never authenticates.
    """
    if "@" in text:
        shown = "***@" + text.rpartition("@")[2]
        raise argparse.ArgumentTypeError(
            f"{shown!r}: credentials are not taken here (no proxy authentication)"
        )
    name, port = text, "8080"
    if text.startswith("["):
        name, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif text.count(":") == 1:
        name, port = text.split(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be 1-65535")
    try:
        return host(name), int(port)
    except argparse.ArgumentTypeError:
        what = f"{text!r}" if name == text else f"{text!r}: {name!r}"
        raise argparse.ArgumentTypeError(
            f"{what} is not a host name or address"
        ) from None


def port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port from 1 to 65535")
    return int(text)


def bucket(text: str) -> str:
    try:
        check_bucket(text)
    except BucketError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= _MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds between 0 and {_MAX_SECONDS:g}"
        )
    return value


def concurrency(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= _MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number from 1 to {_MAX_CONCURRENCY}"
        )
    return int(text)


def readable_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: no readable file there")
    return path


def matrix_file(text: str) -> Path:
    """A readable file of UTF-8 text, as TOML must be."""
    path = readable_file(text)
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"{text}: not UTF-8 text (byte {exc.start}), so not a TOML file"
        ) from None
    return path


def ca_bundle(text: str) -> Path:
    """A PEM file of CA certificates that OpenSSL accepts."""
    path = readable_file(text)
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text}: not a PEM bundle of CA certificates ({exc})"
        ) from None
    return path


def output_file(text: str) -> Path:
    """A file path whose folder exists and can be written."""
    path = Path(text)
    problem = unwritable(path)
    if problem:
        raise argparse.ArgumentTypeError(f"{text}: {problem}")
    return path


def unwritable(path: Path) -> str:
    """Why a file cannot be written at ``path``, or "" when it can.

    A real file is made and removed beside it, as a report's temporary
    file will be: permission bits alone do not tell (root, read-only
    mounts, /proc).
    """
    folder = path.parent if str(path.parent) else Path()
    if path.is_dir():
        return "is a folder, not a file"
    if not folder.is_dir():
        return f"folder {folder} is not writable"
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=folder
        )
        os.close(handle)
        os.unlink(temporary)
    except OSError as exc:
        return f"folder {folder} is not writable ({exc.strerror or exc})"
    return ""


def typed_hosts(args: argparse.Namespace) -> dict[str, str]:
    """Each host name the user typed, with the flag that carried it."""
    hosts: dict[str, str] = {}
    if args.gateway:
        hosts[args.gateway] = "--gateway"
    if args.proxy:
        hosts[args.proxy[0]] = "--proxy"
    for flag in ("ntp_server", "support_host", "ad_server"):
        for name in getattr(args, flag) or ():
            hosts[name] = "--" + flag.replace("_", "-")
    return hosts


def resolve_all(hosts: dict[str, str], timeout: float) -> dict[str, str]:
    """Resolve every typed host at once, within one ``timeout``, or raise
    naming the first (in the order typed) that fails."""
    addresses, failures = asyncio.run(resolve_hosts(hosts, timeout))
    if failures:
        name, why = next(iter(failures.items()))
        raise UsageError(f"{hosts[name]} {name}: does not resolve ({why})")
    return addresses


async def resolve_hosts(
    hosts: dict[str, str], timeout: float
) -> tuple[dict[str, str], dict[str, str]]:
    """Resolve every host concurrently within ``timeout``: the addresses
    found, and for each host that failed, why, in the order given."""
    names = list(hosts)
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_lookup(name, timeout)) for name in names]
    addresses: dict[str, str] = {}
    failures: dict[str, str] = {}
    for name, task in zip(names, tasks, strict=True):
        address, why = task.result()
        if address is None:
            failures[name] = why
        else:
            addresses[name] = address
    return addresses, failures


async def _lookup(name: str, timeout: float) -> tuple[str | None, str]:
    try:
        return await _first_address(name, timeout), ""
    except (OSError, TimeoutError) as exc:
        return None, getattr(exc, "strerror", None) or "no answer in time"


async def _first_address(name: str, timeout: float) -> str:
    async with asyncio.timeout(timeout):
        infos = await _getaddrinfo(name)
    families = sorted(infos, key=lambda info: info[0] != socket.AF_INET)
    return str(families[0][4][0])


AddrInfo = list[tuple[Any, Any, int, str, tuple[Any, ...]]]


async def _getaddrinfo(name: str) -> AddrInfo:
    """getaddrinfo in a daemon thread of its own: a resolver that hangs
    past the timeout keeps the thread, not the command, which would wait
    for the loop's own executor to finish before it could exit."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[AddrInfo] = loop.create_future()

    def settle(infos: AddrInfo | None, error: OSError | None) -> None:
        if answer.done():
            return
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(infos or [])

    def look_up() -> None:
        try:
            infos, error = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM), None
        except OSError as exc:
            infos, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(settle, infos, error)

    threading.Thread(target=look_up, name=f"resolve {name}", daemon=True).start()
    return await answer


def system_resolvers(path: Path = RESOLV_CONF) -> list[str]:
    """The name servers of resolv.conf, as this host's programs use them."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    servers: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver" and _is_address(words[1]):
            servers.append(words[1])
    return servers


def rule_as_json(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "table_rule": rule.table_rule,
        "types": sorted(rule.types),
        "appliance": rule.appliance,
        "source": rule.source,
        "destination": rule.destination,
        "direction": str(rule.direction),
        "transport": rule.transport,
        "port": rule.port,
        "probe": rule.probe,
        "required": rule.required,
        "purpose": rule.purpose,
        "targets": list(rule.targets),
    }


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MIN_INTERVAL = 0.01
_MAX_INTERVAL = 7 * 86400.0


def duration(text: str) -> float:
    """A duration such as 30s, 5m, 1h or 250ms; a bare number is seconds."""
    number = text.strip().lower()
    unit = next((u for u in ("ms", "s", "m", "h", "d") if number.endswith(u)), "")
    try:
        value = float(number.removesuffix(unit)) * _UNITS.get(unit, 1.0)
    except ValueError:
        value = -1.0
    if not _MIN_INTERVAL <= value <= _MAX_INTERVAL:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration from 10ms to 7d (such as 30s, 5m, 1h)"
        )
    return value


_MAX_DAYS = 3650.0


def days(text: str) -> float:
    """A number of days above 0, fractions allowed (0.5 is 12 hours)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= _MAX_DAYS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of days above 0 and at most {_MAX_DAYS:g}"
        )
    return value


def positive_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10**9:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def listen_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` or ``[V6]:PORT`` to serve on; port 0 picks a free one."""
    name, _, port_text = text.rpartition(":")
    name = name.removeprefix("[").removesuffix("]")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: give ADDR:PORT, port 0-65535")
    if not name:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give the address to listen on, e.g. 127.0.0.1:9877"
        )
    return host(name), int(port_text)
