"""`sgw-reach watch` against the lab's real servers.

The watch runs as a command in the agent namespace; its pages are read
over real HTTP from inside that namespace, faults are nftables rules
added between rounds, and the store is read back after the watch ends.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.store import Store
from tests.lab import Lab, netns
from tests.lab import topology as t
from tests.schema import validate_report

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("faults")]

PORT = 9877
SSH_RULE = "common.support-ssh"
ISCSI_RULE = "iscsi.target"


def watch_argv(lab: Lab, state: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agent",
        "watch",
        "--type",
        "volume",
        "--region",
        "us-east-1",
        "--gateway",
        t.GATEWAY,
        "--support-host",
        t.SSH,
        "--ntp-server",
        t.NTP_GOOD,
        "--dns-server",
        t.DNS,
        "--ca-bundle",
        str(lab.ca_bundle),
        "--state-dir",
        str(state),
        "--log-level",
        "info",
        *extra,
    ]


class Watching:
    """The watch as a process in the agent namespace; its output goes to
    files, so a long run cannot fill a pipe and stall."""

    def __init__(self, lab: Lab, argv: list[str], folder: Path) -> None:
        self.out_path = folder / "stdout"
        self.err_path = folder / "stderr"
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.process = subprocess.Popen(
                netns.netns_exec_argv(lab.agent_ns, argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        self.pid = self.process.pid

    def stop(self, timeout: float = 30) -> tuple[int, str, str]:
        """SIGTERM, then the exit code and what the watch printed."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        return code, self.out_path.read_text(), self.err_path.read_text()

    def alive(self) -> None:
        assert self.process.poll() is None, self.err_path.read_text()[-3000:]


@contextmanager
def watching(lab: Lab, argv: list[str], folder: Path) -> Iterator[Watching]:
    """Run the watch, and kill it at the end if it is still there."""
    watch = Watching(lab, argv, folder)
    try:
        yield watch
    finally:
        if watch.process.poll() is None:
            watch.process.kill()
            watch.process.wait(timeout=10)


def get(lab: Lab, path: str) -> tuple[int, str]:
    """GET a page of the watch from inside the agent namespace."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        f"url = 'http://127.0.0.1:{PORT}{path}'\n"
        "try:\n"
        "    r = urllib.request.urlopen(url, timeout=5)\n"
        "    code, body = r.status, r.read()\n"
        "except urllib.error.HTTPError as e:\n"
        "    code, body = e.code, e.read()\n"
        "sys.stdout.write(str(code) + '\\n' + body.decode())\n"
    )
    done = lab.exec_agent_ns([sys.executable, "-c", script], timeout=15)
    assert done.returncode == 0, done.stderr
    code, _, body = done.stdout.partition("\n")
    return int(code), body


def wait_for_rounds(watch: Watching, state: Path, count: int) -> None:
    """Wait, within a bound, until the store holds ``count`` rounds."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        watch.alive()
        store = Store.open_existing(state)
        if store is not None:
            try:
                if store.round_count() >= count:
                    return
            finally:
                store.close()
        time.sleep(0.1)
    pytest.fail(f"fewer than {count} rounds in 60 s")


def test_watch_sees_a_fault_come_and_go(lab: Lab, tmp_path: Path) -> None:
    state = tmp_path / "state"
    argv = watch_argv(
        lab,
        state,
        "--only",
        SSH_RULE,
        "--only",
        ISCSI_RULE,
        "--timeout",
        "1",
        "--every",
        "1s",
        "--listen",
        f"127.0.0.1:{PORT}",
    )
    with watching(lab, argv, tmp_path) as process:
        wait_for_rounds(process, state, 1)
        assert get(lab, "/healthz")[0] == 200
        lab.fault("reset", t.GATEWAY, 3260)
        wait_for_rounds(process, state, 3)
        code, health = get(lab, "/healthz")
        assert (code, health.split(":")[0]) == (503, "fail")
        _, metrics = get(lab, "/metrics")
        line = next(
            m
            for m in metrics.splitlines()
            if m.startswith("sgw_reach_rule_status")
            and f'rule="{ISCSI_RULE}"' in m
            and 'status="fail"' in m
        )
        assert line.endswith(" 1.0")
        assert 'sgw_reach_rule_reason{host="' in metrics
        report = json.loads(get(lab, "/report")[1])
        validate_report(report)
        lab.clear_faults()
        rounds = _round_count(state)
        wait_for_rounds(process, state, rounds + 2)
        assert get(lab, "/healthz")[0] == 200
        history = json.loads(get(lab, f"/history?rule={ISCSI_RULE}&limit=50")[1])
        code, out, err = process.stop()
    assert code == 0, err
    statuses = [r["status"] for r in reversed(history["results"])]
    assert statuses[0] == "pass"
    assert "fail" in statuses
    store = Store.open_existing(state)
    assert store is not None
    changes = [
        (e["previous"]["status"], e["current"]["status"], e["current"]["reason"])
        for e in reversed(store.events())
    ]
    assert changes[:2] == [("pass", "fail", "refused"), ("fail", "pass", "ok")]
    assert "changed: iscsi.target" in out
    log = (state / "agent.log").read_text()
    assert '"rule.changed"' in log


