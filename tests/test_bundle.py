"""The support bundle: what goes in, that no planted secret comes out, the
manifest, and one-line errors for bad input.

NTP queries go only to servers on loopback: the report's NTP results
point at an in-process server, and the default servers are replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import socket
import stat
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import bundle
from agent.cli import main
from agent.store import Store
from tests.fakes import serving_udp
from tests.reports import make_report
from tests.test_ntp import serve_time

PROXY = "http://user:s3cr3tPa55@proxy:3128"
SECRETS = (
    "s3cr3tPa55",
    "wJalrXUtnFEMI",
    "12345-FGHIJ-67890-KLMNO",
    "deadbeefcafe1234",
    "tok3nValue99",
    "AKIAIOSFODNN7EXAMPLE",
    "hunt3rTwo",
    "eyJbearer0Token",
    "jwtValue77",
)


@pytest.fixture(autouse=True)
def _ntp_stays_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No NTP query may leave the machine: the defaults are loopback, and
    quick to give up."""
    monkeypatch.setattr(bundle, "default_ntp_servers", lambda: ("127.0.0.1",))
    monkeypatch.setattr(bundle, "NTP_QUERY_SECONDS", 0.3)
    monkeypatch.setattr(bundle, "NTP_TOTAL_SECONDS", 1.0)
    yield


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    monkeypatch.setenv("http_proxy", "user:s3cr3tPa55@proxy:3128")
    monkeypatch.setenv("no_proxy", "169.254.169.254")
    monkeypatch.setenv(
        "AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    )


def report_with_secrets(ntp_port: int) -> dict[str, Any]:
    report = make_report(
        {"common.ntp": "pass", "common.aws-https": "fail", "common.dns-udp": "pass"}
    )
    for result in report["results"]:
        if result["rule"] == "common.ntp":
            result["host"] = "127.0.0.1"
            result["port"] = ntp_port
        if result["rule"] == "common.aws-https":
            result["detail"] = f"CONNECT through {PROXY} refused"
            result["evidence"] = {
                "location": "https://gw/?activationKey=ABCDE-12345-FGHIJ-67890-KLMNO"
                "&X-Amz-Signature=deadbeefcafe1234",
                "sent": "Proxy-Authorization: Basic tok3nValue99\\r\\n",
                "key_id": "AKIAIOSFODNN7EXAMPLE",
            }
    return report


def fill_store(state: Path, report: dict[str, Any], rounds: int = 1) -> None:
    store = Store.open(state)
    try:
        for _ in range(rounds):
            store.save_round(report)
    finally:
        store.close()


def write_logs(state: Path) -> None:
    (state / "agent.log.1").write_text(
        "".join(f'{{"event": "old", "n": {n}}}\n' for n in range(5))
        + "plain line with ?token=tok3nValue99\n"
        + "proxy=alice:hunt3rTwo@proxy:3128 and Bearer eyJbearer0Token\n"
        + "GET /x?jwt=jwtValue77\n"
    )
    (state / "agent.log").write_text(
        json.dumps(
            {"event": "activation", "detail": "key ABCDE-12345-FGHIJ-67890-KLMNO"}
        )
        + "\n"
        + json.dumps({"event": "round", "password": "s3cr3tPa55"})
        + "\n"
    )


def run_with_ntp(argv: list[str], report_for: Any, state: Path) -> int:
    """Fill the store with a report whose NTP server is a loopback fake,
    then run the command while that server answers."""

    async def scenario() -> int:
        async with serving_udp(serve_time(offset=0.25)) as (_server, port):
            fill_store(state, report_for(port), rounds=3)
            return await asyncio.to_thread(main, argv)

    return asyncio.run(scenario())


def members(path: Path) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path, "r:gz") as archive:
        found: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
        for info in archive.getmembers():
            stream = archive.extractfile(info)
            assert stream is not None
            found[info.name] = (info, stream.read())
    return found


