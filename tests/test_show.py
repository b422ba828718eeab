"""``sgw-reach report FILE``: a saved report or a bundle's, printed again;
anything else is one line on standard error naming the file, exit 2."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from agent import bundle, show
from agent.cli import main
from agent.report import to_json
from agent.store import Store
from tests.reports import make_report

STATUSES = {"common.dns-udp": "fail", "common.aws-https": "pass"}


def saved_report(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    report = make_report(STATUSES)
    path = tmp_path / "report.json"
    path.write_text(to_json(report))
    return path, report


def a_bundle(tmp_path: Path, report: dict[str, Any]) -> Path:
    members = [bundle.Member("report.json", to_json(report).encode(), "r")]
    data = bundle.build_archive(members, bundle.datetime.now(bundle.UTC))
    path = tmp_path / "b.tar.gz"
    path.write_bytes(data)
    return path


def tar_gz(path: Path, entries: list[tarfile.TarInfo], data: bytes = b"") -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info in entries:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.parametrize("fmt", ["table", "json", "junit"])
def test_a_json_report_and_a_bundle_print_the_same(
    tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path, report = saved_report(tmp_path)
    assert main(["report", str(path), "--format", fmt]) == 0
    from_file = capsys.readouterr().out
    assert main(["report", str(a_bundle(tmp_path, report)), "--format", fmt]) == 0
    assert capsys.readouterr().out == from_file
    if fmt == "json":
        assert json.loads(from_file) == report
    elif fmt == "junit":
        assert ET.fromstring(from_file.encode()).get("failures") == "1"
    else:
        assert from_file.rstrip().endswith("Verdict: FAIL")


def test_exit_code_is_zero_whatever_the_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _report = saved_report(tmp_path)
    assert main(["report", str(path)]) == 0
    assert "common.dns-udp" in capsys.readouterr().out


def test_a_bundle_written_by_the_command_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bundle, "default_ntp_servers", lambda: ("127.0.0.1",))
    monkeypatch.setattr(bundle, "NTP_QUERY_SECONDS", 0.2)
    store = Store.open(tmp_path / "state")
    store.save_round(make_report(STATUSES))
    store.close()
    output = tmp_path / "b.tar.gz"
    argv = ["bundle", "--state-dir", str(tmp_path / "state"), "--output"]
    assert main([*argv, str(output)]) == 0
    capsys.readouterr()
    assert main(["report", str(output), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["failed"] == 1


def test_control_characters_do_not_reach_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = make_report(STATUSES)
    report["results"][0]["detail"] = "evil\x1b]0;title\x07 banner"
    path = tmp_path / "r.json"
    path.write_text(to_json(report))
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\\x1b]0;title\\x07" in out


def bad_files(tmp_path: Path) -> dict[str, Path]:
    """Each kind of file that is not a report, by name."""
    _path, report = saved_report(tmp_path)
    cases: dict[str, Path] = {}

    def write(name: str, data: bytes) -> None:
        cases[name] = tmp_path / name
        cases[name].write_bytes(data)

    write("malformed.json", b'{"schema": "sgw-reach/report/v1", ')
    write("binary.json", b"\xff\xfe\x00garbage")
    write("list.json", b"[1, 2]")
    write("deep.json", b"[" * 100_000 + b"]" * 100_000)
    write("other.json", json.dumps({"schema": "other/v1"}).encode())
    missing = {k: v for k, v in report.items() if k != "results"}
    write("missing.json", json.dumps(missing).encode())
    wrong = json.loads(json.dumps(report))
    wrong["results"][0]["status"] = 3
    write("wrong-type.json", json.dumps(wrong).encode())
    no_summary = json.loads(json.dumps(report))
    no_summary["summary"] = {"passed": 1}
    write("summary.json", json.dumps(no_summary).encode())
    whole = a_bundle(tmp_path, report).read_bytes()
    write("truncated.tar.gz", whole[: len(whole) // 2])
    write("not-tar.tar.gz", gzip.compress(b"just text, not a tar archive" * 40))
    cases["no-report.tar.gz"] = tar_gz(
        tmp_path / "no-report.tar.gz", [_file("other.json", 2)], b"{}"
    )
    link = tarfile.TarInfo("report.json")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    cases["symlink.tar.gz"] = tar_gz(tmp_path / "symlink.tar.gz", [link])
    huge = _file("report.json", show.MAX_REPORT_BYTES + 1)
    cases["huge.tar.gz"] = _huge_member(tmp_path / "huge.tar.gz", huge)
    cases["folder"] = tmp_path / "folder"
    cases["folder"].mkdir()
    cases["missing-file"] = tmp_path / "nothing-here.json"
    return cases


def _file(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def _huge_member(path: Path, info: tarfile.TarInfo) -> Path:
    """A tar whose report.json header claims more than the limit; only the
    header is written, since the reader must refuse before reading."""
    header = info.tobuf(format=tarfile.PAX_FORMAT)
    path.write_bytes(gzip.compress(header + b"\0" * 1024))
    return path


CASES = [
    "malformed.json",
    "binary.json",
    "list.json",
    "deep.json",
    "other.json",
    "missing.json",
    "wrong-type.json",
    "summary.json",
    "truncated.tar.gz",
    "not-tar.tar.gz",
    "no-report.tar.gz",
    "symlink.tar.gz",
    "huge.tar.gz",
    "folder",
    "missing-file",
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fmt", ["table", "junit"])
def test_a_file_that_is_not_a_report_is_one_line_exit_2(
    tmp_path: Path, case: str, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bad_files(tmp_path)[case]
    assert main(["report", str(path), "--format", fmt]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"sgw-reach: error: {path}: ")
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_the_reasons_say_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = bad_files(tmp_path)
    expected = {
        "other.json": "schema is 'other/v1'",
        "missing.json": "missing results",
        "wrong-type.json": "results[0].status has the wrong type",
        "summary.json": "summary has no failed",
        "no-report.tar.gz": "no report.json in the bundle",
        "symlink.tar.gz": "report.json is not a regular file",
        "huge.tar.gz": "larger than 16 MiB",
        "folder": "is a folder",
        "missing-file": "No such file",
    }
    for name, words in expected.items():
        assert main(["report", str(cases[name])]) == 2
        assert words in capsys.readouterr().err, name
