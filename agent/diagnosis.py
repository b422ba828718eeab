"""Path diagnostics for the rules that failed: where does the path break?

For each failed rule whose failure is about the path (dropped, refused,
rejected, unreachable), the raw-packet diagnostics of
:mod:`probes.pathdiag` run once per distinct address, port and transport,
all at once and within one deadline, and their finding is attached to
every result that shares it. A UDP trace sends the rule's probe's own
first datagram (a DNS query, an NTP request...), as the probe did. Raw
sockets need root or CAP_NET_RAW; without them the run says so once and
goes on without diagnostics.

:mod:`probes.pathdiag` loads scapy, which takes most of a second, so it is
imported here only when diagnostics are asked for.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from typing import Any

import structlog

from agent.report import Result
from probes.base import Deadline, Reason, Status, Transport
from probes.registry import udp_request

# A user or a container image can make diagnostics the default.
ENV_SETTING = "SGW_REACH_DIAGNOSE"
PATH_REASONS = frozenset(
    {Reason.TIMEOUT, Reason.REFUSED, Reason.PROHIBITED, Reason.UNREACHABLE}
)

Key = tuple[str, int, str]


def enabled_by_default() -> bool:
    return os.environ.get(ENV_SETTING, "").strip().lower() in ("1", "yes", "true")


def wanted(result: Result) -> bool:
    """Whether a result is a path failure worth diagnosing."""
    return (
        result.status in (Status.FAIL, Status.WARN)
        and result.reason in PATH_REASONS
        and result.address is not None
    )


async def diagnose_failures(
    results: list[Result], timeout: float
) -> tuple[list[Result], dict[str, Any]]:
    """Attach a diagnosis to each path failure; say what was done."""
    # Each target once, with the probe whose datagram a UDP trace sends.
    keys: dict[Key, str] = {}
    for result in results:
        if wanted(result):
            keys.setdefault(_key(result), result.rule.probe)
    if not keys:
        return results, {"ran": False, "reason": "no path failure to diagnose"}
    from probes import pathdiag

    missing = pathdiag.raw_capability()
    if missing is not None:
        structlog.get_logger("sgw_reach.diagnose").warning(
            "diagnose.unavailable", reason=missing
        )
        return results, {"ran": False, "reason": missing}
    found = await _run_all(dict(sorted(keys.items())), Deadline.after(timeout))
    attached = [
        replace(r, diagnosis=found.get(_key(r))) if wanted(r) else r for r in results
    ]
    return attached, {"ran": True, "targets": len(keys)}


def _key(result: Result) -> Key:
    return (result.address or "", result.port, result.rule.transport)


async def _run_all(keys: dict[Key, str], deadline: Deadline) -> dict[Key, Any]:
    from probes import pathdiag

    async def one(key: Key) -> dict[str, Any]:
        address, port, transport = key
        payload = udp_request(keys[key]) if transport == "udp" else None
        try:
            found = await pathdiag.diagnose(
                address, port, Transport(transport), deadline, payload=payload
            )
        except Exception as exc:
            # A broken diagnostic must not cost the check its report.
            structlog.get_logger("sgw_reach.diagnose").exception(
                "diagnose.crashed", address=address, port=port
            )
            return {"summary": f"diagnostics failed: {exc}", "error": str(exc)}
        return dict(found.as_json())

    answers = await asyncio.gather(*(one(key) for key in keys))
    return dict(zip(keys, answers, strict=True))
