"""The report: results, summary and verdict, as the JSON support reads.

The JSON form is a contract (schema ``sgw-reach/report/v1``, shipped as
``schema/report-v1.json``): fields are added, never renamed. Writing a
report to a file goes through a temporary file in the same folder and a
rename, so a reader sees the old report or the whole new one, never half.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from probes.base import Evidence, Reason, Status
from rules import Rule

SCHEMA_ID = "sgw-reach/report/v1"


def agent_version() -> str:
    try:
        return metadata.version("sgw-reach")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class Result:
    """One probe's verdict on one rule and target."""

    rule: Rule
    host: str
    address: str | None
    port: int
    status: Status
    reason: Reason
    detail: str
    remedy: str
    evidence: Evidence
    duration_ms: float
    # What the raw-packet diagnostics found on the path, when they ran.
    diagnosis: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        rule = self.rule
        return {
            "rule": rule.id,
            "table_rule": rule.table_rule,
            "direction": str(rule.direction),
            "source": rule.source,
            "destination": rule.destination,
            "host": self.host or None,
            "address": self.address,
            "transport": rule.transport,
            "port": self.port,
            "probe": rule.probe,
            "required": rule.required,
            "status": str(self.status),
            "reason": str(self.reason),
            "detail": self.detail,
            "remedy": self.remedy or None,
            "evidence": self.evidence,
            "duration_ms": round(self.duration_ms, 1),
            "diagnosis": self.diagnosis,
        }


@dataclass(frozen=True)
class Run:
    """What a check run was asked and when it ran."""

    gateway_type: str
    region: str
    gateway: str | None
    appliance: bool
    started: datetime
    finished: datetime


def summarize(results: list[Result]) -> dict[str, Any]:
    """Counts per status and the verdict: fail when a required rule failed
    or could not be checked because its probe broke."""
    counts = Counter(r.status for r in results)
    failing = any(
        r.rule.required and r.status in (Status.FAIL, Status.ERROR) for r in results
    )
    return {
        "passed": counts[Status.PASS],
        "failed": counts[Status.FAIL],
        "warned": counts[Status.WARN],
        "skipped": counts[Status.SKIP],
        "errors": counts[Status.ERROR],
        "verdict": "fail" if failing else "pass",
    }


def build_report(
    run: Run,
    results: list[Result],
    diagnostics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    duration = (run.finished - run.started).total_seconds() * 1000
    report: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "agent": {
            "version": agent_version(),
            "hostname": socket.gethostname(),
            "addresses": local_addresses(results),
        },
        "started_at": _iso(run.started),
        "finished_at": _iso(run.finished),
        "duration_ms": round(duration, 1),
        "gateway_type": run.gateway_type,
        "region": run.region,
        "gateway": run.gateway,
        "appliance": run.appliance,
        "summary": summarize(results),
        "results": [r.as_json() for r in results],
    }
    if diagnostics is not None:
        report["diagnostics"] = diagnostics
    return report


def _iso(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def now() -> datetime:
    return datetime.now(UTC)


def local_addresses(results: list[Result]) -> list[str]:
    """The source addresses this host uses toward the probed addresses.

    A connected UDP socket asks the kernel for its route and sends nothing.
    """
    found: set[str] = set()
    for address in {r.address for r in results if r.address}:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with (
            contextlib.suppress(OSError),
            socket.socket(family, socket.SOCK_DGRAM) as sock,
        ):
            sock.connect((address, 9))
            found.add(str(sock.getsockname()[0]))
    return sorted(found)


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False) + "\n"


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write ``content`` (text as UTF-8) to ``path`` whole, or leave the
    old file untouched.

    The new file keeps the mode of the one it replaces; a first one gets
    the mode ``open`` would give it under the umask, not mkstemp's 0600,
    so that a report written in a container can be read on its host.
    Where the file system refuses chmod, the report keeps mkstemp's mode.
    """
    folder = path.parent if str(path.parent) else Path()
    data = content.encode() if isinstance(content, str) else content
    mode = _report_mode(path)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=folder
    )
    try:
        _fill(handle, data, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _fill(handle: int, data: bytes, mode: int) -> None:
    """Write ``data`` to the file open as ``handle``, durably; close it."""
    try:
        stream = os.fdopen(handle, "wb")
    except BaseException:
        os.close(handle)
        raise
    with stream:
        # Some file systems (vfat, some network mounts) refuse chmod; a
        # report with mkstemp's 0600 is better than no report.
        with contextlib.suppress(OSError):
            os.fchmod(stream.fileno(), mode)
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def _report_mode(path: Path) -> int:
    """The existing file's permission bits, else 0o666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without setting it (os.umask would, for
    a moment, for every thread); 0o022 where /proc does not say."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0o022
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == "Umask":
            return int(value.strip(), 8)
    return 0o022
