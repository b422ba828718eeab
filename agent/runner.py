"""Run the planned checks concurrently, each within its own deadline.

At most ``concurrency`` probes run at once. Each gets one absolute
deadline, set when it starts, that every step of the probe shares; a
guard a little past it cancels a probe that overruns, so one broken probe
cannot hold up the run. A probe that raises becomes an ``error`` result
with the exception's message, and the other probes go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import structlog

from agent.plan import Check, Options
from agent.remedies import remedy_for
from agent.report import Result
from probes.base import (
    Deadline,
    Outcome,
    Probe,
    ProbeRequest,
    ProbeSettings,
    Reason,
    Status,
    Transport,
)

# How long past its deadline a probe may take to wind down before the
# guard cancels it.
GRACE_SECONDS = 1.0

Progress = Callable[[Result, int, int], None]


async def run_checks(
    checks: list[Check],
    settings: ProbeSettings,
    options: Options,
    probes: Mapping[str, Probe],
    progress: Progress | None = None,
) -> list[Result]:
    """Run every check and return their results in plan order."""
    gate = asyncio.Semaphore(options.concurrency)
    done = 0

    async def one(check: Check) -> Result:
        nonlocal done
        if check.decided is not None:
            result = _result(check, check.decided, 0.0)
            _log_result(_logger(check), result)
        else:
            async with gate:
                probe = probes[check.rule.probe]
                result = await _run_one(check, probe, settings, options.timeout)
        done += 1
        if progress is not None:
            progress(result, done, len(checks))
        return result

    return list(await asyncio.gather(*(one(check) for check in checks)))


async def _run_one(
    check: Check, probe: Probe, settings: ProbeSettings, timeout: float
) -> Result:
    log = _logger(check)
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = Deadline(started + timeout)
    request = ProbeRequest(
        host=check.host,
        port=check.port,
        transport=Transport(check.rule.transport),
        deadline=deadline,
        settings=settings,
        address=check.address,
        log=log,
    )
    log.debug("probe.start", timeout=timeout)
    outcome = await _guarded(probe, request, log)
    result = _result(check, outcome, (loop.time() - started) * 1000)
    _log_result(log, result)
    return result


Logger = structlog.typing.FilteringBoundLogger


def _logger(check: Check) -> Logger:
    log: Logger = structlog.get_logger("sgw_reach.probe").bind(
        rule=check.rule.id,
        host=check.host,
        port=check.port,
        probe=check.rule.probe,
    )
    return log


def _log_result(log: Logger, result: Result) -> None:
    """The one INFO event of every result, a probe's or one decided
    without a probe (a rule skipped for a missing input)."""
    log.info(
        "probe.result",
        status=str(result.status),
        reason=str(result.reason),
        address=result.address,
        duration_ms=round(result.duration_ms, 1),
        detail=result.detail,
    )


async def _guarded(probe: Probe, request: ProbeRequest, log: Logger) -> Outcome:
    try:
        async with asyncio.timeout_at(request.deadline.when + GRACE_SECONDS):
            return await probe(request)
    except TimeoutError:
        log.warning("probe.overran", deadline=request.deadline.when)
        return Outcome(
            Status.FAIL,
            Reason.TIMEOUT,
            "the probe did not finish within its deadline",
        )
    except Exception as exc:
        # A probe's bug must not end the run: it becomes an error result.
        log.exception("probe.crashed")
        return Outcome(
            Status.ERROR,
            Reason.INTERNAL_ERROR,
            f"the probe failed: {type(exc).__name__}: {exc}",
        )


def _result(check: Check, outcome: Outcome, duration_ms: float) -> Result:
    status = outcome.status
    # A rule the matrix does not require cannot fail the check: its failure
    # is shown as a warning, with the same reason and remedy.
    if status is Status.FAIL and not check.rule.required:
        status = Status.WARN
    remedy = outcome.remedy
    if not remedy and status in (Status.FAIL, Status.WARN, Status.ERROR):
        remedy = remedy_for(check.rule, outcome.reason, check.host, check.port)
    return Result(
        rule=check.rule,
        host=check.host,
        address=outcome.address or check.address,
        port=check.port,
        status=status,
        reason=outcome.reason,
        detail=outcome.detail,
        remedy=remedy,
        evidence=outcome.evidence,
        duration_ms=duration_ms,
    )
