"""The command line: usage errors, the rules listing, report files.

Every usage error is one line on standard error naming the input, exit
code 2, and no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import main

BASE = ["check", "--type", "volume", "--region", "us-east-1"]


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        ([], "command"),
        (["frobnicate"], "frobnicate"),
        (["check", "--region", "us-east-1"], "--type"),
        (["check", "--type", "block", "--region", "us-east-1"], "block"),
        (["check", "--type", "file"], "--region"),
        (["check", "--type", "file", "--region", "us-east1"], "us-east1"),
        ([*BASE, "--timeout", "soon"], "soon"),
        ([*BASE, "--timeout", "-1"], "--timeout"),
        ([*BASE, "--timeout", "nan"], "nan"),
        ([*BASE, "--max-skew", "0"], "--max-skew"),
        ([*BASE, "--concurrency", "0"], "--concurrency"),
        ([*BASE, "--dns-server", "dns.example"], "dns.example"),
        ([*BASE, "--gateway", "bad host!"], "bad host!"),
        ([*BASE, "--gateway", "nosuchhost.invalid"], "nosuchhost.invalid"),
        ([*BASE, "--proxy", "proxy:99999"], "proxy:99999"),
        ([*BASE, "--proxy", "proxy:http"], "proxy:http"),
        ([*BASE, "--bucket", "Bad_Bucket"], "Bad_Bucket"),
        ([*BASE, "--ca-bundle", "/nonexistent/ca.pem"], "/nonexistent/ca.pem"),
        ([*BASE, "--output", "/nonexistent/dir/r.json"], "/nonexistent/dir"),
        # Permission bits would let root write there; the file system not.
        ([*BASE, "--output", "/proc/r.json"], "/proc/r.json"),
        ([*BASE, "--only", "no.such.rule"], "no.such.rule"),
        ([*BASE, "--skip", "9999"], "9999"),
        ([*BASE, "--format", "xml"], "xml"),
        (["rules", "--matrix", "/nonexistent.toml"], "/nonexistent.toml"),
        (["rules", "--log-level", "loud"], "loud"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    argv: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("sgw-reach: error: ")
    assert names in lines[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_bad_ca_bundle_content(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    assert main([*BASE, "--ca-bundle", str(bundle)]) == 2
    assert "not a PEM bundle" in capsys.readouterr().err


def test_malformed_matrix_names_file_and_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    matrix = tmp_path / "m.toml"
    matrix.write_text(
        '[[rule]]\nid = "a.b"\ntypes = ["volume"]\nsource = "gateway"\n'
        'destination = "dns"\ndirection = "outbound"\ntransport = "udp"\n'
        'port = 53\nprobe = "telepathy"\nrequired = true\npurpose = "x"\n'
    )
    assert main(["rules", "--matrix", str(matrix)]) == 2
    err = capsys.readouterr().err
    assert str(matrix) in err
    assert "rule a.b" in err
    assert "unknown probe 'telepathy'" in err


def test_rules_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "--type", "file-nfs"]) == 0
    table = capsys.readouterr().out
    assert "file.nfs.mountd-udp" in table
    assert "file.smb" not in table
    assert main(["rules", "--type", "tape", "--appliance", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["id"] for r in rows} >= {"iscsi.target", "appliance.proxy"}


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith("sgw-reach ")


def test_bad_ad_domain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "--ad-domain", "not a domain"]) == 2
    assert "--ad-domain" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["trace", "127.0.0.1"], "PORT"),
        (["trace", "127.0.0.1", "70000"], "70000"),
        (["trace", "nosuchhost.invalid", "443"], "nosuchhost.invalid"),
        (["trace", "127.0.0.1", "443", "--format", "xml"], "xml"),
    ],
)
def test_trace_usage_errors(
    argv: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert names in err
