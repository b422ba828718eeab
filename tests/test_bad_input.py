"""Bad input on the command line: one line that names it, exit code 2.

Every flag of ``check``, ``rules`` and ``trace`` gets values it must
refuse: wrong flags, bad ports and hosts, names that do not resolve, bad
durations, negative and huge numbers, missing files, a folder where a
file belongs, malformed matrix files of many kinds, unknown regions and
bad bucket names. Each must end before any probe runs, with exactly one
line on standard error that names the input, nothing on standard
output, exit code 2, and no traceback.

``{tmp}`` in a case stands for a fresh temporary folder, and ``{file}``
for an empty file in it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.environ import PREFIX

CHECK = ["check", "--type", "volume", "--region", "us-east-1"]
BAD = "nonexistent.invalid"

CASES: list[tuple[list[str], str]] = [
    # The command and its flags.
    ([], "command"),
    # argparse asks for the missing command before it looks at flags.
    (["--frobnicate"], "command"),
    (["frobnicate"], "frobnicate"),
    ([*CHECK, "--no-such-flag"], "--no-such-flag"),
    ([*CHECK, "--timeout"], "--timeout"),
    (["check", "--region", "us-east-1"], "--type"),
    (["check", "--type", "volume"], "--region"),
    (["check", "--type", "Volume", "--region", "us-east-1"], "Volume"),
    (["check", "--type", "", "--region", "us-east-1"], "--type"),
    ([*CHECK, "--log-level", "loud"], "loud"),
    ([*CHECK, "--format", "xml"], "xml"),
    # Regions.
    (["check", "--type", "file", "--region", "us-east1"], "us-east1"),
    (["check", "--type", "file", "--region", ""], "--region"),
    (["check", "--type", "file", "--region", "US-EAST-1"], "US-EAST-1"),
    (["check", "--type", "file", "--region", "mars-north-1"], "mars-north-1"),
    # Hosts and addresses.
    ([*CHECK, "--gateway", "bad host!"], "bad host!"),
    ([*CHECK, "--gateway", ""], "--gateway"),
    ([*CHECK, "--gateway", "a..b"], "a..b"),
    ([*CHECK, "--gateway", "-gw"], "--gateway"),
    ([*CHECK, "--gateway", "x" * 300], "--gateway"),
    ([*CHECK, "--gateway", "[::1"], "[::1"),
    ([*CHECK, "--gateway", "gw/24"], "gw/24"),
    ([*CHECK, "--gateway", BAD], BAD),
    ([*CHECK, "--gateway", "999.1.1.1"], "999.1.1.1"),
    ([*CHECK, "--dns-server", "256.0.0.1"], "256.0.0.1"),
    ([*CHECK, "--dns-server", "dns.example"], "dns.example"),
    ([*CHECK, "--dns-server", ""], "--dns-server"),
    ([*CHECK, "--ntp-server", "bad host"], "bad host"),
    ([*CHECK, "--ntp-server", BAD], BAD),
    ([*CHECK, "--support-host", BAD], BAD),
    ([*CHECK, "--support-host", "ssh://host"], "ssh://host"),
    ([*CHECK, "--ad-domain", "corp"], "corp"),
    ([*CHECK, "--ad-domain", "not a domain"], "not a domain"),
    ([*CHECK, "--ad-server", BAD], BAD),
    ([*CHECK, "--ad-server", "dc_1!"], "dc_1!"),
    # The proxy and its port.
    ([*CHECK, "--proxy", "proxy:0"], "proxy:0"),
    ([*CHECK, "--proxy", "proxy:65536"], "proxy:65536"),
    ([*CHECK, "--proxy", "proxy:99999999999999999999"], "proxy:9999"),
    ([*CHECK, "--proxy", "proxy:-1"], "proxy:-1"),
    ([*CHECK, "--proxy", "proxy:http"], "proxy:http"),
    ([*CHECK, "--proxy", ":8080"], ":8080"),
    ([*CHECK, "--proxy", "[::1]:x"], "[::1]:x"),
    ([*CHECK, "--proxy", f"{BAD}:8080"], BAD),
    ([*CHECK, "--proxy", "user:secret@proxy.example:8080"], "***@proxy.example"),
    ([*CHECK, "--proxy", "http://proxy.example:8080"], "http://proxy.example"),
    # Buckets.
    ([*CHECK, "--bucket", "ab"], "ab"),
    ([*CHECK, "--bucket", "a" * 64], "a" * 64),
    ([*CHECK, "--bucket", "Bad_Bucket"], "Bad_Bucket"),
    ([*CHECK, "--bucket", "bucket..name"], "bucket..name"),
    ([*CHECK, "--bucket", "-bucket"], "-bucket"),
    ([*CHECK, "--bucket", ""], "--bucket"),
    # Durations and numbers.
    ([*CHECK, "--timeout", "soon"], "soon"),
    ([*CHECK, "--timeout", "5s"], "5s"),
    ([*CHECK, "--timeout", "0"], "--timeout"),
    ([*CHECK, "--timeout", "-1"], "--timeout"),
    ([*CHECK, "--timeout", "601"], "601"),
    ([*CHECK, "--timeout", "1e309"], "1e309"),
    ([*CHECK, "--timeout", "inf"], "inf"),
    ([*CHECK, "--timeout", "nan"], "nan"),
    ([*CHECK, "--timeout", ""], "--timeout"),
    ([*CHECK, "--max-skew", "0"], "--max-skew"),
    ([*CHECK, "--max-skew", "-60"], "--max-skew"),
    ([*CHECK, "--max-skew", "1e400"], "--max-skew"),
    ([*CHECK, "--diagnose-timeout", "0"], "--diagnose-timeout"),
    ([*CHECK, "--diagnose-timeout", "forever"], "forever"),
    ([*CHECK, "--concurrency", "0"], "--concurrency"),
    ([*CHECK, "--concurrency", "-1"], "--concurrency"),
    ([*CHECK, "--concurrency", "1.5"], "1.5"),
    ([*CHECK, "--concurrency", "1025"], "1025"),
    ([*CHECK, "--concurrency", "9" * 40], "9999"),
    # Rule selection.
    ([*CHECK, "--only", "no.such.rule"], "no.such.rule"),
    ([*CHECK, "--only", ""], "'' matches no rule"),
    ([*CHECK, "--only", "70000"], "70000"),
    ([*CHECK, "--skip", "9999"], "9999"),
    ([*CHECK, "--skip", "no.such.*"], "no.such.*"),
    # Files and folders.
    ([*CHECK, "--ca-bundle", "/nonexistent/ca.pem"], "/nonexistent/ca.pem"),
    ([*CHECK, "--ca-bundle", "{tmp}"], "{tmp}"),
    ([*CHECK, "--ca-bundle", "{file}"], "{file}"),
    ([*CHECK, "--ca-bundle", ""], "--ca-bundle"),
    ([*CHECK, "--output", "/nonexistent/dir/r.json"], "/nonexistent/dir"),
    ([*CHECK, "--output", "{tmp}"], "{tmp}"),
    ([*CHECK, "--output", "{file}/r.json"], "{file}"),
    ([*CHECK, "--output", ""], "--output"),
    ([*CHECK, "--matrix", "/nonexistent.toml"], "/nonexistent.toml"),
    ([*CHECK, "--matrix", "{tmp}"], "{tmp}"),
    (["rules", "--matrix", "/nonexistent.toml"], "/nonexistent.toml"),
    (["rules", "--matrix", "{tmp}"], "{tmp}"),
    (["rules", "--matrix", ""], "--matrix"),
    # rules.
    (["rules", "--type", "block"], "block"),
    (["rules", "--format", "yaml"], "yaml"),
    (["rules", "--gateway", "10.0.0.5"], "--gateway"),
    (["rules", "--log-level", "loud"], "loud"),
    # trace.
    (["trace"], "HOST"),
    (["trace", "127.0.0.1"], "PORT"),
    (["trace", "127.0.0.1", "0"], "'0'"),
    (["trace", "127.0.0.1", "65536"], "65536"),
    (["trace", "127.0.0.1", "http"], "http"),
    (["trace", "127.0.0.1", "-1"], "-1"),
    (["trace", "127.0.0.1", "99999999999999999999"], "9999"),
    (["trace", "bad host!", "443"], "bad host!"),
    (["trace", BAD, "443"], BAD),
    (["trace", "127.0.0.1", "443", "--format", "xml"], "xml"),
    (["trace", "127.0.0.1", "443", "--timeout", "0"], "--timeout"),
    (["trace", "127.0.0.1", "443", "--timeout", "later"], "later"),
    (["trace", "127.0.0.1", "443", "--udp=yes"], "--udp"),
    (["trace", "127.0.0.1", "443", "extra"], "extra"),
]


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Options set in the environment would change what is bad input."""
    for name in list(__import__("os").environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)


