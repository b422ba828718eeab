"""Planning, verdicts and the report format, without a network."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent.plan import Options, SelectionError, plan_checks, select_rules
from agent.report import Run, build_report, now, to_json, write_atomic
from agent.runner import run_checks
from agent.table import render_report
from probes.base import Outcome, ProbeRequest, ProbeSettings, Reason, Status
from probes.registry import PROBES
from rules import load_endpoints, load_matrix
from tests import reports
from tests.schema import validate_report

MATRIX = load_matrix(None, PROBES.keys())
ENDPOINTS = load_endpoints()


def plan(gateway_type: str = "file", **given: Any) -> list[Any]:
    options = Options(gateway_type=gateway_type, region="us-east-1", **given)
    rules = MATRIX.select(gateway_type, options.appliance)
    return plan_checks(rules, options, ENDPOINTS)


def test_missing_inputs_become_skipped_checks_with_the_flag() -> None:
    checks = plan("file")
    skipped = {c.rule.id: c.decided for c in checks if c.decided}
    assert "file.nfs.nfs-tcp" in skipped
    outcome = skipped["file.nfs.nfs-tcp"]
    assert outcome is not None
    assert outcome.status is Status.SKIP
    assert outcome.reason is Reason.NOT_CONFIGURED
    assert "--gateway" in outcome.detail
    assert "--ad-server" in str(skipped["file.ad.ldap"])


def test_one_check_per_endpoint_and_resolver() -> None:
    checks = plan(
        "volume",
        dns_servers=("192.0.2.1", "192.0.2.2"),
        buckets=("b1",),
        gateway="192.0.2.9",
    )
    https = [c.host for c in checks if c.rule.id == "common.aws-https"]
    assert "anon-cp.storagegateway.us-east-1.amazonaws.com" in https
    assert "b1.s3.us-east-1.amazonaws.com" in https
    assert len(https) == len(set(https)) == 9
    dns = [c.host for c in checks if c.rule.id == "common.dns-udp"]
    assert dns == ["192.0.2.1", "192.0.2.2"]


def test_proxy_port_comes_from_the_option() -> None:
    checks = plan("tape", appliance=True, proxy=("192.0.2.3", 3128))
    proxy = [c for c in checks if c.rule.id == "appliance.proxy"]
    assert [(c.host, c.port) for c in proxy] == [("192.0.2.3", 3128)]


def test_selection_by_id_pattern_and_port() -> None:
    rules = MATRIX.select("file", False)
    only_nfs = select_rules(rules, ("file.nfs.*",), ())
    assert {r.port for r in only_nfs} == {111, 2049, 20048}
    no_udp53 = select_rules(rules, (), ("53",))
    assert not any(r.port == 53 for r in no_udp53)
    with pytest.raises(SelectionError, match="'3260' matches no rule"):
        select_rules(rules, ("3260",), ())


async def _crash(_request: ProbeRequest) -> Outcome:
    raise RuntimeError("boom")


async def _hang(_request: ProbeRequest) -> Outcome:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


async def _fail(_request: ProbeRequest) -> Outcome:
    return Outcome(Status.FAIL, Reason.TIMEOUT, "dropped")


def run_with(probe: Any, gateway_type: str = "volume") -> list[Any]:
    probes = dict.fromkeys(PROBES, probe)
    options = Options(
        gateway_type=gateway_type,
        region="us-east-1",
        gateway="192.0.2.9",
        dns_servers=("192.0.2.1",),
        ntp_servers=("192.0.2.2",),
        support_hosts=("192.0.2.3",),
        timeout=0.2,
    )
    checks = plan_checks(MATRIX.select(gateway_type, False), options, ENDPOINTS)
    settings = ProbeSettings()
    return asyncio.run(run_checks(checks, settings, options, probes))


def test_a_crashing_probe_is_an_error_result_and_the_run_goes_on() -> None:
    results = run_with(_crash)
    assert results
    assert all(r.status is Status.ERROR for r in results)
    assert all("RuntimeError: boom" in r.detail for r in results)
    assert all(r.reason is Reason.INTERNAL_ERROR for r in results)


def test_a_hanging_probe_is_cut_at_its_deadline() -> None:
    results = run_with(_hang)
    assert all(r.reason is Reason.TIMEOUT for r in results)


def test_unrequired_failures_are_warnings_with_a_remedy() -> None:
    results = run_with(_fail)
    support = [r for r in results if r.rule.id == "common.support-ssh"]
    assert support[0].status is Status.WARN
    assert "Allow TCP 22 from the gateway to 192.0.2.3" in support[0].remedy
    report = make_report(results)
    assert report["summary"]["verdict"] == "fail"
    assert report["summary"]["warned"] == 1


def make_report(results: list[Any]) -> dict[str, Any]:
    moment = now()
    run = Run("volume", "us-east-1", "192.0.2.9", False, moment, moment)
    return build_report(run, results)


def test_report_matches_the_schema() -> None:
    report = make_report(run_with(_fail))
    validate_report(report)
    assert report["schema"] == "sgw-reach/report/v1"
    assert report["started_at"].endswith("Z")
    first = report["results"][0]
    assert first["rule"] == "common.aws-https"
    assert first["remedy"]


def test_write_atomic_replaces_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.json"
    write_atomic(target, to_json({"n": 1}))
    assert json.loads(target.read_text()) == {"n": 1}

    class Broken(Exception):
        pass

    def fail_replace(*_args: object) -> None:
        raise Broken

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(Broken):
        write_atomic(target, to_json({"n": 2}))
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"n": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_table_groups_rules_and_shared_remedies() -> None:
    report = make_report(run_with(_fail))
    text = render_report(report, width=120)
    assert "Outbound: what the gateway must reach" in text
    assert "Inbound: what must reach the gateway" in text
    assert "443/tcp  common.aws-https: gateway -> aws" in text
    assert "common.aws-https, 8 hosts (" in text
    assert "to each of them" in text
    assert text.rstrip().endswith("Verdict: FAIL")
    assert all(len(line) <= 120 for line in text.splitlines())


def test_an_interrupted_report_says_so_in_its_heading() -> None:
    report = reports.make_report({"common.ntp": "pass"})
    report["interrupted"] = True
    heading = render_report(report, width=100).splitlines()[0]
    assert "interrupted" in heading
