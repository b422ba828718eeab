"""``sgw-reach watch``: the check on a schedule, remembered and served.

Rounds start every ``--every`` plus a small random jitter (up to a tenth
of the interval, at most 30 s), so a fleet started together drifts
apart. A round never overlaps the next: one that takes longer than the
interval delays the next, which then starts at once, and the overrun is
logged and counted. Each round's report goes to the store in the state
directory, which is pruned by age and count; a rule whose status changed
since its last result is logged with both results.

SIGTERM and SIGINT cancel the round in flight: the results it had
measured are kept as an interrupted round, and the watch exits 0. A
network that is down only makes rounds fail; the watch goes on. Exit
codes: 0 when the watch ends as asked (after ``--rounds`` or on a
signal), 2 for bad input, including a state directory that cannot be
written or an address that cannot be served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import structlog

from agent import inputs
from agent.errors import UsageError
from agent.logs import FileSink, configure
from agent.report import Result, Run, build_report, now, write_atomic
from agent.serve import Pages, WatchState, epoch, serve
from agent.store import Change, Retention, Store, StoreError, default_state_dir

LOG_FILE = "agent.log"
_JITTER_SHARE = 0.1
_JITTER_CAP = 30.0
_log = structlog.get_logger("sgw_reach.watch")

RoundRunner = Callable[[Callable[[Result], None]], Awaitable[dict[str, Any]]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a watch, beside those of a check."""
    add = parser.add_argument
    add(
        "--every",
        metavar="DURATION",
        type=inputs.duration,
        default=300.0,
        help="start a round this often, e.g. 30s, 5m, 1h (default 5m)",
    )
    add("--rounds", metavar="N", type=inputs.positive_count, help="stop after N")
    add(
        "--state-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="where the store and the log are kept (default "
        "$SGW_REACH_STATE_DIR, $STATE_DIRECTORY or ~/.local/state/sgw-reach)",
    )
    add("--keep-days", metavar="DAYS", type=inputs.days, default=7.0)
    add("--keep-rounds", metavar="N", type=inputs.positive_count, default=2000)
    add(
        "--listen",
        metavar="ADDR:PORT",
        type=inputs.listen_address,
        help="serve /metrics, /healthz, /report and /history over HTTP",
    )


@dataclass(frozen=True)
class Schedule:
    every: float
    rounds: int | None = None
    jitter: float | None = None

    def pause(self, elapsed: float) -> float:
        """Seconds to wait after a round that took ``elapsed``: none after
        a round that overran, else the rest of the interval and a jitter."""
        if elapsed >= self.every:
            return 0.0
        cap = self.jitter
        if cap is None:
            cap = min(self.every * _JITTER_SHARE, _JITTER_CAP)
        return self.every - elapsed + random.uniform(0.0, cap)


@dataclass(frozen=True)
class Describe:
    """What a partial report needs to say about the check."""

    gateway_type: str
    region: str
    gateway: str | None
    appliance: bool


class Watch:
    """Rounds on a schedule, each kept in the store and the state."""

    def __init__(
        self,
        run_round: RoundRunner,
        describe: Describe,
        store: Store,
        retention: Retention,
        on_round: Callable[[dict[str, Any], list[Change]], None],
    ) -> None:
        self._run_round = run_round
        self._describe = describe
        self._store = store
        self._retention = retention
        self._on_round = on_round
        self.state = WatchState()
        with suppress(StoreError):
            for target, at in store.last_passes().items():
                self.state.last_success[target] = epoch(at)
        self.stop = asyncio.Event()

    async def run(self, schedule: Schedule) -> int:
        """Run rounds until ``schedule.rounds`` or ``stop``; return the
        number of rounds finished."""
        loop = asyncio.get_running_loop()
        finished = 0
        while not self.stop.is_set():
            started = loop.time()
            if not await self._round():
                break
            finished += 1
            self.state.tasks = len(asyncio.all_tasks())
            if schedule.rounds is not None and finished >= schedule.rounds:
                break
            elapsed = loop.time() - started
            if elapsed > schedule.every:
                self.state.overruns += 1
                _log.warning(
                    "round.overran",
                    seconds=round(elapsed, 3),
                    every=schedule.every,
                    note="the next round starts now, not on schedule",
                )
            with suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), schedule.pause(elapsed))
        return finished

    async def _round(self) -> bool:
        """One round; False when a stop cancelled it."""
        measured: list[Result] = []
        started = now()
        task = asyncio.ensure_future(self._run_round(measured.append))
        stopping = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if task.done():
            self._finish(task)
            return True
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        self._keep_partial(started, measured)
        return False

    def _finish(self, task: asyncio.Future[dict[str, Any]]) -> None:
        """Keep the round's report; a round that raised is logged and the
        watch goes on, as it must through an outage of any kind."""
        try:
            report = task.result()
        except Exception as exc:
            _log.error("round.failed", error=f"{type(exc).__name__}: {exc}")
            self.state.failures += 1
            return
        self._keep(report, interrupted=False)

    def _keep_partial(self, started: datetime, measured: list[Result]) -> None:
        if not measured:
            _log.info("round.cancelled", measured=0)
            return
        d = self._describe
        run = Run(d.gateway_type, d.region, d.gateway, d.appliance, started, now())
        report = build_report(run, measured)
        report["interrupted"] = True
        _log.info("round.cancelled", measured=len(measured))
        self._keep(report, interrupted=True)

    def _keep(self, report: dict[str, Any], interrupted: bool) -> None:
        try:
            round_id, changes = self._store.save_round(report, interrupted)
            self._store.prune(self._retention)
        except StoreError as exc:
            # A full disk must not end the watch: the metrics and the
            # report file still tell what the round found.
            _log.error("store.unwritable", error=str(exc))
            round_id, changes = 0, []
        if not interrupted:
            self.state.record(report)
        for change in changes:
            _log_change(change)
        summary = report["summary"]
        _log.info(
            "round.finished",
            round=round_id,
            verdict=summary["verdict"],
            interrupted=interrupted,
            duration_ms=report["duration_ms"],
            **{k: v for k, v in summary.items() if k != "verdict"},
        )
        self._on_round(report, changes)


