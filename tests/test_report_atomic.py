"""An interrupted report write leaves the old file or the whole new one.

:func:`agent.report.write_atomic` is made to fail at each step (the
open, the write, the fsync, the rename), with ENOSPC and with
KeyboardInterrupt, and on a real 64 KiB tmpfs that is full; each time
the file named is the previous report, byte for byte (or absent if
there was none), and no temporary file or descriptor is left behind.
A refused chmod is not a failure: the report is still written.
``check --output`` on a full disk still prints the report, then one
line of error, and exits with 2.

The tmpfs tests need root (``mount``); they are skipped without it.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import report
from agent.cli import main
from agent.environ import PREFIX
from agent.report import write_atomic
from rules.matrix import default_matrix_path

OLD = '{"report": "previous"}\n'
NEW = '{"report": "next", "padding": "' + "x" * 100_000 + '"}\n'


def _full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def left_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.fixture
def previous(tmp_path: Path) -> Path:
    path = tmp_path / "report.json"
    path.write_text(OLD, encoding="utf-8")
    return path


class _HalfWriter:
    """A stream that writes half of what it is given, then raises."""

    def __init__(self, stream: Any, error: BaseException) -> None:
        self.stream = stream
        self.error = error

    def __enter__(self) -> _HalfWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stream.close()

    def write(self, text: str) -> int:
        self.stream.write(text[: len(text) // 2])
        self.stream.flush()
        raise self.error

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@pytest.mark.parametrize("error", [_full(), KeyboardInterrupt()])
def test_a_write_cut_midway_keeps_the_previous_file(
    previous: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    real_fdopen = os.fdopen

    def half_open(fd: int, *args: Any, **kwargs: Any) -> _HalfWriter:
        return _HalfWriter(real_fdopen(fd, *args, **kwargs), error)

    monkeypatch.setattr(report.os, "fdopen", half_open)
    with pytest.raises(type(error)):
        write_atomic(previous, NEW)
    assert previous.read_text(encoding="utf-8") == OLD
    assert left_in(previous.parent) == ["report.json"]


@pytest.mark.parametrize("step", ["fsync", "replace"])
@pytest.mark.parametrize("error", [_full(), KeyboardInterrupt()])
def test_a_failed_fsync_or_rename_keeps_the_previous_file(
    previous: Path,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    error: BaseException,
) -> None:
    def fail(*_args: object) -> None:
        raise error

    monkeypatch.setattr(report.os, step, fail)
    with pytest.raises(type(error)):
        write_atomic(previous, NEW)
    assert previous.read_text(encoding="utf-8") == OLD
    assert left_in(previous.parent) == ["report.json"]


def test_a_failure_without_a_previous_file_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(_fd: int) -> None:
        raise _full()

    monkeypatch.setattr(report.os, "fsync", fail)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(tmp_path / "report.json", NEW)
    assert left_in(tmp_path) == []


def test_a_whole_write_replaces_the_file(previous: Path) -> None:
    write_atomic(previous, NEW)
    assert previous.read_text(encoding="utf-8") == NEW
    assert left_in(previous.parent) == ["report.json"]


def test_a_new_report_is_readable_as_open_would_make_it(
    tmp_path: Path,
) -> None:
    umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "report.json", NEW)
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o644


def test_a_replaced_report_keeps_its_mode(previous: Path) -> None:
    previous.chmod(0o640)
    write_atomic(previous, NEW)
    assert stat.S_IMODE(previous.stat().st_mode) == 0o640


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_file_system_refusing_chmod_still_gets_the_whole_report(
    previous: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(_fd: int, _mode: int) -> None:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(report.os, "fchmod", refuse)
    before = open_descriptors()
    write_atomic(previous, NEW)
    assert previous.read_text(encoding="utf-8") == NEW
    assert left_in(previous.parent) == ["report.json"]
    assert open_descriptors() == before


def test_a_failed_open_closes_the_descriptor_and_removes_the_file(
    previous: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_args: object, **_kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(report.os, "fdopen", fail)
    before = open_descriptors()
    with pytest.raises(MemoryError):
        write_atomic(previous, NEW)
    assert previous.read_text(encoding="utf-8") == OLD
    assert left_in(previous.parent) == ["report.json"]
    assert open_descriptors() == before


# On a real file system that is full.


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, unmounted on the way out."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Take every free byte of ``disk`` (bounded by its 64 KiB)."""
    with (disk / "filler").open("wb", buffering=0) as stream:
        for _ in range(1024):
            try:
                stream.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return
    pytest.fail("the small disk never filled up")


