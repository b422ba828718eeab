"""Which failures get path diagnostics, and what a UDP trace sends: the
rule's probe's own first datagram. The diagnostics themselves are stood
in for here; tests/test_diagnose_lab.py runs them for real."""

from __future__ import annotations

import asyncio
from typing import Any

import dns.message
import pytest

from agent import diagnosis, trace
from probes import ntp, pathdiag
from probes.base import Deadline, Transport
from tests.reports import result


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, bytes | None]]:
    seen: list[tuple[int, str, bytes | None]] = []

    async def diagnose(
        _address: str,
        port: int,
        transport: Transport,
        _deadline: Deadline,
        *,
        payload: bytes | None = None,
    ) -> pathdiag.Diagnosis:
        seen.append((port, str(transport), payload))
        return pathdiag.Diagnosis.failed("stood in")

    monkeypatch.setattr(pathdiag, "raw_capability", lambda: None)
    monkeypatch.setattr(pathdiag, "diagnose", diagnose)
    return seen


def test_a_udp_trace_sends_the_probes_own_datagram(
    sent: list[tuple[int, str, bytes | None]],
) -> None:
    failed = [
        result("common.dns-udp", "fail"),
        result("common.ntp", "fail"),
        result("file.dns-tcp", "fail"),
        result("file.nfs.nfs-tcp", "pass"),
    ]
    results, ran = asyncio.run(diagnosis.diagnose_failures(failed, 5.0))
    assert ran == {"ran": True, "targets": 3}
    by_port = {(port, transport): data for port, transport, data in sent}
    assert set(by_port) == {(53, "udp"), (123, "udp"), (53, "tcp")}
    assert by_port[(53, "tcp")] is None
    query = dns.message.from_wire(by_port[(53, "udp")] or b"")
    assert str(query.question[0].name) == "amazonaws.com."
    request = ntp.parse_reply(by_port[(123, "udp")] or b"")
    assert request.mode == ntp.Mode.CLIENT
    assert [r.diagnosis is not None for r in results] == [True, True, True, False]


def test_trace_by_hand_picks_the_datagram_by_port() -> None:
    assert trace.udp_payload(9) is None
    # 138/udp has no request/response exchange: the trace sends a byte.
    assert trace.udp_payload(138) is None
    rpc: Any = trace.udp_payload(2049)
    assert rpc is not None and rpc[4:8] == b"\0\0\0\0"  # msg_type CALL
    assert trace.udp_payload(123) is not None
