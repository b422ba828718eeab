"""Tests for probes.pathdiag: reply matching, trace assembly, the path MTU
search and the summary on packets built here; the whole diagnosis on
loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP

from probes import pathdiag
from probes.base import Deadline, Transport
from probes.pathdiag import (
    Answer,
    End,
    Fate,
    Flow,
    Heard,
    Reply,
    Sent,
    SizeTry,
    SynState,
)

SOURCE = "10.233.1.2"
ROUTER = "10.233.1.1"
TARGET = "10.233.2.2"
TCP_FLOW = Flow(SOURCE, TARGET, 443, Transport.TCP)
UDP_FLOW = Flow(SOURCE, TARGET, 53, Transport.UDP)
SYN = Sent(40001, seq=1000)
BIG_SYN = Sent(40002, seq=0xFFFFFFF0, data_len=1456)
DATAGRAM = Sent(40003)
SENT = {probe.sport: probe for probe in (SYN, BIG_SYN, DATAGRAM)}


def wire(packet: Any) -> Any:
    """The packet as it would come off a raw socket."""
    return IP(bytes(packet))


def probe_of(probe: Sent, flow: Flow = TCP_FLOW, *, ttl: int = 5) -> Any:
    payload = bytes(probe.data_len)
    data = pathdiag.probe_packet(flow, probe, ttl=ttl, payload=payload)
    return IP(data)


def icmp_about(
    original: Any,
    *,
    sender: str = ROUTER,
    icmp_type: int = 11,
    code: int = 0,
    quote: int | None = None,
    **fields: Any,
) -> Any:
    """An ICMP error from ``sender`` quoting ``original`` (all of it, or
    its first ``quote`` bytes)."""
    quoted = bytes(original)[:quote]
    return wire(
        IP(src=sender, dst=SOURCE, ttl=64)
        / ICMP(type=icmp_type, code=code, **fields)
        / quoted
    )


def segment(flags: str, ack: int, *, dport: int = SYN.sport, **ip: Any) -> Any:
    fields = {"src": TARGET, "dst": SOURCE, "ttl": 63, **ip}
    return wire(IP(**fields) / TCP(sport=443, dport=dport, flags=flags, ack=ack))


def datagram(*, sport: int = 53, src: str = TARGET) -> Any:
    return wire(
        IP(src=src, dst=SOURCE, ttl=63) / UDP(sport=sport, dport=DATAGRAM.sport) / b"x"
    )


def heard(kind: Reply, sender: str = TARGET, **fields: Any) -> Heard:
    return Heard(Answer(kind, sender, **fields), rtt_ms=1.0)


def time_exceeded(sender: str) -> Heard:
    return heard(Reply.TIME_EXCEEDED, sender, icmp_type=11, icmp_code=0)


def prohibited(sender: str = ROUTER, code: int = 13) -> Heard:
    return heard(Reply.PROHIBITED, sender, icmp_type=3, icmp_code=code)


# Matching replies to probes.

MATCHING: list[tuple[str, Callable[[], Any], Flow, tuple[int, Reply, str] | None]] = [
    (
        "syn-ack",
        lambda: segment("SA", SYN.seq + 1),
        TCP_FLOW,
        (SYN.sport, Reply.SYN_ACK, TARGET),
    ),
    ("syn-ack, wrong ack", lambda: segment("SA", SYN.seq + 7), TCP_FLOW, None),
    (
        "rst-ack",
        lambda: segment("RA", SYN.seq + 1),
        TCP_FLOW,
        (SYN.sport, Reply.RST, TARGET),
    ),
    ("rst without ack", lambda: segment("R", 0), TCP_FLOW, None),
    ("plain ack", lambda: segment("A", SYN.seq + 1), TCP_FLOW, None),
    (
        "rst acking a SYN's data, across the wrap",
        lambda: segment("RA", (BIG_SYN.seq + 1 + 1456) % 2**32, dport=BIG_SYN.sport),
        TCP_FLOW,
        (BIG_SYN.sport, Reply.RST, TARGET),
    ),
    (
        "syn-ack to a SYN with data acks the SYN only",
        lambda: segment("SA", (BIG_SYN.seq + 1) % 2**32, dport=BIG_SYN.sport),
        TCP_FLOW,
        (BIG_SYN.sport, Reply.SYN_ACK, TARGET),
    ),
    (
        "another source port",
        lambda: segment("SA", SYN.seq + 1, dport=40999),
        TCP_FLOW,
        None,
    ),
    (
        "another sender",
        lambda: segment("SA", SYN.seq + 1, src="10.233.2.3"),
        TCP_FLOW,
        None,
    ),
    (
        "to another local address",
        lambda: segment("SA", SYN.seq + 1, dst="10.233.1.9"),
        TCP_FLOW,
        None,
    ),
    (
        "time-exceeded quoting the probe",
        lambda: icmp_about(probe_of(SYN)),
        TCP_FLOW,
        (SYN.sport, Reply.TIME_EXCEEDED, ROUTER),
    ),
    (
        "time-exceeded quoting 8 bytes of TCP (RFC 792)",
        lambda: icmp_about(probe_of(SYN), quote=28),
        TCP_FLOW,
        (SYN.sport, Reply.TIME_EXCEEDED, ROUTER),
    ),
    (
        "quote of another diagnosis's probe: same port, other sequence",
        lambda: icmp_about(probe_of(Sent(SYN.sport, seq=99))),
        TCP_FLOW,
        None,
    ),
    (
        "quote of a probe to another port",
        lambda: icmp_about(probe_of(SYN, Flow(SOURCE, TARGET, 444, Transport.TCP))),
        TCP_FLOW,
        None,
    ),
    (
        "quote of a probe to another address",
        lambda: icmp_about(
            probe_of(SYN, Flow(SOURCE, "10.233.2.3", 443, Transport.TCP))
        ),
        TCP_FLOW,
        None,
    ),
    (
        "quote cut inside the transport header",
        lambda: icmp_about(probe_of(SYN), quote=22),
        TCP_FLOW,
        None,
    ),
    (
        "admin-prohibited",
        lambda: icmp_about(probe_of(SYN), icmp_type=3, code=13),
        TCP_FLOW,
        (SYN.sport, Reply.PROHIBITED, ROUTER),
    ),
    (
        "host-prohibited",
        lambda: icmp_about(probe_of(SYN), icmp_type=3, code=10),
        TCP_FLOW,
        (SYN.sport, Reply.PROHIBITED, ROUTER),
    ),
    (
        "net-prohibited",
        lambda: icmp_about(probe_of(SYN), icmp_type=3, code=9),
        TCP_FLOW,
        (SYN.sport, Reply.PROHIBITED, ROUTER),
    ),
    (
        "host-unreachable",
        lambda: icmp_about(probe_of(SYN), icmp_type=3, code=1),
        TCP_FLOW,
        (SYN.sport, Reply.UNREACHABLE, ROUTER),
    ),
    (
        "port-unreachable for TCP",
        lambda: icmp_about(probe_of(SYN), icmp_type=3, code=3),
        TCP_FLOW,
        (SYN.sport, Reply.PORT_UNREACHABLE, ROUTER),
    ),
    (
        "redirect is no answer",
        lambda: icmp_about(probe_of(SYN), icmp_type=5, code=1),
        TCP_FLOW,
        None,
    ),
    (
        "echo reply is no answer",
        lambda: wire(IP(src=TARGET, dst=SOURCE) / ICMP(type=0)),
        TCP_FLOW,
        None,
    ),
    (
        "udp answer",
        datagram,
        UDP_FLOW,
        (DATAGRAM.sport, Reply.ANSWER, TARGET),
    ),
    ("udp from another port", lambda: datagram(sport=5353), UDP_FLOW, None),
    ("udp from another host", lambda: datagram(src="10.233.2.3"), UDP_FLOW, None),
    ("udp answer to a TCP diagnosis", datagram, TCP_FLOW, None),
    (
        "port-unreachable from the destination",
        lambda: icmp_about(
            probe_of(DATAGRAM, UDP_FLOW), sender=TARGET, icmp_type=3, code=3
        ),
        UDP_FLOW,
        (DATAGRAM.sport, Reply.PORT_UNREACHABLE, TARGET),
    ),
    (
        "udp time-exceeded, 8 bytes quoted",
        lambda: icmp_about(probe_of(DATAGRAM, UDP_FLOW), quote=28),
        UDP_FLOW,
        (DATAGRAM.sport, Reply.TIME_EXCEEDED, ROUTER),
    ),
    (
        "a TCP quote for a UDP diagnosis",
        lambda: icmp_about(probe_of(SYN, Flow(SOURCE, TARGET, 53, Transport.TCP))),
        UDP_FLOW,
        None,
    ),
]


@pytest.mark.parametrize(
    ("packet", "flow", "expected"),
    [pytest.param(build, flow, want, id=name) for name, build, flow, want in MATCHING],
)
def test_classify(
    packet: Callable[[], Any],
    flow: Flow,
    expected: tuple[int, Reply, str] | None,
) -> None:
    found = pathdiag.classify(packet(), flow, SENT)
    if expected is None:
        assert found is None
        return
    assert found is not None
    sport, answer = found
    assert (sport, answer.kind, answer.sender) == expected


@pytest.mark.parametrize(
    ("packet", "flow"),
    [
        pytest.param(build, flow, id=name)
        for name, build, flow, want in MATCHING
        if want
    ],
)
def test_prefilter_keeps_every_answer(packet: Callable[[], Any], flow: Flow) -> None:
    assert pathdiag.wanted(bytes(packet()), flow)


def test_prefilter_drops_other_traffic() -> None:
    other = IP(src=TARGET, dst=SOURCE) / TCP(sport=80, dport=SYN.sport, flags="SA")
    assert not pathdiag.wanted(bytes(other), TCP_FLOW)
    assert not pathdiag.wanted(bytes(IP(src=TARGET, dst=SOURCE) / ICMP()), TCP_FLOW)
    assert not pathdiag.wanted(b"\x45" + bytes(10), TCP_FLOW)


def test_frag_needed_carries_the_next_hop_mtu() -> None:
    packet = icmp_about(probe_of(BIG_SYN), icmp_type=3, code=4, nexthopmtu=1400)
    found = pathdiag.classify(packet, TCP_FLOW, SENT)
    assert found is not None
    assert found[1] == Answer(Reply.FRAG_NEEDED, ROUTER, 3, 4, 1400, reply_ttl=64)
    assert found[1].icmp_name == "frag-needed-unreachable"


def test_answers_only_reach_the_diagnosis_that_sent_the_probe() -> None:
    mine, theirs = {SYN.sport: SYN}, {40100: Sent(40100, seq=SYN.seq)}
    answer = segment("SA", SYN.seq + 1)
    assert pathdiag.classify(answer, TCP_FLOW, mine) is not None
    assert pathdiag.classify(answer, TCP_FLOW, theirs) is None


@given(st.binary(max_size=120))
def test_decode_and_classify_take_any_bytes(data: bytes) -> None:
    for flow in (TCP_FLOW, UDP_FLOW):
        pathdiag.wanted(data, flow)
        packet = pathdiag.decode(b"\x45" + data)
        if packet is not None:
            pathdiag.classify(packet, flow, SENT)


def test_a_packet_scapy_refuses_is_not_decoded() -> None:
    # Found by the coverage-guided fuzzing: a header whose dissection
    # goes past scapy's limit of list items, which scapy answers with an
    # error of its own rather than ValueError.
    packet = (
        bytes.fromhex("116011000000000000858585858560")
        + bytes(117)
        + bytes.fromhex("8585858582")
    )
    assert pathdiag.decode(packet) is None


@given(st.binary(min_size=8, max_size=60))
def test_classify_takes_any_quote(quote: bytes) -> None:
    packet = wire(IP(src=ROUTER, dst=SOURCE) / ICMP(type=11) / (b"\x45" + quote))
    pathdiag.classify(packet, TCP_FLOW, SENT)
    pathdiag.classify(packet, UDP_FLOW, SENT)


@pytest.mark.parametrize(
    ("ttl", "hops"), [(64, 1), (63, 2), (128, 1), (120, 9), (255, 1), (250, 6)]
)
def test_hops_away(ttl: int, hops: int) -> None:
    assert pathdiag.hops_away(ttl) == hops


# Building probes.


@pytest.mark.parametrize("transport", [Transport.TCP, Transport.UDP])
@pytest.mark.parametrize("size", [576, 1400, 1500, 9001])
def test_probes_have_the_asked_size(transport: Transport, size: int) -> None:
    flow = Flow(SOURCE, TARGET, 443, transport)
    data = pathdiag.fill(b"query", size, transport)
    packet = IP(pathdiag.probe_packet(flow, SYN, ttl=7, payload=data, mss=1460))
    assert len(packet) == size == packet.len
    assert packet.flags.DF
    assert packet.ttl == 7
    if transport is Transport.TCP:
        assert packet[TCP].flags == "S"
        assert packet[TCP].options == [("MSS", 1460)]
        assert packet[TCP].seq == SYN.seq
    else:
        assert bytes(packet[UDP].payload).startswith(b"query\x00")


def test_fill() -> None:
    assert pathdiag.fill(b"abc", 44, Transport.TCP) == b""
    assert pathdiag.fill(b"abc", 34, Transport.UDP) == b"abc\x00\x00\x00"
    assert pathdiag.fill(b"abcdef", 31, Transport.UDP) == b"abc"


# The SYN probe.


@pytest.mark.parametrize(
    ("answer", "state"),
    [
        (None, SynState.FILTERED),
        (heard(Reply.SYN_ACK), SynState.OPEN),
        (heard(Reply.RST), SynState.CLOSED),
        (prohibited(), SynState.PROHIBITED),
        (
            heard(Reply.PORT_UNREACHABLE, ROUTER, icmp_type=3, icmp_code=3),
            SynState.PROHIBITED,
        ),
        (
            heard(Reply.UNREACHABLE, ROUTER, icmp_type=3, icmp_code=1),
            SynState.UNREACHABLE,
        ),
    ],
)
def test_syn_states(answer: Heard | None, state: SynState) -> None:
    assert pathdiag.syn_finding(answer).state is state


def test_syn_evidence() -> None:
    found = pathdiag.syn_finding(
        Heard(Answer(Reply.PROHIBITED, ROUTER, 3, 13, reply_ttl=64), 0.8)
    ).as_json()
    assert found == {
        "state": "prohibited",
        "from": ROUTER,
        "icmp_type": 3,
        "icmp_code": 13,
        "icmp": "admin-prohibited",
        "rtt_ms": 0.8,
        "reply_ttl": 64,
        "hops_away": 1,
    }
    assert pathdiag.syn_finding(None).as_json()["from"] is None


# The trace.


def trace(
    *answers: tuple[int, Heard], flow: Flow = TCP_FLOW, max_hops: int = 16
) -> pathdiag.TraceFinding:
    return pathdiag.assemble_trace(answers, flow, max_hops)


def test_trace_in_order_whatever_the_arrival() -> None:
    found = trace(
        (3, heard(Reply.SYN_ACK)),
        (2, time_exceeded("10.233.3.1")),
        (4, heard(Reply.SYN_ACK)),
        (1, time_exceeded(ROUTER)),
    )
    assert [hop.address for hop in found.hops] == [ROUTER, "10.233.3.1", TARGET]
    assert found.end is End.REACHED
    assert found.reached and found.complete
    shown = found.as_json()
    assert shown["last_hop"] == TARGET
    assert shown["last_ttl"] == 3
    assert shown["hops"][0] == {  # type: ignore[index]
        "ttl": 1,
        "address": ROUTER,
        "rtt_ms": 1.0,
        "reply": "time-exceeded",
    }


def test_trace_keeps_a_silent_hop_in_the_middle() -> None:
    found = trace((3, heard(Reply.RST)), (1, time_exceeded(ROUTER)))
    assert [hop.address for hop in found.hops] == [ROUTER, None, TARGET]
    assert found.end is End.REFUSED
    assert found.reached and not found.complete


def test_trace_dropped_after_a_hop() -> None:
    found = trace((1, time_exceeded(ROUTER)))
    assert [hop.address for hop in found.hops] == [ROUTER, None]
    assert found.end is End.DROPPED
    assert not found.reached
    assert found.as_json()["last_hop"] == ROUTER


def test_trace_dropped_before_the_first_hop() -> None:
    found = trace()
    assert [hop.ttl for hop in found.hops] == [1]
    assert found.end is End.DROPPED
    assert found.last is None


def test_trace_beyond_max_hops() -> None:
    answers = [(ttl, time_exceeded(f"10.0.0.{ttl}")) for ttl in range(1, 5)]
    found = trace(*answers, max_hops=4)
    assert found.end is End.BEYOND
    assert len(found.hops) == 4


@pytest.mark.parametrize(
    ("answer", "flow", "end"),
    [
        (prohibited(), TCP_FLOW, End.PROHIBITED),
        (
            heard(Reply.PORT_UNREACHABLE, ROUTER, icmp_type=3, icmp_code=3),
            TCP_FLOW,
            End.PROHIBITED,
        ),
        (
            heard(Reply.PORT_UNREACHABLE, TARGET, icmp_type=3, icmp_code=3),
            UDP_FLOW,
            End.REFUSED,
        ),
        (
            heard(Reply.PORT_UNREACHABLE, ROUTER, icmp_type=3, icmp_code=3),
            UDP_FLOW,
            End.PROHIBITED,
        ),
        (heard(Reply.ANSWER), UDP_FLOW, End.REACHED),
        (
            heard(Reply.UNREACHABLE, ROUTER, icmp_type=3, icmp_code=1),
            TCP_FLOW,
            End.UNREACHABLE,
        ),
    ],
)
def test_trace_ends(answer: Heard, flow: Flow, end: End) -> None:
    found = trace((2, answer), (1, time_exceeded(ROUTER)), flow=flow)
    assert found.end is end
    assert len(found.hops) == 2


def test_trace_ignores_answers_past_its_end() -> None:
    found = trace(
        (2, prohibited()), (3, time_exceeded("10.9.9.9")), (1, time_exceeded(ROUTER))
    )
    assert found.end is End.PROHIBITED
    assert found.hops[-1].heard == prohibited()
    assert found.hops[-1].as_json()["icmp"] == "admin-prohibited"


def test_trace_reach_from_the_direct_answer() -> None:
    assert pathdiag.trace_reach(None, 16) == 16
    assert pathdiag.trace_reach(Answer(Reply.SYN_ACK, TARGET, reply_ttl=63), 16) == 3
    assert pathdiag.trace_reach(Answer(Reply.PROHIBITED, ROUTER, reply_ttl=64), 16) == 2
    assert pathdiag.trace_reach(Answer(Reply.SYN_ACK, TARGET, reply_ttl=40), 16) == 16


def test_trace_goes_deeper_when_its_last_probe_met_a_router() -> None:
    found = trace((1, time_exceeded(ROUTER)), (2, time_exceeded("10.0.0.2")))
    assert pathdiag.deeper_ttls(found, 2) == list(range(3, 17))
    assert pathdiag.deeper_ttls(found, 3) == []
    assert pathdiag.deeper_ttls(trace((2, heard(Reply.RST))), 2) == []


def test_silent_hops_are_asked_again() -> None:
    ended = trace((3, heard(Reply.SYN_ACK)))
    assert pathdiag.silent_ttls(ended, [1, 2, 3, 4], 0) == [1, 2]
    assert pathdiag.silent_ttls(ended, [1, 2, 3, 4], 1) == [1, 2]
    assert pathdiag.silent_ttls(ended, [1, 2, 3, 4], 2) == []
    dropped = trace((1, time_exceeded(ROUTER)))
    assert pathdiag.silent_ttls(dropped, [1, 2, 3], 0) == [2, 3]
    assert pathdiag.silent_ttls(dropped, [1, 2, 3], 1) == []
    unheard = trace()
    assert pathdiag.silent_ttls(unheard, [1, 2], 3) == [1, 2]
    assert pathdiag.silent_ttls(unheard, [1, 2], 4) == []
    complete = trace((1, time_exceeded(ROUTER)), (2, heard(Reply.SYN_ACK)))
    assert pathdiag.silent_ttls(complete, [1, 2, 3], 0) == []


# The path MTU.


@pytest.mark.parametrize(
    ("interface", "ladder"),
    [
        (1500, [1500, 1400, 1280, 1024, 576]),
        (9001, [9001, 1500, 1400, 1280, 1024, 576]),
        (1450, [1450, 1400, 1280, 1024, 576]),
        (1400, [1400, 1280, 1024, 576]),
        (65536, [65535, 1500, 1400, 1280, 1024, 576]),
    ],
)
def test_mtu_ladder(interface: int, ladder: list[int]) -> None:
    assert pathdiag.mtu_ladder(interface) == ladder


def tried(*sizes: tuple[int, Fate] | tuple[int, Fate, int] | SizeTry) -> list[SizeTry]:
    return [size if isinstance(size, SizeTry) else SizeTry(*size) for size in sizes]


LADDER_PASSED = [
    (1400, Fate.PASSED),
    (1280, Fate.PASSED),
    (1024, Fate.PASSED),
    (576, Fate.PASSED),
]


def test_mtu_all_passed() -> None:
    tries = tried((1500, Fate.PASSED), *LADDER_PASSED)
    assert pathdiag.next_mtu_sizes(tries, 44, 8) == []
    found = pathdiag.mtu_finding(tries, 44, 1500)
    assert (found.largest, found.black_hole, found.frag_needed_from) == (
        1500,
        False,
        None,
    )


def test_mtu_frag_needed_ends_the_search() -> None:
    frag = SizeTry(1500, Fate.FRAG_NEEDED, 1, ROUTER, 1400)
    tries = tried(frag, *LADDER_PASSED)
    assert pathdiag.next_mtu_sizes(tries, 44, 8) == []
    found = pathdiag.mtu_finding(tries, 44, 1500)
    assert found.largest == 1400
    assert not found.black_hole
    assert (found.frag_needed_from, found.next_hop_mtu) == (ROUTER, 1400)
    assert found.as_json()["tried"][0] == {  # type: ignore[index]
        "size": 1500,
        "result": "frag-needed",
        "sends": 1,
        "from": ROUTER,
        "next_hop_mtu": 1400,
    }


def test_mtu_tries_the_next_hop_mtu_it_was_told() -> None:
    frag = SizeTry(1500, Fate.FRAG_NEEDED, 1, ROUTER, 1450)
    sizes = pathdiag.next_mtu_sizes(tried(frag, *LADDER_PASSED), 44, 8)
    assert sizes[0] == 1450
    assert all(1400 < size <= 1450 for size in sizes)


def test_mtu_asks_a_loss_again_before_believing_it() -> None:
    sizes = pathdiag.next_mtu_sizes(tried((1500, Fate.LOST), *LADDER_PASSED), 44, 8)
    assert sizes == [1500, 1467, 1433]
    found = pathdiag.mtu_finding(tried((1500, Fate.LOST), *LADDER_PASSED), 44, 1500)
    assert found.largest == 1400
    assert not found.black_hole


def test_mtu_black_hole() -> None:
    tries = tried(
        (1500, Fate.LOST, 2), (1450, Fate.LOST), (1410, Fate.LOST, 2), *LADDER_PASSED
    )
    found = pathdiag.mtu_finding(tries, 44, 1500)
    assert (found.largest, found.black_hole, found.frag_needed_from) == (
        1400,
        True,
        None,
    )


def test_mtu_small_packets_only() -> None:
    lost = [(size, Fate.LOST, 2) for size in (1500, 1400, 1280, 1024, 576)]
    sizes = pathdiag.next_mtu_sizes(tried(*lost), 44, 8)
    assert sizes == [443, 310, 177]
    found = pathdiag.mtu_finding(tried(*lost), 44, 1500)
    assert (found.largest, found.black_hole) == (44, True)


def test_mtu_rate_limited_answers_are_not_a_black_hole() -> None:
    # A UDP destination out of ICMP budget answers only the first sizes.
    tries = tried((1500, Fate.PASSED), (1400, Fate.LOST), (1280, Fate.LOST))
    assert pathdiag.next_mtu_sizes(tries, 29, 8) == []
    assert pathdiag.mtu_finding(tries, 29, 1500).largest == 1500


def test_mtu_budget_ends_the_search() -> None:
    assert (
        pathdiag.next_mtu_sizes(tried((1500, Fate.LOST), *LADDER_PASSED), 44, 0) == []
    )
    assert pathdiag.next_mtu_sizes(tried((1500, Fate.LOST), *LADDER_PASSED), 44, 1) == [
        1500
    ]


def test_mtu_local_failure_is_no_black_hole() -> None:
    tries = tried((1500, Fate.TOO_BIG_HERE), *LADDER_PASSED)
    assert not pathdiag.mtu_finding(tries, 44, 1500).black_hole


def search(
    mtu: int, frag: bool, interface: int = 1500
) -> tuple[pathdiag.MtuFinding, int]:
    """The whole search against a path that passes ``mtu`` bytes."""
    sends: dict[int, int] = {}
    sizes = pathdiag.mtu_ladder(interface)
    budget, extra = pathdiag.MTU_EXTRA_PROBES, 0
    while sizes:
        for size in sizes:
            sends[size] = sends.get(size, 0) + 1
        tries = [
            SizeTry(size, Fate.PASSED, count)
            if size <= mtu
            else SizeTry(size, Fate.FRAG_NEEDED, count, ROUTER, mtu)
            if frag
            else SizeTry(size, Fate.LOST, count)
            for size, count in sends.items()
        ]
        sizes = pathdiag.next_mtu_sizes(tries, 44, budget)
        budget -= len(sizes)
        extra += len(sizes)
    return pathdiag.mtu_finding(tries, 44, interface), extra


@settings(max_examples=200)
@given(st.integers(min_value=600, max_value=1500), st.booleans())
def test_mtu_search_finds_the_path_mtu(mtu: int, frag: bool) -> None:
    found, extra = search(mtu, frag)
    assert extra <= pathdiag.MTU_EXTRA_PROBES
    assert found.largest is not None
    assert found.largest <= mtu
    ladder_below = max(size for size in pathdiag.LADDER if size <= mtu)
    assert found.largest >= ladder_below
    if frag:
        assert found.largest == mtu
        assert not found.black_hole
    else:
        assert found.black_hole == (mtu < 1500)


def test_mtu_search_narrows_a_black_hole() -> None:
    found, extra = search(1400 + 37, frag=False)
    assert found.black_hole
    assert 1400 + 37 - found.largest <= 2 * pathdiag.MTU_PRECISION
    assert extra == pathdiag.MTU_EXTRA_PROBES


# The one line.


def open_trace(flow: Flow = TCP_FLOW) -> pathdiag.TraceFinding:
    kind = Reply.SYN_ACK if flow.transport is Transport.TCP else Reply.ANSWER
    return trace((1, time_exceeded(ROUTER)), (2, heard(kind)), flow=flow)


HOLE = pathdiag.MtuFinding(1400, True, None, None, (), 1500)
FRAG = pathdiag.MtuFinding(1400, False, ROUTER, 1400, (), 1500)
RST_63 = heard(Reply.RST, reply_ttl=63)
RST_64 = heard(Reply.RST, reply_ttl=64)

SUMMARIES: list[
    tuple[
        str, Flow, Heard | None, pathdiag.TraceFinding, pathdiag.MtuFinding | None, str
    ]
] = [
    (
        "dropped after a hop",
        TCP_FLOW,
        None,
        trace((1, time_exceeded(ROUTER))),
        None,
        "dropped after 10.233.1.1 (hop 1)",
    ),
    ("dropped at once", TCP_FLOW, None, trace(), None, "dropped before the first hop"),
    (
        "UDP silence past a hop",
        UDP_FLOW,
        None,
        trace((1, time_exceeded(ROUTER)), flow=UDP_FLOW),
        None,
        "dropped after 10.233.1.1 (hop 1), or a UDP service that does not answer",
    ),
    (
        "UDP silence at once",
        UDP_FLOW,
        None,
        trace(flow=UDP_FLOW),
        None,
        "dropped before the first hop, or a UDP service that does not answer",
    ),
    (
        "too far",
        TCP_FLOW,
        None,
        trace(*[(ttl, time_exceeded(f"10.0.0.{ttl}")) for ttl in (1, 2)], max_hops=2),
        None,
        "not reached within 2 hops (last 10.0.0.2)",
    ),
    (
        "prohibited",
        TCP_FLOW,
        prohibited(),
        trace((1, time_exceeded(ROUTER)), (2, prohibited())),
        None,
        "prohibited by 10.233.1.1 (ICMP admin-prohibited)",
    ),
    (
        "host-prohibited seen by the trace only",
        TCP_FLOW,
        None,
        trace((1, time_exceeded(ROUTER)), (2, prohibited(code=10))),
        None,
        "prohibited by 10.233.1.1 (ICMP host-prohibited)",
    ),
    (
        "a TCP reject with port-unreachable",
        TCP_FLOW,
        heard(Reply.PORT_UNREACHABLE, ROUTER, icmp_type=3, icmp_code=3),
        trace(),
        None,
        "prohibited by 10.233.1.1 (ICMP port-unreachable)",
    ),
    (
        "unreachable",
        TCP_FLOW,
        heard(Reply.UNREACHABLE, "10.233.2.1", icmp_type=3, icmp_code=1),
        trace(),
        None,
        "unreachable: ICMP host-unreachable from 10.233.2.1",
    ),
    (
        "closed",
        TCP_FLOW,
        RST_63,
        trace((1, time_exceeded(ROUTER)), (2, RST_63)),
        None,
        "closed: RST from 10.233.2.2",
    ),
    (
        "closed, with a black hole on the way",
        TCP_FLOW,
        RST_63,
        trace((1, time_exceeded(ROUTER)), (2, RST_63)),
        HOLE,
        "closed: RST from 10.233.2.2; path MTU 1400, black hole above it",
    ),
    (
        "a near reset: the MTU measured only the way to the filter",
        TCP_FLOW,
        RST_64,
        trace((1, time_exceeded(ROUTER)), (2, RST_64)),
        HOLE,
        "reset by hop 1 (10.233.1.1) in the name of 10.233.2.2: a filter on the path",
    ),
    (
        "a reset sent from nearer than the destination",
        TCP_FLOW,
        RST_64,
        trace((1, time_exceeded(ROUTER)), (2, RST_64)),
        None,
        "reset by hop 1 (10.233.1.1) in the name of 10.233.2.2: a filter on the path",
    ),
    (
        "a near reset, the hop itself silent",
        TCP_FLOW,
        RST_64,
        trace((2, RST_64)),
        None,
        "reset by hop 1 in the name of 10.233.2.2: a filter on the path",
    ),
    (
        "open",
        TCP_FLOW,
        heard(Reply.SYN_ACK),
        open_trace(),
        None,
        "open: SYN-ACK from 10.233.2.2",
    ),
    (
        "open by the trace only",
        TCP_FLOW,
        None,
        open_trace(),
        None,
        "open: SYN-ACK from 10.233.2.2",
    ),
    (
        "open with a black hole",
        TCP_FLOW,
        heard(Reply.SYN_ACK),
        open_trace(),
        HOLE,
        "path MTU 1400, black hole above it",
    ),
    (
        "open with a smaller path MTU",
        TCP_FLOW,
        heard(Reply.SYN_ACK),
        open_trace(),
        FRAG,
        "open: SYN-ACK from 10.233.2.2; "
        "path MTU 1400 (fragmentation needed at 10.233.1.1)",
    ),
    (
        "udp answered",
        UDP_FLOW,
        None,
        open_trace(UDP_FLOW),
        None,
        "answered by 10.233.2.2",
    ),
    (
        "udp closed",
        UDP_FLOW,
        heard(Reply.PORT_UNREACHABLE, TARGET, icmp_type=3, icmp_code=3),
        trace(),
        None,
        "closed: ICMP port-unreachable from 10.233.2.2",
    ),
    (
        "udp closed, with a smaller path MTU",
        UDP_FLOW,
        heard(Reply.PORT_UNREACHABLE, TARGET, icmp_type=3, icmp_code=3),
        trace(),
        FRAG,
        "closed: ICMP port-unreachable from 10.233.2.2; "
        "path MTU 1400 (fragmentation needed at 10.233.1.1)",
    ),
    (
        "udp rejected on the way",
        UDP_FLOW,
        None,
        trace(
            (1, heard(Reply.PORT_UNREACHABLE, ROUTER, icmp_type=3, icmp_code=3)),
            flow=UDP_FLOW,
        ),
        None,
        "prohibited by 10.233.1.1 (ICMP port-unreachable)",
    ),
]


@pytest.mark.parametrize(
    ("flow", "direct", "found", "mtu", "summary"),
    [pytest.param(*case[1:], id=case[0]) for case in SUMMARIES],
)
def test_summaries(
    flow: Flow,
    direct: Heard | None,
    found: pathdiag.TraceFinding,
    mtu: pathdiag.MtuFinding | None,
    summary: str,
) -> None:
    assert pathdiag.summarize(flow, direct, found, mtu) == summary


def test_failed_diagnosis() -> None:
    found = pathdiag.Diagnosis.failed("no route to 10.233.9.9 from this host")
    assert found.as_json() == {
        "summary": "not diagnosed: no route to 10.233.9.9 from this host",
        "syn": None,
        "trace": None,
        "mtu": None,
        "error": "no route to 10.233.9.9 from this host",
    }


# Routes, capability, loading.


def test_route_device() -> None:
    output = (
        b'[{"dst":"10.233.2.2","gateway":"10.233.1.1","dev":"a0",'
        b'"prefsrc":"10.233.1.2","flags":[],"uid":0,"cache":[]}]'
    )
    assert pathdiag.route_device(output) == "a0"
    assert pathdiag.route_device(b"") is None
    assert pathdiag.route_device(b"[]") is None
    assert pathdiag.route_device(b'[{"dev": "../x"}]') is None
    assert pathdiag.route_device(b'{"dev": "a0"}') is None


def test_import_does_not_load_scapy() -> None:
    script = (
        "import sys, probes.pathdiag\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'scapy']\n"
        "print(','.join(loaded) or 'none')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


# scapy.layers.inet takes half a second more to run here, with the GIL
# released as a slow disk would: a caller that waited for the import in
# the event loop stalls it that long. Callers join while the import runs.
CONCURRENT_LOAD = textwrap.dedent(
    """
    import asyncio, importlib.abc, importlib.machinery, sys, time
    from probes import pathdiag
    from probes.base import Deadline

    class Slow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "scapy.layers.inet":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            real = spec.loader

            class Loader(importlib.abc.Loader):
                def create_module(self, spec):
                    return real.create_module(spec)

                def exec_module(self, module):
                    time.sleep(0.5)
                    real.exec_module(module)

            spec.loader = Loader()
            return spec

    sys.meta_path.insert(0, Slow())

    async def diagnosis():
        # What a diagnosis does: load, then build packets in the loop.
        loaded = await pathdiag._load_scapy(Deadline.after(20))
        pathdiag.inet()
        return loaded

    async def main():
        loop = asyncio.get_running_loop()
        lag = 0.0
        done = asyncio.Event()

        async def tick():
            nonlocal lag
            while not done.is_set():
                before = loop.time()
                await asyncio.sleep(0.01)
                lag = max(lag, loop.time() - before - 0.01)

        ticker = asyncio.create_task(tick())
        first = asyncio.create_task(diagnosis())
        while "scapy.layers.inet" not in sys.modules:
            await asyncio.sleep(0.01)
        others = [asyncio.create_task(diagnosis()) for _ in range(4)]
        loaded = await asyncio.gather(first, *others)
        done.set()
        await ticker
        return lag, loaded

    lag, loaded = asyncio.run(main())
    # Another event loop finds the load done.
    again = asyncio.run(pathdiag._load_scapy(Deadline(float("inf"))))
    print(round(lag, 3), all(loaded) and again,
          hasattr(sys.modules["scapy.layers.inet"], "IP"))
    """
)


def test_concurrent_loads_never_block_the_event_loop() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CONCURRENT_LOAD],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lag, loaded, layers = done.stdout.split()
    assert float(lag) < 0.25, done.stdout
    assert (loaded, layers) == ("True", "True")


def test_raw_capability_says_how_to_grant_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any) -> socket.socket:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("probes.pathdiag.socket.socket", refuse)
    reason = pathdiag.raw_capability()
    assert reason is not None
    assert "CAP_NET_RAW" in reason
    assert "setcap cap_net_raw+ep" in reason
    assert "--cap-add NET_RAW" in reason
    assert "\n" not in reason
    assert "setcap cap_net_raw+ep" in pathdiag.RAW_HELP
    assert "--cap-add NET_RAW" in pathdiag.RAW_HELP


def test_bad_input() -> None:
    deadline = Deadline(0.0)
    with pytest.raises(ValueError, match="max_hops"):
        asyncio.run(
            pathdiag.diagnose(TARGET, 443, Transport.TCP, deadline, max_hops=31)
        )
    with pytest.raises(ValueError, match="port"):
        asyncio.run(pathdiag.diagnose(TARGET, 0, Transport.TCP, deadline))


def test_ipv6_is_not_diagnosed() -> None:
    found = asyncio.run(
        pathdiag.diagnose("2001:db8::1", 443, Transport.TCP, Deadline(0.0))
    )
    assert found.error == "IPv6 paths are not diagnosed"


# The whole diagnosis, on loopback.

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="raw sockets need root")


@needs_root
def test_raw_capability_as_root() -> None:
    assert pathdiag.raw_capability() is None


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server
    server.close()


@pytest.fixture
def echo() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            sock.sendto(b"echo:" + data[:16], peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    sock.close()


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def diagnose(port: int, transport: Transport = Transport.TCP) -> pathdiag.Diagnosis:
    async def run() -> pathdiag.Diagnosis:
        return await pathdiag.diagnose("127.0.0.1", port, transport, Deadline.after(5))

    return asyncio.run(run())


@needs_root
def test_open_port(listener: socket.socket) -> None:
    found = diagnose(listener.getsockname()[1])
    assert found.summary == "open: SYN-ACK from 127.0.0.1"
    assert found.syn is not None and found.syn["state"] == "open"
    assert found.trace is not None and found.trace["end"] == "reached"
    hops = cast(list[dict[str, Any]], found.trace["hops"])
    assert [(hop["ttl"], hop["address"], hop["reply"]) for hop in hops] == [
        (1, "127.0.0.1", "syn-ack")
    ]
    assert found.mtu is not None and found.mtu["black_hole"] is False
    # The kernel reset every SYN-ACK: no connection was completed.
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):
        listener.accept()


@needs_root
def test_closed_port() -> None:
    found = diagnose(free_port(socket.SOCK_STREAM))
    assert found.summary == "closed: RST from 127.0.0.1"
    assert found.trace is not None and found.trace["end"] == "refused"


@needs_root
def test_udp_closed_port() -> None:
    found = diagnose(free_port(socket.SOCK_DGRAM), Transport.UDP)
    assert found.summary == "closed: ICMP port-unreachable from 127.0.0.1"
    assert found.syn is None


@needs_root
def test_udp_answered(echo: int) -> None:
    found = diagnose(echo, Transport.UDP)
    assert found.summary == "answered by 127.0.0.1"
    assert found.mtu is not None and found.mtu["largest"] == 65535


@needs_root
def test_concurrent_diagnoses_keep_their_own_answers(
    listener: socket.socket, echo: int
) -> None:
    open_port = listener.getsockname()[1]
    closed_tcp = free_port(socket.SOCK_STREAM)
    closed_udp = free_port(socket.SOCK_DGRAM)
    cases = [
        (open_port, Transport.TCP, "open: SYN-ACK from 127.0.0.1"),
        (closed_tcp, Transport.TCP, "closed: RST from 127.0.0.1"),
        (closed_udp, Transport.UDP, "closed: ICMP port-unreachable from 127.0.0.1"),
        (echo, Transport.UDP, "answered by 127.0.0.1"),
    ] * 3

    async def run() -> list[pathdiag.Diagnosis]:
        deadline = Deadline.after(5)
        return await asyncio.gather(
            *(
                pathdiag.diagnose("127.0.0.1", port, kind, deadline)
                for port, kind, _ in cases
            )
        )

    found = asyncio.run(run())
    assert [one.summary for one in found] == [summary for _, _, summary in cases]
