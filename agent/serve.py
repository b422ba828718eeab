"""The HTTP face of a watch: metrics, health, the last report, history.

``/metrics`` is the Prometheus text format, built from the last round
each time it is scraped, so a rule that leaves the plan leaves the
metrics too. ``/healthz`` answers 200 when the last round passed and 503
otherwise (before the first round as well, and once the last round is
older than ``stale_after`` seconds: a watch whose rounds have stopped
coming is not healthy, whatever its last verdict). ``/report`` is the last JSON
report; ``/history?rule=ID[&limit=N]`` the latest results of one rule.

The server is small on purpose: GET and HEAD only, one request per
connection, the request head bounded in size and in time, so a client
that stalls or floods cannot hold the watch.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from agent.store import Store, StoreError, target_of

_HEAD_LIMIT = 8192
_HEAD_SECONDS = 5.0
_HISTORY_LIMIT = 1000
_STATUSES = ("pass", "fail", "warn", "skip", "error")
_LABELS = ("rule", "host", "port", "transport")
_log = structlog.get_logger("sgw_reach.serve")


@dataclass
class WatchState:
    """What the watch has seen so far, for the metrics and the pages."""

    last_report: dict[str, Any] | None = None
    rounds: dict[str, int] = field(default_factory=dict)
    overruns: int = 0
    # Rounds that ended in an exception, not a report.
    failures: int = 0
    last_success: dict[tuple[str, str, int], float] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    # The event loop's tasks once the last round ended: a count that grows
    # round by round is a leak a long watch would die of.
    tasks: int = 0

    def record(self, report: dict[str, Any]) -> None:
        """Take in a finished round's report."""
        self.last_report = report
        verdict = report["summary"]["verdict"]
        self.rounds[verdict] = self.rounds.get(verdict, 0) + 1
        finished = epoch(report["finished_at"])
        for result in report["results"]:
            if result["status"] == "pass":
                self.last_success[target_of(result)] = finished

    @property
    def healthy(self) -> bool:
        report = self.last_report
        return report is not None and report["summary"]["verdict"] == "pass"


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class WatchCollector(Collector):
    """Prometheus metrics of the watch, read from its state on scrape."""

    def __init__(self, state: WatchState) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        state = self._state
        rounds = CounterMetricFamily(
            "sgw_reach_rounds", "Rounds finished, by verdict.", labels=["verdict"]
        )
        for verdict in ("pass", "fail"):
            rounds.add_metric([verdict], state.rounds.get(verdict, 0))
        yield rounds
        yield CounterMetricFamily(
            "sgw_reach_round_overruns",
            "Rounds that took longer than the interval.",
            value=state.overruns,
        )
        yield CounterMetricFamily(
            "sgw_reach_round_failures",
            "Rounds that broke off with an error instead of a report.",
            value=state.failures,
        )
        yield GaugeMetricFamily(
            "sgw_reach_tasks",
            "The watch's asyncio tasks alive when the last round ended.",
            value=state.tasks,
        )
        yield GaugeMetricFamily(
            "sgw_reach_watch_start_timestamp_seconds",
            "When the watch started, in seconds since the epoch.",
            value=state.started,
        )
        if state.last_report is not None:
            yield from _round_metrics(state.last_report)
            yield from _rule_metrics(state.last_report, state.last_success)


def _round_metrics(report: dict[str, Any]) -> Iterable[Metric]:
    yield GaugeMetricFamily(
        "sgw_reach_round_duration_seconds",
        "How long the last round took.",
        value=report["duration_ms"] / 1000,
    )
    yield GaugeMetricFamily(
        "sgw_reach_last_round_timestamp_seconds",
        "When the last round finished, in seconds since the epoch.",
        value=epoch(report["finished_at"]),
    )


def _rule_metrics(
    report: dict[str, Any], last_success: dict[tuple[str, str, int], float]
) -> Iterable[Metric]:
    status = GaugeMetricFamily(
        "sgw_reach_rule_status",
        "1 for the rule's current status, 0 for the others.",
        labels=[*_LABELS, "required", "status"],
    )
    reason = GaugeMetricFamily(
        "sgw_reach_rule_reason",
        "The reason of the rule's last result (always 1).",
        labels=[*_LABELS, "reason"],
    )
    duration = GaugeMetricFamily(
        "sgw_reach_rule_duration_seconds",
        "How long the rule's last probe took.",
        labels=list(_LABELS),
    )
    success = GaugeMetricFamily(
        "sgw_reach_rule_last_success_timestamp_seconds",
        "When the rule last passed, in seconds since the epoch.",
        labels=list(_LABELS),
    )
    for result in report["results"]:
        labels = _labels(result)
        required = str(result["required"]).lower()
        for name in _STATUSES:
            value = float(result["status"] == name)
            status.add_metric([*labels, required, name], value)
        reason.add_metric([*labels, result["reason"]], 1.0)
        duration.add_metric(labels, result["duration_ms"] / 1000)
        when = last_success.get(target_of(result))
        if when is not None:
            success.add_metric(labels, when)
    yield from (status, reason, duration, success)