def test_a_full_disk_keeps_the_previous_report(small_disk: Path) -> None:
    path = small_disk / "report.json"
    path.write_text(OLD, encoding="utf-8")
    fill(small_disk)
    with pytest.raises(OSError) as failed:
        write_atomic(path, NEW)
    assert failed.value.errno == errno.ENOSPC
    assert path.read_text(encoding="utf-8") == OLD
    assert left_in(small_disk) == ["filler", "report.json"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_ONE_RULE = """
[[rule]]
id = "lab.closed"
types = ["volume"]
source = "client"
destination = "gateway"
direction = "inbound"
transport = "tcp"
port = {port}
probe = "tcp"
required = true
purpose = "A closed port on loopback."
"""


def test_check_output_on_a_full_disk_prints_the_report_and_one_error(
    small_disk: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(_ONE_RULE.format(port=_closed_port()), encoding="utf-8")
    output = small_disk / "report.json"
    output.write_text(OLD, encoding="utf-8")
    fill(small_disk)

    code = main(
        [
            "check",
            "--type",
            "volume",
            "--region",
            "us-east-1",
            "--gateway",
            "127.0.0.1",
            "--matrix",
            str(matrix),
            "--timeout",
            "2",
            "--format",
            "json",
            "--output",
            str(output),
            "--log-level",
            "error",
        ]
    )

    captured = capsys.readouterr()
    assert code == 2
    printed = json.loads(captured.out)
    assert [r["rule"] for r in printed["results"]] == ["lab.closed"]
    assert printed["results"][0]["reason"] == "refused"
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("sgw-reach: error: --output ")
    assert str(output) in lines[0]
    assert "No space left on device" in lines[0]
    assert "Traceback" not in captured.err
    assert output.read_text(encoding="utf-8") == OLD
    assert left_in(small_disk) == ["filler", "report.json"]


# Interrupted by a signal: the probes wait on a tarpit, a server that
# accepts and never answers, when the signal comes.


@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
)
def test_a_signal_mid_check_leaves_the_previous_report(
    previous: Path, signum: signal.Signals, code: int, word: str
) -> None:
    with socket.socket() as tarpit:
        tarpit.bind(("127.0.0.1", 0))
        tarpit.listen()
        port = tarpit.getsockname()[1]
        matrix = previous.parent / "matrix.toml"
        text = default_matrix_path().read_text(encoding="utf-8")
        start = text.index('id = "common.support-ssh"')
        at = text.index("port = 22", start)
        matrix.write_text(text[:at] + f"port = {port}" + text[at + 9 :])
        argv = [
            sys.executable,
            "-m",
            "agent",
            "check",
            "--type",
            "volume",
            "--region",
            "us-east-1",
            "--only",
            "common.support-ssh",
            "--support-host",
            "127.0.0.1",
            "--matrix",
            str(matrix),
            "--timeout",
            "60",
            "--output",
            str(previous),
        ]
        with subprocess.Popen(
            argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as process:
            accepted, _ = _accept_within(tarpit, 30.0)
            with accepted:
                process.send_signal(signum)
                out, err = process.communicate(timeout=30)
    assert process.returncode == code, err
    assert err.strip().splitlines()[-1] == f"sgw-reach: {word}"
    assert "Traceback" not in err
    assert out == ""
    assert previous.read_text(encoding="utf-8") == OLD
    assert left_in(previous.parent) == ["matrix.toml", "report.json"]


def _accept_within(
    listener: socket.socket, seconds: float
) -> tuple[socket.socket, Any]:
    listener.settimeout(seconds)
    return listener.accept()
