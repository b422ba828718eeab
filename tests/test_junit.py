"""The JUnit XML form of a report: counts, one case per result, and a
document that parses whatever a hostile server put in the evidence."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cli import main
from agent.junit import clean, to_junit
from tests.reports import make_report

STATUSES = {
    "common.aws-https": "pass",
    "common.dns-udp": "fail",
    "common.support-ssh": "warn",
    "file.ad.ldap": "skip",
    "common.ntp": "error",
}


def parse(report: dict[str, Any]) -> ET.Element:
    return ET.fromstring(to_junit(report).encode("utf-8"))


def case(suite: ET.Element, rule: str) -> ET.Element:
    found = [c for c in suite.iter("testcase") if c.get("name", "").startswith(rule)]
    assert len(found) == 1
    return found[0]


def test_suite_counts_and_properties() -> None:
    suite = parse(make_report(STATUSES))
    assert suite.tag == "testsuite"
    assert suite.get("name") == "sgw-reach file us-east-1"
    assert suite.get("tests") == "5"
    assert suite.get("failures") == "1"
    assert suite.get("errors") == "1"
    assert suite.get("skipped") == "1"
    assert suite.get("timestamp", "").count("T") == 1
    assert not suite.get("timestamp", "").endswith("Z")
    assert float(suite.get("time", "")) == pytest.approx(1.0)
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["verdict"] == "fail"
    assert properties["region"] == "us-east-1"


def test_one_case_per_result_by_outcome() -> None:
    suite = parse(make_report(STATUSES))
    assert len(list(suite.iter("testcase"))) == 5
    passed = case(suite, "common.aws-https")
    assert passed.get("classname") == "sgw-reach.outbound"
    assert passed.get("name") == "common.aws-https h.example:443/tcp"
    assert passed.get("time") == "0.013"
    assert list(passed) == []

    failure = case(suite, "common.dns-udp").find("failure")
    assert failure is not None
    assert failure.get("type") == "timeout"
    assert failure.get("message") == "timeout: common.dns-udp is fail"
    assert failure.text is not None
    assert "open the port" in failure.text
    assert '"seen": "fail"' in failure.text

    assert case(suite, "common.ntp").find("error") is not None
    skipped = case(suite, "file.ad.ldap").find("skipped")
    assert skipped is not None
    assert skipped.get("message") == "file.ad.ldap is skip"

    warned = case(suite, "common.support-ssh")
    assert warned.find("failure") is None
    out = warned.find("system-out")
    assert out is not None
    assert out.text is not None
    assert out.text.startswith("WARNING (the rule is not required): refused")


def test_ipv6_hosts_are_bracketed() -> None:
    report = make_report({"common.dns-udp": "pass"})
    report["results"][0]["host"] = "2001:db8::53"
    name = case(parse(report), "common.dns-udp").get("name")
    assert name == "common.dns-udp [2001:db8::53]:53/udp"


def test_hostile_detail_and_evidence_still_parse() -> None:
    hostile = "SSH-2.0-\x00evil\x1b[2J]]><!--&\ud800\ufffe\"'<x>"
    report = make_report({"common.support-ssh": "fail", "common.dns-udp": "fail"})
    for result in report["results"]:
        result["detail"] = hostile
        result["evidence"] = {"banner": hostile}
        result["remedy"] = hostile
    text = to_junit(report)
    suite = ET.fromstring(text.encode("utf-8"))
    failure = case(suite, "common.dns-udp").find("failure")
    assert failure is not None
    assert "\\x00evil\\x1b[2J]]>" in failure.get("message", "")
    assert "\\ud800\\ufffe" in failure.get("message", "")
    assert "\x00" not in text
    assert "\x1b" not in text


def test_clean_keeps_what_xml_allows() -> None:
    assert clean("tab\tnew\nline\rok é 😀") == "tab\tnew\nline\rok é 😀"
    assert clean("\x07\x7f") == "\\x07\x7f"


@settings(max_examples=200, deadline=None)
@given(detail=st.text(), evidence=st.text(), remedy=st.text())
def test_any_strings_give_a_document_that_parses(
    detail: str, evidence: str, remedy: str
) -> None:
    report = make_report({"common.dns-udp": "fail", "common.support-ssh": "warn"})
    for result in report["results"]:
        result["detail"] = detail
        result["evidence"] = {"seen": evidence, evidence: [evidence]}
        result["remedy"] = remedy
    suite = ET.fromstring(to_junit(report).encode("utf-8"))
    failure = case(suite, "common.dns-udp").find("failure")
    assert failure is not None
    assert failure.get("message", "").startswith("timeout: ")


def test_check_prints_junit(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "check",
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
            "--format",
            "junit",
            "--log-level",
            "error",
        ]
    )
    out = capsys.readouterr().out
    suite = ET.fromstring(out.encode("utf-8"))
    assert suite.get("tests") == "1"
    assert code == (1 if suite.get("failures") != "0" else 0)
