"""Path diagnostics across two routers: the finding names the device.

The multi-hop lab puts the drop, the reset, the ICMP prohibited and an
MTU black hole on a middle router; `sgw-reach trace` and `check
--diagnose` must name that router and the right size.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from tests.lab import MultiHopLab
from tests.lab import multihop as m
from tests.schema import validate_report

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("multihop_faults")]


def trace(lab: MultiHopLab, port: int = 443, *extra: str) -> tuple[int, dict[str, Any]]:
    done = lab.run_agent(
        "trace", m.GATEWAY, str(port), "--format", "json", "--timeout", "6",
        *extra,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report["diagnosis"]


def hop_addresses(found: dict[str, Any]) -> list[str | None]:
    return [hop["address"] for hop in found["trace"]["hops"]]


def test_healthy_path_lists_both_routers(multihop: MultiHopLab) -> None:
    code, found = trace(multihop)
    assert code == 0, found
    assert found["trace"]["reached"] is True
    assert hop_addresses(found)[:2] == [m.R1_NEAR, m.R2_NEAR]
    assert found["syn"]["state"] == "open"


@pytest.mark.parametrize(("router", "last"), [("r1", m.R1_NEAR), ("r2", m.R2_NEAR)])
def test_drop_names_the_last_hop_before_it(
    multihop: MultiHopLab, router: str, last: str
) -> None:
    multihop.fault(router, "drop", 443)
    code, found = trace(multihop)
    assert code == 1
    assert found["syn"]["state"] == "filtered"
    assert found["trace"]["end"] == "dropped"
    assert found["trace"]["last_hop"] == last
    assert f"dropped after {last}" in found["summary"]


@pytest.mark.parametrize(("router", "sender"), [("r1", m.R1_NEAR), ("r2", m.R2_NEAR)])
def test_prohibited_names_the_router(
    multihop: MultiHopLab, router: str, sender: str
) -> None:
    multihop.fault(router, "prohibited", 443)
    code, found = trace(multihop)
    assert code == 1
    assert found["syn"]["state"] == "prohibited"
    assert found["syn"]["from"] == sender
    assert sender in found["summary"]


@pytest.mark.parametrize(
    ("router", "hop", "near"), [("r1", 1, m.R1_NEAR), ("r2", 2, m.R2_NEAR)]
)
def test_forged_reset_names_the_router(
    multihop: MultiHopLab, router: str, hop: int, near: str
) -> None:
    multihop.fault(router, "reset", 443)
    _code, found = trace(multihop)
    assert found["syn"]["state"] == "closed"
    assert found["syn"]["from"] == m.GATEWAY
    assert found["syn"]["hops_away"] == hop
    # The reset claims to come from the far host, but its TTL says it was
    # sent nearer, by the router the trace met at that hop.
    assert found["trace"]["end"] == "refused"
    assert hop_addresses(found)[hop - 1] == near
    verdict = f"reset by hop {hop} ({near}) in the name of {m.GATEWAY}"
    assert found["summary"] == f"{verdict}: a filter on the path"


def test_udp_trace_reaches_the_closed_port(multihop: MultiHopLab) -> None:
    code, found = trace(multihop, 123, "--udp")
    assert code == 0, found
    assert found["trace"]["reached"] is True
    assert hop_addresses(found)[:2] == [m.R1_NEAR, m.R2_NEAR]


def test_mtu_black_hole_is_found_with_its_size(multihop: MultiHopLab) -> None:
    multihop.set_mtu("r1", 1400, block_frag_needed=True)
    _code, found = trace(multihop, 123, "--udp")
    mtu = found["mtu"]
    assert mtu["black_hole"] is True, mtu
    assert mtu["largest"] == 1400
    assert "1400" in found["summary"]


def test_tcp_black_hole_is_found_with_its_size(multihop: MultiHopLab) -> None:
    # Behind r1 neither end sees the small link, so TCP data would stall;
    # SYNs carrying data find the size.
    multihop.set_mtu("r1", 1400, block_frag_needed=True)
    _code, found = trace(multihop)
    assert found["syn"]["state"] == "open"
    mtu = found["mtu"]
    assert mtu["black_hole"] is True, mtu
    assert mtu["largest"] == 1400
    assert mtu["frag_needed_from"] is None
    above = {one["result"] for one in mtu["tried"] if one["size"] > 1400}
    assert above == {"lost"}, mtu
    assert found["summary"] == "path MTU 1400, black hole above it"


def test_mtu_with_frag_needed_names_the_router(multihop: MultiHopLab) -> None:
    multihop.set_mtu("r2", 1280, block_frag_needed=False)
    _code, found = trace(multihop, 123, "--udp")
    mtu = found["mtu"]
    assert mtu["black_hole"] is False, mtu
    assert mtu["largest"] == 1280
    assert mtu["frag_needed_from"] == m.R2_NEAR


def test_check_diagnose_attaches_the_finding(multihop: MultiHopLab) -> None:
    multihop.fault("r2", "drop", 22)
    done = multihop.run_agent(
        "check", "--type", "file", "--region", "us-east-1",
        "--dns-server", m.GATEWAY, "--support-host", m.GATEWAY,
        "--only", "file.support-ssh", "--timeout", "2",
        "--diagnose", "--format", "json",
    )  # fmt: skip
    report = json.loads(done.stdout)
    validate_report(report)
    assert report["diagnostics"]["ran"] is True
    result = report["results"][0]
    assert result["reason"] == "timeout"
    assert f"dropped after {m.R2_NEAR}" in result["diagnosis"]["summary"]


def test_table_shows_the_path_line(multihop: MultiHopLab) -> None:
    multihop.fault("r1", "prohibited", 22)
    done = multihop.run_agent(
        "check", "--type", "file", "--region", "us-east-1",
        "--dns-server", m.GATEWAY, "--support-host", m.GATEWAY,
        "--only", "file.support-ssh", "--timeout", "2", "--diagnose",
    )  # fmt: skip
    assert "      path: " in done.stdout
    assert m.R1_NEAR in done.stdout


def test_without_raw_sockets_the_check_goes_on(multihop: MultiHopLab) -> None:
    multihop.fault("r1", "drop", 22)
    argv = [
        "setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw",
        "--", sys.executable, "-m", "agent",
        "check", "--type", "file", "--region", "us-east-1",
        "--dns-server", m.GATEWAY, "--support-host", m.GATEWAY,
        "--only", "file.support-ssh", "--timeout", "1", "--diagnose",
        "--format", "json",
    ]  # fmt: skip
    done = multihop.exec_client(argv, timeout=60)
    report = json.loads(done.stdout)
    validate_report(report)
    assert report["diagnostics"]["ran"] is False
    assert "NET_RAW" in report["diagnostics"]["reason"].upper()
    assert report["results"][0]["diagnosis"] is None
    assert done.returncode == 1
