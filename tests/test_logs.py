"""Logging: events on standard error, and the file copy a watch keeps
for the support bundle."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog

from agent.cli import main
from agent.logs import FileSink, configure


def test_events_go_to_the_stream_and_the_file(tmp_path: Path) -> None:
    stream = io.StringIO()
    sink = FileSink(tmp_path / "agent.log")
    configure("info", stream, sink)
    log = structlog.get_logger("test")
    log.debug("hidden")
    log.info("round.finished", verdict="pass")
    sink.close()
    lines = (tmp_path / "agent.log").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["round.finished"]
    assert json.loads(stream.getvalue())["verdict"] == "pass"


def test_the_file_is_rotated_once_past_its_limit(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "agent.log", limit=1000)
    configure("info", io.StringIO(), sink)
    log = structlog.get_logger("test")
    for number in range(100):
        log.info("event", number=number, padding="x" * 50)
    sink.close()
    current = (tmp_path / "agent.log").read_text().splitlines()
    previous = (tmp_path / "agent.log.1").read_text().splitlines()
    assert len((tmp_path / "agent.log.1").read_bytes()) < 1200
    assert json.loads(current[-1])["number"] == 99
    numbers = [json.loads(line)["number"] for line in previous + current]
    assert numbers == list(range(numbers[0], 100))


def test_a_file_that_cannot_be_written_is_left_alone(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "missing" / "agent.log")
    stream = io.StringIO()
    configure("info", stream, sink)
    structlog.get_logger("test").info("still.logged")
    assert "still.logged" in stream.getvalue()


def test_a_rule_skipped_without_a_probe_still_logs_its_result(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["check", "--type", "volume", "--region", "us-east-1"]
    assert main([*argv, "--only", "iscsi.target", "--format", "json"]) == 0
    err = capsys.readouterr().err
    # Standard error is no terminal here: one JSON object per line.
    events = [json.loads(line) for line in err.splitlines()]
    results = [e for e in events if e["event"] == "probe.result"]
    assert len(results) == 1
    skipped = results[0]
    assert skipped["level"] == "info"
    assert (skipped["rule"], skipped["port"]) == ("iscsi.target", 3260)
    assert (skipped["status"], skipped["reason"]) == ("skip", "not-configured")
    assert skipped["probe"] == "iscsi"