def test_sigterm_mid_round_keeps_what_was_measured(lab: Lab, tmp_path: Path) -> None:
    state = tmp_path / "state"
    lab.fault("drop", t.GATEWAY, 3260)
    argv = watch_argv(
        lab,
        state,
        "--only",
        SSH_RULE,
        "--only",
        ISCSI_RULE,
        "--timeout",
        "20",
        "--every",
        "1h",
    )
    with watching(lab, argv, tmp_path) as process:
        deadline = time.monotonic() + 30
        log = state / "agent.log"
        while time.monotonic() < deadline and (
            not log.exists() or '"probe.result"' not in log.read_text()
        ):
            time.sleep(0.1)
        started = time.monotonic()
        code, _out, err = process.stop()
        stopped_in = time.monotonic() - started
    assert code == 0, err
    assert stopped_in < 10
    assert "Traceback" not in err
    with sqlite3.connect(state / "sgw-reach.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = Store.open_existing(state)
    assert store is not None
    report = store.last_report()
    assert report is not None
    assert report["interrupted"] is True
    validate_report(report)
    assert [r["rule"] for r in report["results"]] == [SSH_RULE]


def test_a_long_watch_with_faults_on_and_off_stays_flat(
    lab: Lab, tmp_path: Path
) -> None:
    """A soak: hundreds of rounds while a fault comes and goes every 40;
    descriptors, threads, asyncio tasks and resident memory stay flat."""
    state = tmp_path / "state"
    argv = watch_argv(
        lab,
        state,
        "--only",
        SSH_RULE,
        "--only",
        ISCSI_RULE,
        "--timeout",
        "2",
        "--every",
        "10ms",
        "--listen",
        f"127.0.0.1:{PORT}",
    )
    samples: list[dict[str, int]] = []
    with watching(lab, argv, tmp_path) as process:
        for number, rounds in enumerate(range(20, 341, 40)):
            wait_for_rounds(process, state, rounds)
            status, metrics = get(lab, "/metrics")
            assert status == 200
            samples.append({**_usage(process.pid), "tasks": _tasks(metrics)})
            if number % 2 == 0:
                lab.fault("reset", t.GATEWAY, 3260)
            else:
                lab.clear_faults()
        code, _out, err = process.stop()
    assert code == 0, err
    store = Store.open_existing(state)
    assert store is not None
    changes = [e["current"]["status"] for e in store.events()]
    assert changes.count("fail") >= 3, changes
    fds = [sample["fds"] for sample in samples]
    threads = [sample["threads"] for sample in samples]
    # A sample may fall mid-round, with that round's sockets open; a leak
    # of even one descriptor a round would add hundreds.
    assert max(fds) - min(fds) <= 4, fds
    assert max(threads) - min(threads) <= 4, threads
    # Counted as each round ends: the watch's own tasks, the same every
    # round; one left behind a round would add hundreds.
    tasks = [sample["tasks"] for sample in samples]
    assert max(tasks) - min(tasks) <= 2, tasks
    # Memory settles after the first rounds (imports, caches); a leak of
    # a report a round would pass this bound over these 300 rounds.
    rss = [sample["rss_kib"] for sample in samples[2:]]
    assert max(rss) - rss[0] < 16 * 1024, rss


def _tasks(metrics: str) -> int:
    """The watch's asyncio task count from its metrics page."""
    for line in metrics.splitlines():
        if line.startswith("sgw_reach_tasks "):
            return int(float(line.split()[1]))
    raise AssertionError("no sgw_reach_tasks in the metrics")


def _usage(pid: int) -> dict[str, int]:
    """Open descriptors, threads and resident memory of a process."""
    status = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    return {
        "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
        "threads": int(status["Threads"]),
        "rss_kib": int(status["VmRSS"].split()[0]),
    }


def _round_count(state: Path) -> int:
    store = Store.open_existing(state)
    assert store is not None
    try:
        return store.round_count()
    finally:
        store.close()