def fill(text: str, tmp_path: Path) -> str:
    empty = tmp_path / "empty"
    empty.touch()
    return text.replace("{tmp}", str(tmp_path)).replace("{file}", str(empty))


def assert_one_line_error(
    argv: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert "secret" not in captured.err
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("sgw-reach: error: "), lines[0]
    assert names in lines[0], lines[0]
    assert captured.out == ""


@pytest.mark.parametrize(
    ("argv", "names"), CASES, ids=[" ".join(argv)[:60] for argv, _ in CASES]
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str],
    names: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [fill(arg, tmp_path) for arg in argv]
    assert_one_line_error(argv, fill(names, tmp_path), capsys)


_RULE = (
    '[[rule]]\nid = "a.b"\ntypes = ["volume"]\nsource = "gateway"\n'
    'destination = "dns"\ndirection = "outbound"\ntransport = "udp"\n'
    'port = 53\nprobe = "dns"\nrequired = true\npurpose = "x"\n'
)

MATRICES: dict[str, bytes] = {
    "empty": b"",
    "only-comments": b"# nothing here\n",
    "not-toml": b"[[rule]\nid = \n",
    "unclosed-string": b'[[rule]]\nid = "a.b\n',
    "binary": bytes(range(256)),
    "not-utf-8": b'[[rule]]\nid = "\xff\xfe"\n',
    "no-rules": b'title = "matrix"\n',
    "rule-not-a-table": b"rule = [1, 2]\n",
    "rule-a-string": b'rule = "all"\n',
    "rule-a-table-not-a-list": b'[rule]\nid = "a.b"\n',
    "missing-field": _RULE.replace("port = 53\n", "").encode(),
    "port-a-string": _RULE.replace("port = 53", 'port = "53"').encode(),
    "port-a-boolean": _RULE.replace("port = 53", "port = true").encode(),
    "port-a-float": _RULE.replace("port = 53", "port = 53.0").encode(),
    "port-out-of-range": _RULE.replace("port = 53", "port = 70000").encode(),
    "port-negative": _RULE.replace("port = 53", "port = -53").encode(),
    "port-huge": _RULE.replace("port = 53", "port = 9223372036854775807").encode(),
    "unknown-probe": _RULE.replace('"dns"\nreq', '"telepathy"\nreq').encode(),
    "unknown-field": (_RULE + "colour = 'red'\n").encode(),
    "bad-direction": _RULE.replace('"outbound"', '"sideways"').encode(),
    "bad-transport": _RULE.replace('"udp"', '"sctp"').encode(),
    "types-a-string": _RULE.replace('["volume"]', '"volume"').encode(),
    "types-of-numbers": _RULE.replace('["volume"]', "[1, 2]").encode(),
    "types-empty": _RULE.replace('["volume"]', "[]").encode(),
    "unknown-type": _RULE.replace('["volume"]', '["block"]').encode(),
    "unknown-role": _RULE.replace('"gateway"', '"satellite"').encode(),
    "id-with-space": _RULE.replace('"a.b"', '"a b"').encode(),
    "id-empty": _RULE.replace('"a.b"', '""').encode(),
    "duplicate-id": (_RULE + _RULE).encode(),
    "targets-not-toward-aws": (_RULE + 'targets = ["s3"]\n').encode(),
    "aws-without-targets": _RULE.replace(
        '"dns"\ndirection', '"aws"\ndirection'
    ).encode(),
    "table-rule-a-float": (_RULE + "table_rule = 1.5\n").encode(),
}


@pytest.mark.parametrize("command", ["rules", "check"])
@pytest.mark.parametrize("kind", sorted(MATRICES))
def test_a_malformed_matrix_is_one_line_naming_the_file(
    kind: str,
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    matrix = tmp_path / f"{kind}.toml"
    matrix.write_bytes(MATRICES[kind])
    argv = CHECK if command == "check" else ["rules"]
    assert_one_line_error([*argv, "--matrix", str(matrix)], str(matrix), capsys)
