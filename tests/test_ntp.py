"""Tests for probes.ntp: the codec on bytes, the probe on a loopback server."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import cast

import ntplib
import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes import ntp
from probes.base import (
    Deadline,
    Outcome,
    ProbeRequest,
    ProbeSettings,
    Reason,
    Status,
    Transport,
)
from tests.fakes import UdpHandler as Handler
from tests.fakes import serving_udp

# RFC 5905 7.3: LI VN Mode, stratum, poll, precision, root delay and
# dispersion (16.16), ref id, then four 32.32 timestamps.
HEADER = struct.Struct("!BBbbIII QQQQ")
DELTA = ntplib.NTP.NTP_DELTA


def packet(
    *,
    leap: int = 0,
    version: int = 4,
    mode: int = 4,
    stratum: int = 2,
    ref_id: int = 0xC0000201,
    root_delay: int = 0x00008000,
    root_dispersion: int = 0x00010000,
    reference: int = 0,
    origin: int = 0,
    receive: int = 0,
    transmit: int = 0,
) -> bytes:
    return HEADER.pack(
        leap << 6 | version << 3 | mode,
        stratum,
        6,
        -20,
        root_delay,
        root_dispersion,
        ref_id,
        reference,
        origin,
        receive,
        transmit,
    )


def ref(text: str) -> int:
    return int.from_bytes(text.encode("ascii").ljust(4, b"\0"), "big")


# Codec: bytes in, values or errors out.


def test_build_request_is_a_version_4_client_packet() -> None:
    transmit = 0x0123456789ABCDEF
    data = ntp.build_request(transmit)
    assert len(data) == ntp.PACKET_SIZE
    assert data[0] == 0b00_100_011  # leap 0, version 4, mode 3
    assert data[1:40] == bytes(39)
    assert data[40:48] == transmit.to_bytes(8, "big")


def test_build_request_version_3() -> None:
    assert ntp.build_request(1, version=3)[0] == 0b00_011_011


def test_parse_reply_reads_every_field() -> None:
    data = packet(
        leap=1,
        stratum=3,
        ref_id=0x0A000001,
        origin=1 << 40,
        receive=2 << 40,
        transmit=3 << 40,
    )
    reply = ntp.parse_reply(data + b"extension fields are ignored")
    assert (reply.leap, reply.version) == (1, 4)
    assert (reply.mode, reply.stratum) == (4, 3)
    assert (reply.poll, reply.precision) == (6, -20)
    assert reply.root_delay == 0.5
    assert reply.root_dispersion == 1.0
    assert (reply.origin, reply.receive, reply.transmit) == (
        1 << 40,
        2 << 40,
        3 << 40,
    )


@pytest.mark.parametrize("size", [0, 1, 12, 47])
def test_parse_reply_refuses_short_packets(size: int) -> None:
    with pytest.raises(ntp.NtpError):
        ntp.parse_reply(packet()[:size])


@pytest.mark.parametrize(
    ("mode", "origin", "expected"),
    [
        (4, 0xAAAA, True),
        (4, 0xAAAB, False),
        (3, 0xAAAA, False),
        (5, 0xAAAA, False),
    ],
)
def test_answers_needs_server_mode_and_our_timestamp(
    mode: int, origin: int, expected: bool
) -> None:
    reply = ntp.parse_reply(packet(mode=mode, origin=origin))
    assert ntp.answers(reply, 0xAAAA) is expected


def test_ntp_time_of_the_unix_epoch_and_half_a_second() -> None:
    assert ntp.ntp_time(0) == DELTA << 32
    assert ntp.ntp_time(500_000_000) == (DELTA << 32) + (1 << 31)


def test_with_nonce_changes_only_the_low_bits() -> None:
    stamp = 0x1122334455667788
    mixed = ntp.with_nonce(stamp, 0xFFFFFFFF)
    assert mixed >> 16 == stamp >> 16
    assert mixed & 0xFFFF == 0xFFFF


SECOND = 1 << 32


@pytest.mark.parametrize(
    ("stamps", "offset", "delay"),
    [
        # Same clocks, 20 ms each way, 1 ms in the server.
        ((100, 100.020, 100.021, 100.041), 0.0, 0.040),
        # Server 5 s ahead.
        ((100, 105.020, 105.021, 100.041), 5.0, 0.040),
        # Server 70 s behind.
        ((100, 30.020, 30.021, 100.041), -70.0, 0.040),
    ],
)
def test_offset_and_delay(
    stamps: tuple[float, float, float, float], offset: float, delay: float
) -> None:
    t1, t2, t3, t4 = (int(t * SECOND) for t in stamps)
    got_offset, got_delay = ntp.offset_and_delay(t1, t2, t3, t4)
    assert got_offset == pytest.approx(offset, abs=1e-6)
    assert got_delay == pytest.approx(delay, abs=1e-6)


def test_offset_across_the_era_boundary() -> None:
    era = 1 << 64
    t1 = era - SECOND  # one second before the 2036 rollover
    t2 = (t1 + 3 * SECOND) % era
    t3 = t2
    t4 = (t1 + SECOND // 10) % era
    offset, delay = ntp.offset_and_delay(t1, t2, t3, t4)
    assert offset == pytest.approx(2.95, abs=1e-6)
    assert delay == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize(
    ("stratum", "ref_id", "ipv6", "text"),
    [
        (0, ref("RATE"), False, "RATE"),
        (1, ref("GPS"), False, "GPS"),
        (1, ref("\x01ab"), False, "\\x01ab"),
        (2, 0xC0000201, False, "192.0.2.1"),
        (2, 0xDEADBEEF, True, "0xdeadbeef"),
    ],
)
def test_ref_id_text(stratum: int, ref_id: int, ipv6: bool, text: str) -> None:
    reply = ntp.parse_reply(packet(stratum=stratum, ref_id=ref_id))
    assert ntp.ref_id_text(reply, ipv6) == text


@given(st.binary(max_size=120))
def test_random_bytes_raise_only_ntp_error(data: bytes) -> None:
    try:
        reply = ntp.parse_reply(data)
    except ntp.NtpError:
        assert len(data) < ntp.PACKET_SIZE
        return
    assert 0 <= reply.mode <= 7
    ntp.ref_id_text(reply, ipv6=False)


@given(st.integers(min_value=0, max_value=ntp.PACKET_SIZE - 1))
def test_truncated_replies_raise_ntp_error(cut: int) -> None:
    with pytest.raises(ntp.NtpError):
        ntp.parse_reply(packet(transmit=123)[:cut])


@given(
    st.integers(min_value=0, max_value=(1 << 64) - 1),
    st.integers(min_value=-(1 << 62), max_value=1 << 62),
)
def test_seconds_between_survives_wrap_around(start: int, step: int) -> None:
    later = (start + step) % (1 << 64)
    assert ntp.seconds_between(later, start) == step / SECOND


# The probe against a small server on loopback.


def serve_time(
    *,
    offset: float = 0.0,
    stratum: int = 2,
    leap: int = 0,
    ref_id: int = 0xC0000201,
    origin_delta: int = 0,
) -> Handler:
    """A server whose clock runs ``offset`` seconds from ours."""

    def handler(request: bytes) -> list[bytes]:
        now = ntp.ntp_time(time.time_ns() + int(offset * 1e9))
        return [
            packet(
                leap=leap,
                stratum=stratum,
                ref_id=ref_id,
                origin=(int.from_bytes(request[40:48], "big") + origin_delta)
                % (1 << 64),
                receive=now,
                transmit=now + SECOND // 10_000,
            )
        ]

    return handler


def request(
    port: int, seconds: float = 1.5, settings: ProbeSettings | None = None
) -> ProbeRequest:
    return ProbeRequest(
        host="127.0.0.1",
        port=port,
        transport=Transport.UDP,
        deadline=Deadline.after(seconds),
        settings=settings or ProbeSettings(),
        address="127.0.0.1",
    )


def run(
    handler: Handler,
    seconds: float = 1.5,
    settings: ProbeSettings | None = None,
) -> tuple[Outcome, list[bytes]]:
    async def main() -> tuple[Outcome, list[bytes]]:
        async with serving_udp(handler) as (server, port):
            outcome = await ntp.probe(request(port, seconds, settings))
        return outcome, server.seen

    return asyncio.run(main())


def test_a_good_server_passes_with_its_evidence() -> None:
    outcome, seen = run(serve_time())
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.address == "127.0.0.1"
    evidence = outcome.evidence
    assert set(evidence) == {
        "server",
        "offset_s",
        "rtt_ms",
        "stratum",
        "leap",
        "version",
        "ref_id",
        "root_delay_ms",
        "root_dispersion_ms",
    }
    assert evidence["server"] == "127.0.0.1"
    assert abs(cast(float, evidence["offset_s"])) < 0.05
    assert evidence["stratum"] == 2
    assert (evidence["leap"], evidence["version"]) == (0, 4)
    assert evidence["ref_id"] == "192.0.2.1"
    assert (evidence["root_delay_ms"], evidence["root_dispersion_ms"]) == (
        500.0,
        1000.0,
    )
    assert len(seen) == 1
    assert seen[0][0] == 0b00_100_011


def test_an_offset_past_warn_skew_warns() -> None:
    outcome, _ = run(serve_time(offset=-5))
    assert (outcome.status, outcome.reason) == (Status.WARN, Reason.CLOCK_SKEW)
    assert "differ by 5.0" in outcome.detail
    assert "ahead of" in outcome.detail


def test_an_offset_past_max_skew_fails() -> None:
    outcome, _ = run(serve_time(offset=120))
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.CLOCK_SKEW)
    assert "differ by 120.0" in outcome.detail
    assert "activation fails past 60 s" in outcome.detail
    assert "behind" in outcome.detail
    assert outcome.evidence["offset_s"] == pytest.approx(120, abs=0.05)
    assert outcome.remedy


def test_skew_limits_come_from_the_settings() -> None:
    settings = ProbeSettings(max_skew=3.0, warn_skew=0.5)
    outcome, _ = run(serve_time(offset=4), settings=settings)
    assert outcome.status is Status.FAIL
    assert "past 3 s" in outcome.detail


def test_a_max_skew_below_the_warning_threshold_still_fails() -> None:
    settings = ProbeSettings(max_skew=0.5)
    outcome, _ = run(serve_time(offset=0.8), settings=settings)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.CLOCK_SKEW)
    assert "past 0.5 s" in outcome.detail


@pytest.mark.parametrize("code", ["RATE", "DENY", "RSTR", "XYZW"])
def test_a_kiss_of_death_is_a_protocol_error(code: str) -> None:
    outcome, _ = run(serve_time(stratum=0, ref_id=ref(code)))
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.PROTOCOL_ERROR,
    )
    assert code in outcome.detail
    assert outcome.evidence["kiss_code"] == code
    assert outcome.remedy


@pytest.mark.parametrize(
    ("leap", "stratum"),
    [(3, 0), (3, 8), (0, 16), (0, 200)],
)
def test_an_unsynchronised_server_fails_clock_skew(
    leap: int,
    stratum: int,
) -> None:
    outcome, _ = run(serve_time(leap=leap, stratum=stratum, ref_id=0))
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.CLOCK_SKEW)
    assert "not synchronised" in outcome.detail


def test_a_rate_limited_unsynchronised_server_is_a_kiss() -> None:
    outcome, _ = run(serve_time(leap=3, stratum=0, ref_id=ref("RATE")))
    assert outcome.reason is Reason.PROTOCOL_ERROR


def test_replies_with_another_origin_are_ignored() -> None:
    outcome, seen = run(serve_time(origin_delta=1), seconds=0.6)
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.PROTOCOL_ERROR,
    )
    assert outcome.evidence["rejected"] == 3
    assert len(seen) == 3
    assert "origin" in outcome.detail


def test_a_forged_reply_before_the_real_one_is_skipped() -> None:
    good = serve_time()
    forged = serve_time(offset=500, origin_delta=7)

    def handler(data: bytes) -> list[bytes]:
        return forged(data) + good(data)

    outcome, _ = run(handler)
    assert outcome.status is Status.PASS


def test_a_lost_request_is_sent_again_with_a_fresh_timestamp() -> None:
    good = serve_time()
    calls: list[bytes] = []

    def handler(data: bytes) -> list[bytes]:
        calls.append(data)
        return good(data) if len(calls) > 1 else []

    outcome, seen = run(handler, seconds=1.5)
    assert outcome.status is Status.PASS, outcome.detail
    assert len(seen) == 2
    assert seen[0][40:48] != seen[1][40:48]
    # The offset comes from the second request's own T1, not the first's.
    assert abs(cast(float, outcome.evidence["offset_s"])) < 0.05


def test_an_echo_is_the_wrong_protocol() -> None:
    outcome, _ = run(lambda data: [data], seconds=0.6)
    assert outcome.reason is Reason.WRONG_PROTOCOL
    assert "echoed back" in outcome.detail


def test_garbage_is_the_wrong_protocol_with_its_first_bytes() -> None:
    outcome, _ = run(lambda _data: [b"\x00\x01not ntp"], seconds=0.6)
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.WRONG_PROTOCOL,
    )
    assert outcome.evidence["first_bytes"] == "\\x00\\x01not ntp"
    assert outcome.remedy


def test_silence_is_a_timeout_after_three_requests() -> None:
    outcome, seen = run(lambda _data: [], seconds=0.6)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.TIMEOUT)
    assert outcome.evidence["sent"] == 3
    assert len(seen) == 3
    assert outcome.remedy == ""


def test_a_closed_port_is_refused() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main() -> Outcome:
        return await ntp.probe(request(port))

    outcome = asyncio.run(main())
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.REFUSED)


def test_the_probe_keeps_its_deadline() -> None:
    started = time.monotonic()
    run(lambda _data: [], seconds=0.5)
    assert time.monotonic() - started < 1.5
