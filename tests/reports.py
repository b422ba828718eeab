"""Small reports for tests of what keeps, serves and prints them.

`make_report` builds a schema-valid report from real matrix rules with
the statuses asked, without running a probe.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from agent.report import Result, Run, build_report, now
from probes.base import Reason, Status
from probes.registry import PROBES
from rules import Rule, load_matrix

_REASONS = {
    Status.PASS: Reason.OK,
    Status.FAIL: Reason.TIMEOUT,
    Status.WARN: Reason.REFUSED,
    Status.SKIP: Reason.NOT_CONFIGURED,
    Status.ERROR: Reason.INTERNAL_ERROR,
}


@functools.cache
def rule(rule_id: str) -> Rule:
    """A rule of the packaged matrix (read once: rules are frozen)."""
    matrix = load_matrix(None, PROBES.keys())
    return next(r for r in matrix.rules if r.id == rule_id)


def result(rule_id: str, status: str, host: str = "h.example") -> Result:
    state = Status(status)
    return Result(
        rule=rule(rule_id),
        host=host,
        address="192.0.2.1",
        port=rule(rule_id).port,
        status=state,
        reason=_REASONS[state],
        detail=f"{rule_id} is {status}",
        remedy="" if state is Status.PASS else "open the port",
        evidence={"seen": status},
        duration_ms=12.5,
    )


def make_report(
    statuses: dict[str, str], finished: datetime | None = None
) -> dict[str, Any]:
    """A report with one result per rule id, in the status given."""
    end = finished or now()
    run = Run("file", "us-east-1", "192.0.2.9", False, end - timedelta(seconds=1), end)
    return build_report(run, [result(r, s) for r, s in statuses.items()])