def _labels(result: dict[str, Any]) -> list[str]:
    host = result["host"] or ""
    return [result["rule"], host, str(result["port"]), result["transport"]]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"


_PHRASES = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class Pages:
    """The answers of the HTTP server, from the watch's state and store."""

    def __init__(
        self, state: WatchState, store: Store, stale_after: float | None = None
    ) -> None:
        self._state = state
        self._store = store
        self._stale_after = stale_after
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(WatchCollector(state))

    def answer(self, target: str) -> Response:
        try:
            parts = urlsplit(target)
        except ValueError:
            # A target such as "//[" reads as a broken IPv6 authority.
            return _text(400, "bad request target\n")
        route: dict[str, Callable[[dict[str, list[str]]], Response]] = {
            "/metrics": self._metrics,
            "/healthz": self._healthz,
            "/report": self._report,
            "/history": self._history,
        }
        page = route.get(parts.path)
        if page is None:
            return _json(404, {"error": f"no page {parts.path}"})
        return page(parse_qs(parts.query))

    def _metrics(self, _query: dict[str, list[str]]) -> Response:
        return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)

    def _healthz(self, _query: dict[str, list[str]]) -> Response:
        report = self._state.last_report
        if report is None:
            return _text(503, "no round has finished yet\n")
        summary = report["summary"]
        line = (
            f"{summary['verdict']}: {summary['failed']} failed,"
            f" {summary['errors']} errors at {report['finished_at']}\n"
        )
        age = time.time() - epoch(report["finished_at"])
        if self._stale_after is not None and age > self._stale_after:
            return _text(503, f"stale, no round for {age:.0f} s; last {line}")
        return _text(200 if self._state.healthy else 503, line)

    def _report(self, _query: dict[str, list[str]]) -> Response:
        report = self._state.last_report
        if report is None:
            return _json(404, {"error": "no round has finished yet"})
        return _json(200, report)

    def _history(self, query: dict[str, list[str]]) -> Response:
        rule = (query.get("rule") or [""])[0]
        limit_text = (query.get("limit") or ["100"])[0]
        if not rule:
            return _json(400, {"error": "give the rule: /history?rule=ID"})
        limit = _parse_limit(limit_text)
        if limit is None:
            return _json(400, {"error": f"limit must be 1-{_HISTORY_LIMIT}"})
        try:
            rows = self._store.history(rule, limit)
        except StoreError as exc:
            _log.warning("serve.store_failed", error=str(exc))
            return _json(503, {"error": "the store cannot be read"})
        return _json(200, {"rule": rule, "results": rows})


def _parse_limit(text: str) -> int | None:
    # isdigit alone lets through digits int() refuses, such as "²", and
    # int() refuses over 4300 digits, which fit in a request head.
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        return None
    limit = int(text)
    return limit if 0 < limit <= _HISTORY_LIMIT else None


def _json(status: int, body: Any) -> Response:
    return Response(status, (json.dumps(body, indent=2) + "\n").encode())


def _text(status: int, body: str) -> Response:
    return Response(status, body.encode(), "text/plain; charset=utf-8")


async def serve(pages: Pages, host: str, port: int) -> asyncio.Server:
    """Start serving ``pages``; raise OSError if the address is taken."""

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            response, head_only = await _read_request(reader, pages)
            await _write_response(writer, response, head_only)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port, limit=_HEAD_LIMIT)
    bound = server.sockets[0].getsockname()
    _log.info("serve.listening", address=bound[0], port=bound[1])
    return server


async def _read_request(
    reader: asyncio.StreamReader, pages: Pages
) -> tuple[Response, bool]:
    try:
        async with asyncio.timeout(_HEAD_SECONDS):
            head = await reader.readuntil(b"\r\n\r\n")
    except TimeoutError:
        return _text(408, "request head too slow\n"), False
    except asyncio.LimitOverrunError:
        return _text(431, "request head too large\n"), False
    words = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(words) != 3 or not words[2].startswith("HTTP/1."):
        return _text(400, "not an HTTP/1 request\n"), False
    method, target = words[0], words[1]
    if method not in ("GET", "HEAD"):
        return _text(405, "only GET and HEAD\n"), False
    return pages.answer(target), method == "HEAD"


async def _write_response(
    writer: asyncio.StreamWriter, response: Response, head_only: bool
) -> None:
    phrase = _PHRASES.get(response.status, "")
    head = (
        f"HTTP/1.1 {response.status} {phrase}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode() + (b"" if head_only else response.body))
    async with asyncio.timeout(_HEAD_SECONDS):
        await writer.drain()