def test_bundle_from_the_store_leaks_no_planted_secret(
    tmp_path: Path, planted: None, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    write_logs(state)
    output = tmp_path / "b.tar.gz"
    argv = ["bundle", "--state-dir", str(state), "--output", str(output)]
    assert run_with_ntp(argv, report_with_secrets, state) == 0
    assert capsys.readouterr().out.startswith(f"{output}: 7 files")

    found = members(output)
    for name, (_info, data) in found.items():
        for secret in SECRETS:
            assert secret.encode() not in data, (name, secret)
    report = json.loads(found["report.json"][1])
    assert report["schema"] == "sgw-reach/report/v1"
    https = next(r for r in report["results"] if r["rule"] == "common.aws-https")
    assert "user:REDACTED@proxy:3128" in https["detail"]
    environment = json.loads(found["environment.json"][1])
    assert environment["proxy"]["HTTPS_PROXY"] == "http://user:REDACTED@proxy:3128"
    assert environment["proxy"]["http_proxy"] == "user:REDACTED@proxy:3128"
    assert "AWS_SECRET_ACCESS_KEY" not in found["environment.json"][1].decode()
    logs = found["logs.txt"][1].decode().splitlines()
    assert len(logs) == 10
    assert "ABCDE-REDACTED" in logs[-2]


def test_archive_layout_and_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    output = tmp_path / "b.tar.gz"
    argv = ["bundle", "--state-dir", str(state), "--output", str(output)]
    assert run_with_ntp(argv, report_with_secrets, state) == 0
    capsys.readouterr()

    with tarfile.open(output, "r:gz") as archive:
        infos = archive.getmembers()
    assert infos[0].name == "manifest.json"
    found = members(output)
    manifest = json.loads(found["manifest.json"][1])
    assert manifest["schema"] == "sgw-reach/bundle/v1"
    listed = [m["name"] for m in manifest["members"]]
    assert listed == [i.name for i in infos[1:]]
    assert listed == [
        "report.json",
        "history.json",
        "environment.json",
        "matrix.toml",
        "endpoints.toml",
    ]
    for entry in manifest["members"]:
        data = found[entry["name"]][1]
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["description"]
    mtimes = {i.mtime for i in infos}
    assert len(mtimes) == 1
    for info in infos:
        assert info.isreg()
        assert (info.mode, info.uid, info.gid) == (0o644, 0, 0)
        assert (info.uname, info.gname) == ("root", "root")
    assert [p.name for p in tmp_path.iterdir()] == sorted(["state", "b.tar.gz"])


def test_environment_and_clock(tmp_path: Path) -> None:
    state = tmp_path / "state"
    output = tmp_path / "b.tar.gz"
    argv = ["bundle", "--state-dir", str(state), "--output", str(output)]
    assert run_with_ntp(argv, report_with_secrets, state) == 0
    environment = json.loads(members(output)["environment.json"][1])
    assert environment["hostname"] == socket.gethostname()
    assert environment["python"].startswith("3.")
    (measured,) = environment["clock"]["ntp"]
    assert measured["server"] == "127.0.0.1"
    assert measured["offset_s"] == pytest.approx(0.25, abs=0.1)
    assert environment["clock"]["utc_now"].endswith("Z")
    assert {"ipv4", "ipv6"} <= environment["routes"].keys()
    names = [i["name"] for i in environment["interfaces"]["interfaces"]]
    assert "lo" in names
    lo = next(i for i in environment["interfaces"]["interfaces"] if i["name"] == "lo")
    assert lo["mtu"] == int(Path("/sys/class/net/lo/mtu").read_text())
    assert any(a.startswith("127.0.0.1/") for a in lo["addresses"])


def test_history_is_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    report = make_report({"common.dns-udp": "pass", "common.ntp": "pass"})
    fill_store(state, report, rounds=5)
    failed = make_report({"common.dns-udp": "fail", "common.ntp": "pass"})
    fill_store(state, failed)
    output = tmp_path / "b.tar.gz"
    argv = ["bundle", "--state-dir", str(state), "--output", str(output)]
    assert main([*argv, "--history", "3"]) == 0
    capsys.readouterr()
    history = json.loads(members(output)["history.json"][1])
    assert [r["round"] for r in history["rounds"]] == [6, 5, 4]
    assert [e["round"] for e in history["events"]] == [6]
    assert history["events"][0]["current"]["status"] == "fail"
    dns = history["rules"]["common.dns-udp"]
    assert [h["round"] for h in dns] == [6, 5, 4]
    assert set(history["rules"]) == {"common.dns-udp", "common.ntp"}


def test_a_new_check_when_type_and_region_are_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [
        "bundle",
        "--state-dir",
        str(tmp_path / "none"),
        "--type",
        "volume",
        "--region",
        "us-east-1",
        "--gateway",
        "127.0.0.1",
        "--only",
        "iscsi.target",
        "--timeout",
        "1",
        "--log-level",
        "error",
    ]
    assert main(argv) == 0
    (written,) = tmp_path.glob("sgw-reach-bundle-*-*Z.tar.gz")
    assert capsys.readouterr().out.startswith(f"{written.name}: 6 files")
    found = members(written)
    report = json.loads(found["report.json"][1])
    assert [r["rule"] for r in report["results"]] == ["iscsi.target"]
    history = json.loads(found["history.json"][1])
    assert history["rounds"] == []
    assert "logs.txt" not in found


def test_the_matrix_given_goes_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    fill_store(state, make_report({"common.dns-udp": "pass"}))
    matrix = tmp_path / "mine.toml"
    packaged = Path(bundle.default_matrix_path()).read_text()
    matrix.write_text("# mine\n" + packaged)
    output = tmp_path / "b.tar.gz"
    argv = ["bundle", "--state-dir", str(state), "--output", str(output)]
    assert main([*argv, "--matrix", str(matrix)]) == 0
    capsys.readouterr()
    assert members(output)["matrix.toml"][1].startswith(b"# mine\n")


def test_the_archive_is_readable_as_open_would_make_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    fill_store(state, make_report({"common.dns-udp": "pass"}))
    output = tmp_path / "b.tar.gz"
    umask = os.umask(0o022)
    try:
        argv = ["bundle", "--state-dir", str(state), "--output", str(output)]
        assert main(argv) == 0
    finally:
        os.umask(umask)
    capsys.readouterr()
    assert stat.S_IMODE(output.stat().st_mode) == 0o644


def test_a_round_cut_short_is_passed_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    whole = make_report({"common.dns-udp": "pass", "common.ntp": "pass"})
    fill_store(state, whole)
    store = Store.open(state)
    store.save_round(make_report({"common.ntp": "fail"}), interrupted=True)
    store.close()
    output = tmp_path / "b.tar.gz"
    argv = ["bundle", "--state-dir", str(state), "--output", str(output)]
    assert main(argv) == 0
    capsys.readouterr()
    assert json.loads(members(output)["report.json"][1]) == whole


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_no_report_to_put_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    line = usage_error(["bundle", "--state-dir", str(empty)], capsys)
    assert f"no saved report in {empty}: give --type and --region" in line


def test_half_a_check_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bundle", "--state-dir", str(tmp_path), "--type", "file"]
    assert "give both --type and --region" in usage_error(argv, capsys)


def test_a_state_dir_that_is_not_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sgw-reach.db").write_text("not a database")
    line = usage_error(["bundle", "--state-dir", str(tmp_path)], capsys)
    assert str(tmp_path) in line
    assert "--state-dir" in line
    a_file = tmp_path / "file"
    a_file.write_text("")
    line = usage_error(["bundle", "--state-dir", str(a_file)], capsys)
    assert f"--state-dir {a_file}: not a folder" in line


def test_an_output_that_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    fill_store(state, make_report({"common.dns-udp": "pass"}))
    argv = ["bundle", "--state-dir", str(state), "--output"]
    line = usage_error([*argv, str(tmp_path / "no" / "b.tgz")], capsys)
    assert str(tmp_path / "no") in line

    def broken(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    output = tmp_path / "b.tgz"
    line = usage_error([*argv, str(output)], capsys)
    assert f"--output {output}: cannot write: No space left" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_ntp_is_bounded_in_total() -> None:
    silent = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for sock in silent:
            sock.bind(("127.0.0.1", 0))
        servers = [("127.0.0.1", s.getsockname()[1]) for s in silent]
        started = time.monotonic()
        answers = bundle.measure_offsets(servers, query_seconds=5, total_seconds=0.3)
        assert time.monotonic() - started < 1.0
    finally:
        for sock in silent:
            sock.close()
    assert [a["error"] for a in answers] == ["no answer in 0.3 s"] * 3


def measure_while_serving(*handlers: Any) -> list[dict[str, Any]]:
    """Measure the offsets against one loopback server per handler."""

    async def scenario() -> list[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            started = [serving_udp(h) for h in handlers]
            ports = [(await stack.enter_async_context(s))[1] for s in started]
            servers = [("127.0.0.1", port) for port in ports]
            return await asyncio.to_thread(bundle.measure_offsets, servers)

    return asyncio.run(scenario())


def test_ntp_takes_no_offset_from_a_wrong_origin() -> None:
    spoofed, honest = measure_while_serving(
        serve_time(offset=30.0, origin_delta=1), serve_time(offset=0.25)
    )
    assert "offset_s" not in spoofed
    assert "origin" in spoofed["error"]
    assert honest["offset_s"] == pytest.approx(0.25, abs=0.1)
    assert honest["stratum"] == 2
    assert honest["leap"] == 0
    assert 0 <= honest["delay_s"] < 0.3


def test_ntp_takes_no_offset_from_a_kiss_of_death() -> None:
    (kissed,) = measure_while_serving(
        serve_time(stratum=0, ref_id=int.from_bytes(b"DENY", "big"))
    )
    assert "offset_s" not in kissed
    assert "DENY" in kissed["error"]


def test_ntp_servers_come_from_the_report() -> None:
    report = report_with_secrets(1234)
    assert bundle.ntp_servers(report) == [("127.0.0.1", 1234)]
    plain = make_report({"common.dns-udp": "pass"})
    assert bundle.ntp_servers(plain) == [("127.0.0.1", 123)]


def test_routes_are_decoded(tmp_path: Path) -> None:
    route = tmp_path / "route"
    route.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask"
        "\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        "eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t1400\t0\t0\n"
        "garbage line\n"
    )
    assert bundle.ipv4_routes(route) == [
        {
            "interface": "eth0",
            "destination": "0.0.0.0/0",
            "gateway": "192.168.0.1",
            "flags": "UG",
            "metric": 100,
            "mtu": 0,
        },
        {
            "interface": "eth0",
            "destination": "192.168.0.0/24",
            "gateway": "0.0.0.0",
            "flags": "U",
            "metric": 0,
            "mtu": 1400,
        },
    ]
    ipv6 = tmp_path / "ipv6_route"
    ipv6.write_text(
        "20010db8000000000000000000000000 20 00000000000000000000000000000000 00 "
        "fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n"
        "short\n"
    )
    assert bundle.ipv6_routes(ipv6) == [
        {
            "interface": "eth0",
            "destination": "2001:db8::/32",
            "gateway": "fe80::1",
            "flags": "UG",
            "metric": 1024,
        }
    ]


def test_build_archive_reads_back_with_tarfile() -> None:
    created = bundle.datetime(2024, 5, 1, 12, 0, tzinfo=bundle.UTC)
    data = bundle.build_archive([bundle.Member("a.txt", b"hello", "a")], created)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        names = archive.getnames()
        info = archive.getmember("a.txt")
    assert names == ["manifest.json", "a.txt"]
    assert info.mtime == int(created.timestamp())


def test_the_watch_variables_do_not_hide_its_saved_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "TYPE": "volume",
        "REGION": "us-east-1",
        "GATEWAY": "127.0.0.1",
        "ONLY": "iscsi.target",
        "TIMEOUT": "1",
    }.items():
        monkeypatch.setenv(f"SGW_REACH_{name}", value)
    state = tmp_path / "state"
    saved = make_report({"common.dns-udp": "pass"})
    fill_store(state, saved)
    output = tmp_path / "b.tar.gz"
    argv = ["bundle", "--output", str(output), "--log-level", "error"]
    assert main([*argv, "--state-dir", str(state)]) == 0
    report = json.loads(members(output)["report.json"][1])
    assert report["results"] == saved["results"]

    assert main([*argv, "--state-dir", str(tmp_path / "none")]) == 0
    capsys.readouterr()
    found = members(output)
    report = json.loads(found["report.json"][1])
    assert [r["rule"] for r in report["results"]] == ["iscsi.target"]
    manifest = json.loads(found["manifest.json"][1])
    assert "SGW_REACH_TYPE" in manifest["members"][0]["description"]
