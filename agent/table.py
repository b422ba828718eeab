"""Plain-text tables for people: the check's results and the matrix.

Results are grouped by direction (what the gateway reaches, what reaches
the gateway), one line per rule and target, the detail cut to the width
of the screen; the remedies of what failed follow, then a summary line.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

from rules import Rule

_GROUPS = (
    ("outbound", "Outbound: what the gateway must reach"),
    ("inbound", "Inbound: what must reach the gateway"),
)


def screen_width() -> int:
    return max(80, min(shutil.get_terminal_size((120, 24)).columns, 200))


def render_report(report: dict[str, Any], width: int | None = None) -> str:
    """The report as text: heading, tables, remedies, summary."""
    width = width or screen_width()
    lines = [_heading(report), ""]
    for direction, title in _GROUPS:
        rows = [r for r in report["results"] if r["direction"] == direction]
        if rows:
            lines += [title, *_result_table(rows, width), ""]
    lines += _remedies(report["results"], width)
    lines += _diagnostics_note(report.get("diagnostics"))
    lines.append(_summary_line(report))
    return "\n".join(lines) + "\n"


def _heading(report: dict[str, Any]) -> str:
    parts = [
        f"sgw-reach {report['agent']['version']}",
        f"{report['gateway_type']} gateway",
        f"region {report['region']}",
    ]
    if report["gateway"]:
        parts.append(f"gateway {report['gateway']}")
    if report["appliance"]:
        parts.append("hardware appliance")
    if report.get("interrupted"):
        parts.append("interrupted: only the rules measured before the stop")
    return ", ".join(parts)


def _address(result: dict[str, Any]) -> str:
    address = result["address"]
    return address if address and address != result["host"] else ""


def _result_table(rows: list[dict[str, Any]], width: int) -> list[str]:
    """Rows under a heading line per rule, aligned across the table."""
    cells = [
        (
            r["status"].upper(),
            r["reason"],
            r["host"] or "-",
            _address(r),
            r["detail"],
        )
        for r in rows
    ]
    lines = format_columns(("", "", "", "", ""), cells, width - 2)[1:]
    out: list[str] = []
    last_rule = None
    for row, line in zip(rows, lines, strict=True):
        if row["rule"] != last_rule:
            out.append(_rule_heading(row))
            last_rule = row["rule"]
        out.append("  " + line)
        if row.get("diagnosis"):
            summary = row["diagnosis"].get("summary", "")
            out.append(_cut(f"      path: {summary}", width))
    return out


def _rule_heading(row: dict[str, Any]) -> str:
    number = f", rule {row['table_rule']}" if row["table_rule"] else ""
    required = "" if row["required"] else " (not required)"
    return (
        f"  {row['port']}/{row['transport']}  {row['rule']}{number}: "
        f"{row['source']} -> {row['destination']}{required}"
    )


def format_columns(
    header: Sequence[str], rows: Iterable[Sequence[str]], width: int
) -> list[str]:
    """Align columns; the last one is cut to fit ``width``."""
    table = [tuple(header), *(tuple(row) for row in rows)]
    sizes = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    out: list[str] = []
    for row in table:
        head = "  ".join(
            cell.ljust(size) for cell, size in zip(row, sizes, strict=False)
        )
        room = max(20, width - len(head) - 4)
        out.append(f"  {head}  {_cut(row[-1], room)}".rstrip())
    return out


def _cut(text: str, room: int) -> str:
    return text if len(text) <= room else text[: room - 1] + "…"


def _remedies(results: list[dict[str, Any]], width: int) -> list[str]:
    """One line per rule and remedy; the hosts that share it are listed."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in results:
        if r["remedy"] and r["status"] != "pass":
            host = r["host"] or ""
            text = r["remedy"].replace(host, "{host}") if host else r["remedy"]
            groups.setdefault((r["rule"], text), []).append(host)
    if not groups:
        return []
    lines = ["What to change"]
    for (rule, text), hosts in groups.items():
        if len(hosts) == 1:
            line = f"{rule}: {text.replace('{host}', hosts[0])}"
        else:
            line = f"{rule}, {len(hosts)} hosts ({', '.join(hosts)}): " + text.replace(
                "{host}", "each of them"
            )
        lines += textwrap.wrap(
            line,
            width - 2,
            initial_indent="  - ",
            subsequent_indent="    ",
            break_on_hyphens=False,
        )
    return [*lines, ""]


def _diagnostics_note(diagnostics: dict[str, Any] | None) -> list[str]:
    if not diagnostics or diagnostics.get("ran"):
        return []
    return [f"Path diagnostics not run: {diagnostics.get('reason')}", ""]


def _summary_line(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"{len(report['results'])} checks: {s['passed']} passed, "
        f"{s['failed']} failed, {s['warned']} warned, {s['skipped']} skipped, "
        f"{s['errors']} errors. Verdict: {s['verdict'].upper()}"
    )


def render_rules(rules: list[Rule], width: int | None = None) -> str:
    """The matrix as a table: one line per rule."""
    width = width or screen_width()
    cells = [
        (
            rule.id,
            str(rule.table_rule or "-"),
            f"{rule.port}/{rule.transport}",
            f"{rule.source}->{rule.destination}",
            rule.direction,
            rule.probe,
            "yes" if rule.required else "no",
            rule.purpose,
        )
        for rule in rules
    ]
    header = ("ID", "RULE", "PORT", "PATH", "DIRECTION", "PROBE", "REQ", "PURPOSE")
    return "\n".join(format_columns(header, cells, width)) + "\n"
