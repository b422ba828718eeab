"""``sgw-reach report FILE``: print a saved report again.

FILE is a JSON report (``check --output``) or a support bundle (``sgw-reach
bundle``), whose ``report.json`` is read from the archive in memory: the
archive is never extracted to disk, only a regular member of at most
16 MiB is read, and the search for it stops after a bounded number of
members. The report prints as the table, JSON or JUnit XML.

A file that is not an sgw-reach report (missing, a folder, not JSON, a
truncated archive, a bundle without its report, another schema) is a
usage error: one line naming the file, exit code 2. Otherwise the exit
code is 0 whatever the report's verdict: printing is this command's job,
and the verdict is in what it prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import zlib
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import IO, Any

from agent.errors import UsageError
from agent.junit import to_junit
from agent.report import SCHEMA_ID, to_json
from agent.table import render_report

MAX_REPORT_BYTES = 16 << 20
_MAX_MEMBERS = 64
_GZIP_MAGIC = b"\x1f\x8b"
_REPORT_MEMBER = "report.json"


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "report",
        help="print a saved JSON report or a bundle's report",
        parents=[common],
    )
    parser.add_argument("file", metavar="FILE", type=Path)
    parser.add_argument("--format", choices=("table", "json", "junit"), default="table")


def run(args: argparse.Namespace) -> int:
    report = load_report(args.file)
    if args.format == "json":
        sys.stdout.write(to_json(report))
    elif args.format == "junit":
        sys.stdout.write(to_junit(report))
    else:
        sys.stdout.write(render_report(_printable(report)))
    return 0


def load_report(path: Path) -> dict[str, Any]:
    """The report in ``path`` (JSON or bundle), checked, or UsageError."""
    data = _read(path)
    if data.startswith(_GZIP_MAGIC):
        data = _from_bundle(path)
    try:
        report = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        # ValueError covers malformed JSON and bytes that are not UTF-8.
        raise UsageError(f"{path}: not a JSON report ({exc})") from exc
    problem = report_problem(report)
    if problem is not None:
        raise UsageError(f"{path}: not an sgw-reach report ({problem})")
    return dict(report)


def _read(path: Path) -> bytes:
    if path.is_dir():
        raise UsageError(f"{path}: is a folder, not a report")
    try:
        with path.open("rb") as stream:
            return _bounded(stream, path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _bounded(stream: IO[bytes], path: Path) -> bytes:
    data = stream.read(MAX_REPORT_BYTES + 1)
    if len(data) > MAX_REPORT_BYTES:
        raise UsageError(f"{path}: larger than {MAX_REPORT_BYTES >> 20} MiB")
    return data


def _from_bundle(path: Path) -> bytes:
    """``report.json`` of a bundle, read in memory, never extracted."""
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            member = _find_report(archive, path)
            stream = archive.extractfile(member)
            if stream is None:
                raise UsageError(f"{path}: {_REPORT_MEMBER} cannot be read")
            with stream:
                return _bounded(stream, path)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise UsageError(f"{path}: not a readable bundle ({exc})") from exc
    except OSError as exc:
        raise UsageError(f"{path}: not a readable bundle ({exc})") from exc


def _find_report(archive: tarfile.TarFile, path: Path) -> tarfile.TarInfo:
    for _count in range(_MAX_MEMBERS):
        member = archive.next()
        if member is None:
            break
        if member.name.removeprefix("./") != _REPORT_MEMBER:
            continue
        if not member.isfile():
            raise UsageError(f"{path}: {_REPORT_MEMBER} is not a regular file")
        if member.size > MAX_REPORT_BYTES:
            raise UsageError(
                f"{path}: {_REPORT_MEMBER} is larger than {MAX_REPORT_BYTES >> 20} MiB"
            )
        return member
    raise UsageError(f"{path}: no {_REPORT_MEMBER} in the bundle")


@cache
def _required() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The required keys of a report, its summary and a result, as the
    shipped JSON Schema lists them."""
    text = resources.files("agent").joinpath("schema/report-v1.json").read_text()
    schema = json.loads(text)
    return (
        tuple(schema["required"]),
        tuple(schema["properties"]["summary"]["required"]),
        tuple(schema["$defs"]["result"]["required"]),
    )


