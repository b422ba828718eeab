"""The watch loop, its HTTP pages and its command line, without a network:
rounds come from a stand-in runner (the lab tests run real ones)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import subprocess
import sys
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from agent.cli import build_parser, main
from agent.report import Result, Run, build_report, now
from agent.serve import Pages, WatchState, serve
from agent.store import Change, Retention, Store
from agent.watch import Describe, Schedule, Watch, stale_after
from tests.reports import make_report, result

NFS = "file.nfs.nfs-tcp"
SMB = "file.smb.smb-direct-tcp"
DESCRIBE = Describe("file", "us-east-1", "192.0.2.9", False)


class Rounds:
    """A stand-in round runner: each call takes the next set of statuses."""

    def __init__(self, plan: list[dict[str, str]], pause: float = 0.0) -> None:
        self.plan = plan
        self.pause = pause
        self.calls = 0

    async def __call__(self, on_result: Callable[[Result], None]) -> dict[str, Any]:
        statuses = self.plan[min(self.calls, len(self.plan) - 1)]
        self.calls += 1
        started = now()
        results = []
        for rule_id, status in statuses.items():
            results.append(result(rule_id, status))
            on_result(results[-1])
            await asyncio.sleep(self.pause)
        run = Run("file", "us-east-1", "192.0.2.9", False, started, now())
        return build_report(run, results)


def make_watch(
    tmp_path: Path, runner: Callable[[Callable[[Result], None]], Awaitable[Any]]
) -> tuple[Watch, Store, list[tuple[dict[str, Any], list[Change]]]]:
    store = Store.open(tmp_path)
    seen: list[tuple[dict[str, Any], list[Change]]] = []
    watch = Watch(
        runner,
        DESCRIBE,
        store,
        Retention(days=1, rounds=50),
        lambda report, changes: seen.append((report, changes)),
    )
    return watch, store, seen


def test_schedule_pause_keeps_the_interval_with_bounded_jitter() -> None:
    schedule = Schedule(every=60.0)
    pauses = [schedule.pause(elapsed=10.0) for _ in range(200)]
    assert all(50.0 <= p <= 56.0 for p in pauses)
    assert len(set(pauses)) > 1
    assert Schedule(every=1.0, jitter=0.0).pause(elapsed=5.0) == 0.0
    # An overrun: the next round starts now, without jitter.
    assert Schedule(every=3600.0).pause(3600.0) == 0.0
    assert Schedule(every=60.0).pause(elapsed=61.0) == 0.0


def test_rounds_are_stored_and_changes_reported(tmp_path: Path) -> None:
    plan = [{NFS: "pass", SMB: "pass"}, {NFS: "fail", SMB: "pass"}, {NFS: "pass"}]
    watch, store, seen = make_watch(tmp_path, Rounds(plan))
    done = asyncio.run(watch.run(Schedule(every=0.01, rounds=3, jitter=0.0)))
    assert done == 3
    assert store.round_count() == 3
    changes = [[c.summary for c in changes] for _report, changes in seen]
    assert changes[0] == []
    assert "pass -> fail" in changes[1][0]
    assert "fail -> pass" in changes[2][0]
    assert watch.state.rounds == {"pass": 2, "fail": 1}


def test_last_success_survives_a_restart(tmp_path: Path) -> None:
    watch, store, _seen = make_watch(tmp_path, Rounds([{NFS: "pass"}]))
    asyncio.run(watch.run(Schedule(every=0.01, rounds=1, jitter=0.0)))
    passed = watch.state.last_success
    again, _store, _seen = make_watch(tmp_path, Rounds([{NFS: "fail"}]))
    assert again.state.last_success == passed
    assert store.last_passes().keys() == passed.keys()


def test_a_round_that_raises_is_logged_and_the_watch_goes_on(
    tmp_path: Path,
) -> None:
    rounds = Rounds([{NFS: "pass"}])
    calls = 0

    async def flaky(on_result: Callable[[Result], None]) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(101, "Network is unreachable")
        return await rounds(on_result)

    watch, store, _seen = make_watch(tmp_path, flaky)
    with structlog.testing.capture_logs() as logs:
        done = asyncio.run(watch.run(Schedule(every=0.01, rounds=3, jitter=0.0)))
    assert done == 3
    assert store.round_count() == 2
    failed = [e for e in logs if e["event"] == "round.failed"]
    assert len(failed) == 1
    assert "Network is unreachable" in failed[0]["error"]
    assert watch.state.failures == 1


def test_a_slow_round_delays_the_next_and_is_counted(tmp_path: Path) -> None:
    watch, store, _seen = make_watch(tmp_path, Rounds([{NFS: "pass"}], pause=0.05))
    asyncio.run(watch.run(Schedule(every=0.01, rounds=3, jitter=0.0)))
    assert watch.state.overruns == 2
    assert store.round_count() == 3


def test_stop_mid_round_keeps_what_was_measured(tmp_path: Path) -> None:
    statuses = {NFS: "pass", SMB: "fail", "file.nfs.mountd-tcp": "pass"}
    watch, store, seen = make_watch(tmp_path, Rounds([statuses], pause=5.0))

    async def scenario() -> int:
        task = asyncio.create_task(watch.run(Schedule(every=60.0)))
        await asyncio.sleep(0.2)
        watch.stop.set()
        async with asyncio.timeout(5):
            return await task

    assert asyncio.run(scenario()) == 0
    kept = store.last_report()
    assert kept is not None
    assert kept["interrupted"] is True
    assert [r["rule"] for r in kept["results"]] == [NFS]
    assert store.rounds()[0]["interrupted"] is True
    assert watch.state.last_report is None
    assert len(seen) == 1


def test_a_store_that_fails_does_not_end_the_watch(tmp_path: Path) -> None:
    watch, store, seen = make_watch(tmp_path, Rounds([{NFS: "pass"}]))
    store.close()
    asyncio.run(watch.run(Schedule(every=0.01, rounds=2, jitter=0.0)))
    assert len(seen) == 2
    assert watch.state.rounds == {"pass": 2}


async def http_get(port: int, target: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    head, _, body = answer.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def test_pages_over_http(tmp_path: Path) -> None:
    plan = [{NFS: "pass", SMB: "pass"}, {NFS: "fail", SMB: "pass"}]
    watch, store, _seen = make_watch(tmp_path, Rounds(plan))

    async def scenario() -> dict[str, tuple[int, str]]:
        server = await serve(Pages(watch.state, store), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        got = {"before": await http_get(port, "/healthz")}
        await watch.run(Schedule(every=0.01, rounds=1, jitter=0.0))
        got["healthy"] = await http_get(port, "/healthz")
        await watch.run(Schedule(every=0.01, rounds=1, jitter=0.0))
        for page in ("/healthz", "/metrics", "/report", f"/history?rule={NFS}"):
            got[page] = await http_get(port, page)
        got["head"] = await http_get(port, "/healthz", "HEAD")
        got["post"] = await http_get(port, "/report", "POST")
        got["missing"] = await http_get(port, "/nothing")
        got["no rule"] = await http_get(port, "/history")
        got["bad limit"] = await http_get(port, f"/history?rule={NFS}&limit=x")
        server.close()
        return got

    got = asyncio.run(scenario())
    assert got["before"][0] == 503
    assert got["healthy"] == (200, got["healthy"][1])
    assert got["healthy"][1].startswith("pass")
    assert got["/healthz"][0] == 503
    status, metrics = got["/metrics"]
    assert status == 200
    values = parse_metrics(metrics)
    labels = {"rule": NFS, "host": "h.example", "port": "2049", "transport": "tcp"}
    status_of = {**labels, "required": "true"}
    assert values[key("sgw_reach_rule_status", status="fail", **status_of)] == 1
    assert values[key("sgw_reach_rule_status", status="pass", **status_of)] == 0
    assert values[key("sgw_reach_rule_reason", reason="timeout", **labels)] == 1
    assert key("sgw_reach_rule_last_success_timestamp_seconds", **labels) in values
    assert values[key("sgw_reach_rule_duration_seconds", **labels)] == 0.0125
    assert values[key("sgw_reach_rounds_total", verdict="pass")] == 1
    assert values[key("sgw_reach_rounds_total", verdict="fail")] == 1
    assert values[key("sgw_reach_round_overruns_total")] == 0
    assert values[key("sgw_reach_round_failures_total")] == 0
    assert key("sgw_reach_watch_start_timestamp_seconds") in values
    assert values[key("sgw_reach_tasks")] >= 1
    assert key("sgw_reach_round_duration_seconds") in values
    assert key("sgw_reach_last_round_timestamp_seconds") in values
    assert json.loads(got["/report"][1])["summary"]["verdict"] == "fail"
    history = json.loads(got[f"/history?rule={NFS}"][1])
    assert [r["status"] for r in history["results"]] == ["fail", "pass"]
    assert got["head"] == (503, "")
    assert got["post"][0] == 405
    assert got["missing"][0] == 404
    assert got["no rule"][0] == 400
    assert got["bad limit"][0] == 400


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        key(sample.name, **sample.labels): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_http_rejects_junk_and_oversized_heads(tmp_path: Path) -> None:
    watch, store, _seen = make_watch(tmp_path, Rounds([{NFS: "pass"}]))

    async def send(port: int, data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        async with asyncio.timeout(5):
            answer = await reader.read()
        writer.close()
        return answer

    history = f"/history?rule={NFS}"
    targets = [
        "//[",
        f"{history}&limit=%C2%B2",
        f"{history}&limit=\u00b2",
        f"{history}&limit={'9' * 5000}",
    ]

    async def scenario() -> list[bytes]:
        server = await serve(Pages(watch.state, store), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        answers = [
            await send(port, b"\x16\x03\x01junk\r\n\r\n"),
            await send(port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"),
        ]
        for target in targets:
            head = f"GET {target} HTTP/1.1\r\n\r\n"
            answers.append(await send(port, head.encode("latin-1")))
        # A store that cannot be read is the watch's trouble, not the client's.
        store.close()
        request = f"GET {history} HTTP/1.1\r\n\r\n"
        answers.append(await send(port, request.encode()))
        server.close()
        return answers

    junk, huge, *bad_targets, no_store = asyncio.run(scenario())
    assert junk.startswith(b"HTTP/1.1 400")
    assert huge.startswith(b"HTTP/1.1 431")
    for target, answer in zip(targets, bad_targets, strict=True):
        assert answer.startswith(b"HTTP/1.1 400"), (target, answer)
    assert no_store.startswith(b"HTTP/1.1 503")


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_long_watch_keeps_descriptors_tasks_and_memory_flat(
    tmp_path: Path,
) -> None:
    plan = [{NFS: "pass", SMB: "pass"}, {NFS: "fail", SMB: "pass"}]
    watch, store, seen = make_watch(tmp_path, Rounds(plan * 200))
    counts: list[tuple[int, int, int]] = []

    async def scenario() -> None:
        server = await serve(Pages(watch.state, store), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        for _ in range(30):
            await watch.run(Schedule(every=0.001, rounds=10, jitter=0.0))
            assert (await http_get(port, "/metrics"))[0] == 200
            # What the test itself keeps of each round is not the watch's.
            seen.clear()
            gc.collect()
            memory = tracemalloc.get_traced_memory()[0]
            counts.append((open_descriptors(), len(asyncio.all_tasks()), memory))
        server.close()

    tracemalloc.start()
    try:
        asyncio.run(scenario())
    finally:
        tracemalloc.stop()
    assert store.round_count() == 50
    descriptors, tasks, memory = zip(*counts, strict=True)
    assert max(descriptors[5:]) <= descriptors[4], descriptors
    assert set(tasks) == {tasks[0]}, tasks
    # Past the first rounds, a leak of even a result a round would show.
    assert max(memory[5:]) - memory[4] < 256 * 1024, memory


def test_watch_command_runs_bounded_rounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "watch",
        "--type",
        "file",
        "--region",
        "us-east-1",
        "--only",
        "file.nfs.mountd-udp",
        "--every",
        "10ms",
        "--rounds",
        "3",
        "--state-dir",
        str(tmp_path / "state"),
        "--output",
        str(tmp_path / "last.json"),
    ]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all("pass: 0 passed" in line for line in lines)
    store = Store.open_existing(tmp_path / "state")
    assert store is not None
    assert store.round_count() == 3
    last = json.loads((tmp_path / "last.json").read_text())
    assert last == store.last_report()
    log = (tmp_path / "state" / "agent.log").read_text().splitlines()
    assert sum('"round.finished"' in line for line in log) == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--every", "0"], "--every: '0' is not a duration"),
        (["--every", "5x"], "--every: '5x' is not a duration"),
        (["--rounds", "0"], "--rounds: '0' is not a whole number"),
        (["--listen", "9877"], "--listen: '9877': give the address"),
        (["--listen", "host name:1"], "is not a host name"),
        (["--state-dir", "/proc/1/nope"], "--state-dir /proc/1/nope"),
        (["--format", "junit"], "--format junit: a watch prints"),
        (["--keep-days", "0"], "--keep-days: '0' is not a number of days"),
        (["--keep-days", "7d"], "--keep-days: '7d' is not a number of days"),
        (["--keep-rounds", "-1"], "--keep-rounds: '-1' is not a whole number"),
    ],
)
def test_watch_bad_input_is_one_line(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["watch", "--type", "file", "--region", "us-east-1", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_a_junit_format_variable_is_for_check_not_watch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SGW_REACH_FORMAT", "junit")
    required = ["--type", "file", "--region", "us-east-1"]
    assert build_parser().parse_args(["check", *required]).format == "junit"
    assert main(["watch", *required]) == 2
    err = capsys.readouterr().err
    assert "--format junit: a watch prints" in err
    assert err.count("\n") == 1


def test_listen_on_a_taken_port_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [
            "watch",
            "--type",
            "file",
            "--region",
            "us-east-1",
            "--only",
            "file.nfs.mountd-udp",
            "--state-dir",
            str(tmp_path),
            "--listen",
            f"127.0.0.1:{port}",
        ]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--listen 127.0.0.1:{port}: cannot listen" in err
    assert err.count("\n") == 1


def _without_file_override(argv: list[str]) -> list[str]:
    """argv run as a process that file permissions bind: root without the
    capabilities that override them."""
    if os.geteuid() != 0:
        return argv
    drop = "-dac_override,-dac_read_search,-fowner"
    return ["setpriv", "--bounding-set", drop, "--", *argv]


@pytest.mark.parametrize("read_only", ["", "sgw-reach.db", "agent.log"])
def test_a_state_dir_that_cannot_be_written_fails_at_the_start(
    tmp_path: Path, read_only: str
) -> None:
    state = tmp_path / "state"
    Store.open(state).close()
    (state / "agent.log").write_text("")
    (state / read_only).chmod(0o500 if not read_only else 0o400)
    argv = [
        sys.executable,
        "-m",
        "agent",
        "watch",
        "--type",
        "file",
        "--region",
        "us-east-1",
        "--only",
        "file.nfs.mountd-udp",
        "--rounds",
        "1",
        "--state-dir",
        str(state),
    ]
    done = subprocess.run(
        _without_file_override(argv),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"--state-dir {state}" in lines[0]
    assert done.stdout == ""


def test_healthz_is_503_once_the_last_round_is_stale(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    state = WatchState()
    report = make_report({NFS: "pass"})
    state.record(report)
    fresh = Pages(state, store, stale_after=60.0).answer("/healthz")
    assert fresh.status == 200
    state.last_report = {**report, "finished_at": "2020-01-01T00:00:00.000Z"}
    stale = Pages(state, store, stale_after=60.0).answer("/healthz")
    assert stale.status == 503
    assert stale.body.startswith(b"stale, no round for ")
    assert Pages(state, store).answer("/healthz").status == 200


def test_stale_after_allows_three_intervals_and_a_round() -> None:
    args = argparse.Namespace(every=300.0, timeout=5.0, diagnose_timeout=10.0)
    assert stale_after(args) == 915.0
