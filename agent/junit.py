"""The report as JUnit XML, for CI systems that show test results.

One ``<testsuite>`` per report, one ``<testcase>`` per result: a failed
rule is a ``<failure>`` whose type is the reason and whose text is the
remedy and the evidence; a broken probe is an ``<error>``; a skipped
rule is ``<skipped>``; a warning passes, with the warning in
``<system-out>``. The report's verdict and run settings are properties.

Every string is cleaned of the characters XML 1.0 forbids (a hostile
banner can carry NUL or ESC), each replaced by a visible ``\\xNN`` or
``\\uNNNN`` escape, so the output always parses. Limits: one suite, no
``<testsuites>`` totals beyond it, and no per-case properties, which
many CI systems ignore.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any

# XML 1.0 section 2.2: Char ::= #x9 | #xA | #xD | [#x20-#xD7FF]
# | [#xE000-#xFFFD] | [#x10000-#x10FFFF]; everything else is refused.
_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_CLASS_PREFIX = "sgw-reach"


def clean(text: str) -> str:
    """``text`` with every character XML 1.0 forbids escaped visibly."""
    return _FORBIDDEN.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def to_junit(report: dict[str, Any]) -> str:
    """The report as a JUnit XML document (text, with its declaration)."""
    results = report["results"]
    summary = report["summary"]
    suite = ET.Element(
        "testsuite",
        _attributes(
            name=f"sgw-reach {report['gateway_type']} {report['region']}",
            tests=len(results),
            failures=summary["failed"],
            errors=summary["errors"],
            skipped=summary["skipped"],
            timestamp=_timestamp(report["started_at"]),
            time=_seconds(report["duration_ms"]),
            hostname=report["agent"]["hostname"],
        ),
    )
    _properties(suite, report)
    for result in results:
        _testcase(suite, result)
    ET.indent(suite)
    body = ET.tostring(suite, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def _attributes(**values: object) -> dict[str, str]:
    return {key: clean(str(value)) for key, value in values.items()}


def _timestamp(text: str) -> str:
    """JUnit's timestamp: an ISO date-time without zone (here UTC)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _seconds(milliseconds: float) -> str:
    return f"{milliseconds / 1000:.3f}"


def _properties(suite: ET.Element, report: dict[str, Any]) -> None:
    properties = ET.SubElement(suite, "properties")
    values = {
        "verdict": report["summary"]["verdict"],
        "gateway_type": report["gateway_type"],
        "region": report["region"],
        "gateway": report["gateway"] or "",
        "appliance": str(report["appliance"]).lower(),
        "agent_version": report["agent"]["version"],
        "started_at": report["started_at"],
        "finished_at": report["finished_at"],
        "warned": report["summary"]["warned"],
        "passed": report["summary"]["passed"],
    }
    for name, value in values.items():
        attributes = _attributes(name=name, value=value)
        ET.SubElement(properties, "property", attributes)


def _testcase(suite: ET.Element, result: dict[str, Any]) -> None:
    case = ET.SubElement(
        suite,
        "testcase",
        _attributes(
            classname=f"{_CLASS_PREFIX}.{result['direction']}",
            name=_case_name(result),
            time=_seconds(result["duration_ms"]),
        ),
    )
    status = result["status"]
    message = f"{result['reason']}: {result['detail']}"
    if status in ("fail", "error"):
        tag = "failure" if status == "fail" else "error"
        outcome = ET.SubElement(
            case, tag, _attributes(message=message, type=result["reason"])
        )
        outcome.text = clean(_explanation(result))
    elif status == "skip":
        ET.SubElement(case, "skipped", _attributes(message=result["detail"]))
    elif status == "warn":
        why = "" if result["required"] else " (the rule is not required)"
        out = ET.SubElement(case, "system-out")
        out.text = clean(f"WARNING{why}: {message}\n\n{_explanation(result)}")


def _case_name(result: dict[str, Any]) -> str:
    host = result["host"] or "-"
    if ":" in host:
        host = f"[{host}]"
    return f"{result['rule']} {host}:{result['port']}/{result['transport']}"


def _explanation(result: dict[str, Any]) -> str:
    """The remedy, the path diagnosis and the evidence, for people."""
    parts: list[str] = []
    if result.get("remedy"):
        parts.append(str(result["remedy"]))
    diagnosis = result.get("diagnosis")
    if isinstance(diagnosis, dict) and diagnosis.get("summary"):
        parts.append(f"path: {diagnosis['summary']}")
    evidence = result.get("evidence") or {}
    parts.append(f"evidence: {json.dumps(evidence, indent=2, sort_keys=True)}")
    return "\n\n".join(parts)