# The fields the table and JUnit renderers read, and their JSON types.
_REPORT_TYPES: dict[str, tuple[type, ...]] = {
    "agent": (dict,),
    "started_at": (str,),
    "finished_at": (str,),
    "duration_ms": (int, float),
    "gateway_type": (str,),
    "region": (str,),
    "gateway": (str, type(None)),
    "appliance": (bool,),
    "summary": (dict,),
    "results": (list,),
}
_AGENT_TYPES: dict[str, tuple[type, ...]] = {
    "version": (str,),
    "hostname": (str,),
}
_RESULT_TYPES: dict[str, tuple[type, ...]] = {
    "rule": (str,),
    "direction": (str,),
    "source": (str,),
    "destination": (str,),
    "host": (str, type(None)),
    "address": (str, type(None)),
    "transport": (str,),
    "port": (int,),
    "required": (bool,),
    "status": (str,),
    "reason": (str,),
    "detail": (str,),
    "remedy": (str, type(None)),
    "evidence": (dict,),
    "duration_ms": (int, float),
    "table_rule": (int, type(None)),
}
_SUMMARY_TYPES: dict[str, tuple[type, ...]] = {
    "passed": (int,),
    "failed": (int,),
    "warned": (int,),
    "skipped": (int,),
    "errors": (int,),
    "verdict": (str,),
}


def report_problem(report: Any) -> str | None:
    """What keeps ``report`` from being an sgw-reach report, or None."""
    if not isinstance(report, dict):
        return "not a JSON object"
    if report.get("schema") != SCHEMA_ID:
        return f"schema is {report.get('schema')!r}, not {SCHEMA_ID!r}"
    return next(_problems(report), None)


def _problems(report: dict[str, Any]) -> Iterator[str]:
    """Each thing wrong with the report, in the order a reader meets it;
    each step looks only at what the steps before it proved."""
    top, summary_keys, result_keys = _required()
    missing = [key for key in top if key not in report]
    if missing:
        yield f"missing {', '.join(missing)}"
    yield from _shape(report, top, _REPORT_TYPES, "the report")
    yield from _shape(report["agent"], ("version", "hostname"), _AGENT_TYPES, "agent")
    yield from _shape(report["summary"], summary_keys, _SUMMARY_TYPES, "summary")
    if not isinstance(report.get("diagnostics", {}), dict):
        yield "diagnostics is not an object"
    for index, result in enumerate(report["results"]):
        where = f"results[{index}]"
        yield from _shape(result, result_keys, _RESULT_TYPES, where)
        if not isinstance(result.get("diagnosis"), dict | None):
            yield f"{where}.diagnosis is not an object"


def _shape(
    value: Any,
    required: tuple[str, ...],
    types: dict[str, tuple[type, ...]],
    where: str,
) -> Iterator[str]:
    if not isinstance(value, dict):
        yield f"{where} is not an object"
        return
    for key in required:
        if key not in value:
            yield f"{where} has no {key}"
        wanted = types.get(key)
        if wanted is not None and not _is(value[key], wanted):
            yield f"{where}.{key} has the wrong type"


def _is(value: Any, wanted: tuple[type, ...]) -> bool:
    # JSON's true is not a number here, though Python's bool is an int.
    if isinstance(value, bool) and bool not in wanted:
        return False
    return isinstance(value, wanted)


def _printable(value: Any) -> Any:
    """The report with control characters escaped, so a crafted file
    cannot drive the terminal it is printed on."""
    if isinstance(value, str):
        return "".join(
            ch if ch.isprintable() else ch.encode("unicode_escape").decode()
            for ch in value
        )
    if isinstance(value, dict):
        return {key: _printable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_printable(item) for item in value]
    return value