def _log_change(change: Change) -> None:
    worse = change.current["status"] in ("fail", "error")
    emit = _log.warning if worse else _log.info
    emit(
        "rule.changed",
        rule=change.rule,
        host=change.host,
        port=change.port,
        previous=change.previous,
        current=change.current,
    )


def run(
    args: argparse.Namespace, prepare: Callable[[], RoundRunner], level: str
) -> int:
    """Start the watch from parsed options, logging at ``level``;
    ``prepare`` validates the check and returns a runner of one round."""
    if args.format == "junit":
        raise UsageError(
            "--format junit: a watch prints a line or a JSON report per "
            "round; `sgw-reach report --format junit` converts a saved one"
        )
    state_dir = args.state_dir or default_state_dir()
    try:
        store = Store.open(state_dir)
    except StoreError as exc:
        raise UsageError(f"--state-dir {exc}") from exc
    sink = FileSink(state_dir / LOG_FILE)
    try:
        sink.open()
        run_round = prepare()
        return asyncio.run(_main(args, run_round, store, sink, level))
    except OSError as exc:
        raise UsageError(
            f"--state-dir {state_dir}: cannot write {LOG_FILE}: {exc.strerror or exc}"
        ) from exc
    finally:
        sink.close()
        store.close()


async def _main(
    args: argparse.Namespace,
    run_round: RoundRunner,
    store: Store,
    sink: FileSink,
    level: str,
) -> int:
    configure(level, sink=sink)
    watch = Watch(
        run_round,
        Describe(args.gateway_type, args.region, args.gateway, args.appliance),
        store,
        Retention(args.keep_days, args.keep_rounds),
        lambda report, changes: _emit(args, report, changes, sys.stdout),
    )
    # The handlers go in first, so a stop during start-up already ends
    # the watch as one during a round does.
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stopper(watch, signum))
    server = await _listen(args, watch, store)
    try:
        await watch.run(Schedule(args.every, args.rounds))
    finally:
        if server is not None:
            server.close()
    return 0


def _stopper(watch: Watch, signum: int) -> Callable[[], None]:
    def stop() -> None:
        _log.info("watch.stopping", signal=signal.Signals(signum).name)
        watch.stop.set()

    return stop


async def _listen(
    args: argparse.Namespace, watch: Watch, store: Store
) -> asyncio.Server | None:
    if args.listen is None:
        return None
    host, port = args.listen
    try:
        pages = Pages(watch.state, store, stale_after(args))
        return await serve(pages, host, port)
    except OSError as exc:
        raise UsageError(
            f"--listen {host}:{port}: cannot listen: {exc.strerror or exc}"
        ) from exc


def stale_after(args: argparse.Namespace) -> float:
    """How old the last round may be before /healthz calls the watch
    stale: three intervals, and the longest a round itself may take."""
    return float(3 * args.every + args.timeout + args.diagnose_timeout)


def _emit(
    args: argparse.Namespace,
    report: dict[str, Any],
    changes: list[Change],
    out: TextIO,
) -> None:
    """One line per round on standard output (the whole report as a JSON
    line with --format json), and the report file rewritten whole."""
    if args.format == "json":
        out.write(json.dumps(report) + "\n")
    else:
        out.write(summary_line(report) + "\n")
        for change in changes:
            out.write(f"  changed: {change.summary}\n")
    out.flush()
    if args.output is not None:
        try:
            write_atomic(args.output, json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            _log.error("report.unwritable", path=str(args.output), error=str(exc))


def summary_line(report: dict[str, Any]) -> str:
    s = report["summary"]
    cut = " (interrupted)" if report.get("interrupted") else ""
    return (
        f"{report['finished_at']} {s['verdict']}{cut}: {s['passed']} passed, "
        f"{s['failed']} failed, {s['warned']} warned, {s['skipped']} skipped, "
        f"{s['errors']} errors in {report['duration_ms'] / 1000:.1f} s"
    )
