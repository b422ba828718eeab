"""`sgw-reach check` against real servers, with faults made by nftables.

The agent runs as a command in the lab's agent namespace, exactly as a
user runs it; every report it writes is validated against the shipped
JSON Schema, and the verdicts are asserted rule by rule.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.lab import Lab
from tests.lab import topology as t
from tests.schema import validate_report

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("faults")]

TIMEOUT = "2"


def check(
    lab: Lab,
    *extra: str,
    region: str = "us-east-1",
    gateway_type: str = "file",
    expect_exit: int | None = None,
) -> dict[str, Any]:
    """Run a check in the agent namespace and return its JSON report."""
    args = [
        "check",
        "--type",
        gateway_type,
        "--region",
        region,
        "--dns-server",
        t.DNS,
        "--ca-bundle",
        str(lab.ca_bundle),
        "--timeout",
        TIMEOUT,
        "--format",
        "json",
        *extra,
    ]
    done = lab.run_agent(*args, timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    validate_report(report)
    if expect_exit is not None:
        assert done.returncode == expect_exit, _failures(report)
    return report


def _failures(report: dict[str, Any]) -> str:
    bad = [r for r in report["results"] if r["status"] not in ("pass", "skip")]
    return json.dumps(bad, indent=1)


def results(report: dict[str, Any], rule: str) -> list[dict[str, Any]]:
    found = [r for r in report["results"] if r["rule"] == rule]
    assert found, f"no result for {rule}"
    return found


def one(report: dict[str, Any], rule: str, host: str | None = None) -> dict[str, Any]:
    found = [r for r in results(report, rule) if host is None or r["host"] == host]
    assert len(found) == 1, found
    return found[0]


HEALTHY = (
    "--gateway",
    t.GATEWAY,
    "--ntp-server",
    t.NTP_GOOD,
    "--support-host",
    t.SSH,
    "--bucket",
    "lab-bucket",
)


@pytest.mark.parametrize("gateway_type", ["file", "volume", "tape"])
def test_healthy_lab_passes_every_rule(lab: Lab, gateway_type: str) -> None:
    report = check(
        lab,
        *HEALTHY,
        "--appliance",
        "--proxy",
        f"{t.PROXY}:{t.PROXY_PORT}",
        gateway_type=gateway_type,
        expect_exit=0,
    )
    statuses = {r["status"] for r in report["results"]}
    assert statuses <= {"pass", "skip"}, _failures(report)
    skipped = {r["rule"] for r in report["results"] if r["status"] == "skip"}
    # Only the directory rules lack a target here.
    assert all(rule.startswith("file.ad.") for rule in skipped)
    assert report["summary"]["verdict"] == "pass"
    assert t.AGENT in report["agent"]["addresses"]


def test_healthy_evidence(lab: Lab) -> None:
    report = check(lab, *HEALTHY, expect_exit=0)
    tls = one(
        report,
        "file.control-https",
        "anon-cp.storagegateway.us-east-1.amazonaws.com",
    )
    assert tls["address"] == t.TLS_GOOD
    assert "sgw-reach Lab Root CA" in json.dumps(tls["evidence"])
    ssh = one(report, "file.support-ssh")
    assert "SSH-2.0" in json.dumps(ssh["evidence"])
    activation = one(report, "file.browser.activation-http")
    assert t.ACTIVATION_KEY.split("-")[0] in json.dumps(activation["evidence"])
    assert t.ACTIVATION_KEY not in json.dumps(report)
    udp = one(report, "file.smb.smb-direct-udp")
    assert "path open" in udp["detail"]


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("drop", "timeout"),
        ("reset", "refused"),
        ("prohibited", "prohibited"),
        ("host-unreachable", "unreachable"),
    ],
)
def test_tcp_faults_on_443(lab: Lab, action: str, reason: str) -> None:
    lab.fault(action, t.TLS_GOOD, 443)
    report = check(lab, "--only", "file.control-https", expect_exit=1)
    for result in results(report, "file.control-https"):
        assert result["status"] == "fail"
        assert result["reason"] == reason
        assert result["remedy"]
        if action in ("prohibited", "host-unreachable"):
            assert result["evidence"]["icmp_from"] == t.TLS_GOOD


@pytest.mark.parametrize(
    ("region", "reason", "words"),
    [
        ("us-west-2", "tls-intercepted", "Lab Inspecting Firewall CA"),
        ("eu-west-1", "tls-untrusted", "expired"),
        ("eu-central-1", "tls-untrusted", ""),
        ("ap-southeast-2", "dns-failure", "NXDOMAIN"),
    ],
)
def test_tls_verdicts_by_region(lab: Lab, region: str, reason: str, words: str) -> None:
    report = check(lab, "--only", "file.control-https", region=region)
    for result in results(report, "file.control-https"):
        assert result["reason"] == reason, result
        assert result["status"] == "fail"
        assert words in result["detail"] + json.dumps(result["evidence"])


def test_intercepted_tls_says_to_bypass_inspection(lab: Lab) -> None:
    report = check(lab, "--only", "file.control-https", region="us-west-2")
    result = results(report, "file.control-https")[0]
    assert "inspection" in (result["detail"] + result["remedy"]).lower()


@pytest.mark.parametrize(
    ("server", "extra", "status"),
    [
        (t.NTP_GOOD, (), "pass"),
        (t.NTP_FAST, (), "fail"),
        (t.NTP_FAST, ("--max-skew", "600"), "warn"),
        (t.NTP_UNSYNC, (), "fail"),
    ],
)
def test_ntp(lab: Lab, server: str, extra: tuple[str, ...], status: str) -> None:
    report = check(lab, "--only", "file.ntp", "--ntp-server", server, *extra)
    result = one(report, "file.ntp")
    assert result["status"] == status, result
    assert result["reason"] == ("ok" if status == "pass" else "clock-skew")
    if server == t.NTP_FAST:
        assert 295 < abs(result["evidence"]["offset_s"]) < 305


@pytest.mark.parametrize(
    ("action", "reason"), [("drop", "timeout"), ("prohibited", "prohibited")]
)
def test_ntp_faults(lab: Lab, action: str, reason: str) -> None:
    lab.fault(action, t.NTP_GOOD, 123, "udp")
    report = check(lab, "--only", "file.ntp", "--ntp-server", t.NTP_GOOD)
    assert one(report, "file.ntp")["reason"] == reason


def test_dns_udp_and_tcp_pass(lab: Lab) -> None:
    report = check(lab, "--only", "file.dns-*", expect_exit=0)
    for rule in ("file.dns-udp", "file.dns-tcp"):
        result = one(report, rule)
        assert result["status"] == "pass"
        assert result["address"] == t.DNS


@pytest.mark.parametrize(
    ("action", "proto", "rule", "reason"),
    [
        ("drop", "udp", "file.dns-udp", "timeout"),
        ("prohibited", "udp", "file.dns-udp", "prohibited"),
        ("reset", "tcp", "file.dns-tcp", "refused"),
        ("drop", "tcp", "file.dns-tcp", "timeout"),
    ],
)
def test_dns_faults(lab: Lab, action: str, proto: str, rule: str, reason: str) -> None:
    lab.fault(action, t.DNS, 53, proto)
    report = check(lab, "--only", rule, expect_exit=1)
    assert one(report, rule)["reason"] == reason


def test_dns_names_that_do_not_exist(lab: Lab) -> None:
    report = check(lab, "--only", "file.dns-udp", region="ap-southeast-2")
    result = one(report, "file.dns-udp")
    assert result["reason"] == "dns-failure"
    assert "NXDOMAIN" in json.dumps(result)


def test_blocked_dns_makes_endpoints_dns_failures(lab: Lab) -> None:
    lab.fault("drop", t.DNS, 53, "udp")
    report = check(lab, "--only", "file.cloudfront-https", expect_exit=1)
    assert one(report, "file.cloudfront-https")["reason"] == "dns-failure"


@pytest.mark.parametrize(
    ("host", "fault", "reason"),
    [
        (t.SSH, None, "ok"),
        (t.NOT_SSH, None, "wrong-protocol"),
        (t.SSH, "drop", "timeout"),
        (t.CLOSED, None, "refused"),
    ],
)
def test_support_channel(lab: Lab, host: str, fault: str | None, reason: str) -> None:
    if fault:
        lab.fault(fault, host, 22)
    report = check(lab, "--only", "file.support-ssh", "--support-host", host)
    result = one(report, "file.support-ssh")
    assert result["reason"] == reason, result
    if reason == "wrong-protocol":
        assert "HTTP" in json.dumps(result["evidence"])


@pytest.mark.parametrize(
    ("gateway", "fault", "status", "reason"),
    [
        (t.GATEWAY, None, "pass", "ok"),
        (t.GATEWAY_BROKEN, None, "fail", "protocol-error"),
        (t.GATEWAY, "drop", "fail", "timeout"),
        (t.GATEWAY, "reset", "fail", "refused"),
    ],
)
def test_activation(
    lab: Lab, gateway: str, fault: str | None, status: str, reason: str
) -> None:
    if fault:
        lab.fault(fault, gateway, 80)
    report = check(lab, "--only", "file.browser.activation-http", "--gateway", gateway)
    result = one(report, "file.browser.activation-http")
    assert (result["status"], result["reason"]) == (status, reason), result
    if gateway == t.GATEWAY_BROKEN:
        assert "internal error" in result["detail"]


@pytest.mark.parametrize(
    ("proxy", "region", "reason"),
    [
        (t.PROXY, "us-east-1", "ok"),
        (t.PROXY_AUTH, "us-east-1", "prohibited"),
        (t.PROXY_NO_CONNECT, "us-east-1", "prohibited"),
        (t.PROXY, "us-west-2", "tls-intercepted"),
    ],
)
def test_appliance_proxy(lab: Lab, proxy: str, region: str, reason: str) -> None:
    report = check(
        lab,
        "--appliance",
        "--only",
        "appliance.proxy",
        "--proxy",
        f"{proxy}:{t.PROXY_PORT}",
        region=region,
    )
    result = one(report, "appliance.proxy")
    assert result["reason"] == reason, result
    if proxy != t.PROXY:
        assert "status_line" in result["evidence"]


@pytest.mark.parametrize(
    ("action", "status", "reason"),
    [
        (None, "pass", "ok"),
        ("drop", "warn", "timeout"),
        ("prohibited", "fail", "prohibited"),
    ],
)
def test_udp_path_rows(lab: Lab, action: str | None, status: str, reason: str) -> None:
    if action:
        lab.fault(action, t.GATEWAY, 445, "udp")
    report = check(lab, "--only", "file.smb.smb-direct-udp", "--gateway", t.GATEWAY)
    result = one(report, "file.smb.smb-direct-udp")
    assert (result["status"], result["reason"]) == (status, reason), result


def test_inbound_tcp_rows_see_drops(lab: Lab) -> None:
    lab.fault("drop", t.GATEWAY, 2049)
    report = check(lab, "--only", "file.nfs.*", "--gateway", t.GATEWAY)
    assert one(report, "file.nfs.nfs-tcp")["reason"] == "timeout"
    assert one(report, "file.nfs.mountd-tcp")["status"] == "pass"


def test_everything_dropped_ends_in_about_one_timeout(lab: Lab) -> None:
    for address in t.SERVER_ADDRS:
        lab.fault("drop", address)
    report = check(
        lab,
        *HEALTHY,
        "--appliance",
        "--proxy",
        f"{t.PROXY}:{t.PROXY_PORT}",
        expect_exit=1,
    )
    assert len(report["results"]) > 25
    assert all(r["status"] != "pass" for r in report["results"])
    # Run one after another, these probes would take minutes; together
    # they take one deadline, plus start-up.
    assert report["duration_ms"] < 2 * float(TIMEOUT) * 1000 + 1500


def test_skipped_rules_say_which_option_enables_them(lab: Lab) -> None:
    report = check(
        lab, "--only", "file.nfs.nfs-tcp", "--only", "appliance.*", "--appliance"
    )
    nfs = one(report, "file.nfs.nfs-tcp")
    assert nfs["status"] == "skip"
    assert "--gateway" in nfs["detail"]
    proxy = one(report, "appliance.proxy")
    assert "--proxy" in proxy["detail"]


def test_output_file_and_table(lab: Lab) -> None:
    path = lab.workdir / "report.json"
    done = lab.run_agent(
        "check",
        "--type",
        "volume",
        "--region",
        "us-east-1",
        "--dns-server",
        t.DNS,
        "--ca-bundle",
        str(lab.ca_bundle),
        "--timeout",
        TIMEOUT,
        "--gateway",
        t.GATEWAY,
        "--only",
        "iscsi.target",
        "--output",
        str(path),
    )
    assert done.returncode == 0, done.stderr
    assert "Inbound: what must reach the gateway" in done.stdout
    assert "Verdict: PASS" in done.stdout
    report = json.loads(path.read_text())
    validate_report(report)
    lines = [json.loads(line) for line in done.stderr.splitlines() if line]
    assert any(line.get("event") == "probe.result" for line in lines)
