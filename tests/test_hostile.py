"""Every probe against hostile peers: nothing hangs, nothing is lost, no
spoofed answer is taken.

Each probe of the registry meets each server of :mod:`tests.hostile`
that speaks its transport. Whatever the server does, the probe must
return an outcome (no exception), classified with a reason that fits
(never ``error``), within its deadline plus a small slack, and while it
runs it may hold no more than :data:`MEMORY_BOUND` bytes, however much
the server sends. A correct answer from the right source passes (so the
servers are sound); the same answer with a wrong id, xid or origin
timestamp, or from another source, does not.

The time bound is a bound, not a benchmark: the deadline is generous
and so is the slack.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import dns.message
import pytest

from probes.base import (
    Deadline,
    Outcome,
    ProbeRequest,
    ProbeSettings,
    Reason,
    Status,
    Transport,
)
from probes.registry import PROBES
from rules import load_matrix
from tests import hostile
from tests.fakes import UdpHandler, serving_udp

DEADLINE = 1.5
SLACK = 1.0
MEMORY_BOUND = 2 * 1024 * 1024
# A report carries the evidence; a hostile peer may not blow it up.
EVIDENCE_BOUND = 16 * 1024
NAMES = ("s3.amazonaws.com", "s3.us-east-1.amazonaws.com")
SETTINGS = ProbeSettings(
    dns_names=NAMES,
    connect_host="anon-cp.storagegateway.us-east-1.amazonaws.com",
)

TCP, UDP = Transport.TCP, Transport.UDP
TRANSPORTS: dict[str, tuple[Transport, ...]] = {
    "activation": (TCP,),
    "dns": (TCP, UDP),
    "iscsi": (TCP,),
    "ldap": (TCP,),
    "ldaps": (TCP,),
    "mountd": (TCP, UDP),
    "nbns": (UDP,),
    "nfs": (TCP, UDP),
    "ntp": (UDP,),
    "portmap": (TCP, UDP),
    "proxy": (TCP,),
    "smb": (TCP,),
    "smb-netbios": (TCP,),
    "ssh": (TCP,),
    "tcp": (TCP,),
    "tls": (TCP,),
    "udp-path": (UDP,),
}
"""Which transports each probe speaks; every probe is listed."""
TCP_PROBES = sorted(name for name, ways in TRANSPORTS.items() if TCP in ways)
UDP_PROBES = sorted(name for name, ways in TRANSPORTS.items() if UDP in ways)

# The start of a plausible answer for each probe, which the servers
# below send before their hostile part.
LEADS: dict[str, bytes] = {
    "activation": b"HTTP/1.1 200 OK\r\n",
    "dns": b"\xff\xff\x12\x34\x81\x80",  # 65535 bytes promised
    "iscsi": b"\x23\x80\x00\x00\x00\x00\x00\x00",  # a Login Response
    "ldap": b"\x30\x84\x00\x03\xff\xff",  # a SEQUENCE of 256 KiB
    "ldaps": b"\x16\x03\x03\x40\x00\x02\x00\x3f\xfc",  # a ServerHello
    "mountd": b"\x00\x03\xff\xf0",  # a record mark, 256 KiB
    "nfs": b"\x00\x03\xff\xf0",
    "portmap": b"\x00\x03\xff\xf0",
    "proxy": b"HTTP/1.1 200 Connection established\r\n\r\n",
    "smb": b"\x00\x00\xff\xff\xfeSMB",
    "smb-netbios": b"\x82\x00\x00\x00\x00\x00\xff\xff\xfeSMB",
    "ssh": b"SSH-2.0-",
    "tcp": b"",
    "tls": b"\x16\x03\x03\x40\x00\x02\x00\x3f\xfc",
}
# Through the proxy, the TLS servers speak inside an opened tunnel.
TUNNEL = {"proxy": LEADS["proxy"]}

Reasons = frozenset[Reason]
NOT_THEM = frozenset({Reason.WRONG_PROTOCOL, Reason.PROTOCOL_ERROR})
CUT_OFF = frozenset({Reason.REFUSED, Reason.WRONG_PROTOCOL, Reason.PROTOCOL_ERROR})
# A plausible answer cut by the deadline: some probes say the reply did
# not finish, others that it is not theirs.
SLOW = frozenset({Reason.TIMEOUT, Reason.WRONG_PROTOCOL})


@dataclass(frozen=True)
class TcpKind:
    """A hostile TCP server and the reasons it may earn a probe."""

    make: Callable[[str], AbstractAsyncContextManager[int]]
    reasons: Reasons


TCP_KINDS: dict[str, TcpKind] = {
    "tarpit": TcpKind(lambda _p: hostile.tarpit(), frozenset({Reason.TIMEOUT})),
    "random-bytes": TcpKind(
        lambda _p: hostile.random_bytes(), frozenset({Reason.WRONG_PROTOCOL})
    ),
    "endless-line": TcpKind(
        lambda _p: hostile.endless(), frozenset({Reason.WRONG_PROTOCOL})
    ),
    "endless-lines": TcpKind(
        lambda _p: hostile.endless(unit=hostile.ENDLESS_LINES),
        frozenset({Reason.WRONG_PROTOCOL}),
    ),
    "endless-after-start": TcpKind(lambda p: hostile.endless(LEADS[p]), NOT_THEM),
    "tls-header-then-bytes": TcpKind(
        lambda p: hostile.endless_tls(TUNNEL.get(p, b"")), NOT_THEM
    ),
    "tls-endless-records": TcpKind(
        lambda p: hostile.endless_tls(TUNNEL.get(p, b""), records=True), NOT_THEM
    ),
    "reset-after-request": TcpKind(lambda _p: hostile.resetting(), CUT_OFF),
    "reset-mid-answer": TcpKind(lambda p: hostile.resetting(LEADS[p]), CUT_OFF),
    "trickle-1s": TcpKind(lambda p: hostile.trickle(LEADS[p]), SLOW),
    "trickle-50ms": TcpKind(lambda p: hostile.trickle(LEADS[p], 0.05), SLOW),
    "iscsi-huge-segment": TcpKind(lambda _p: hostile.huge_iscsi_segment(), NOT_THEM),
}


@dataclass(frozen=True)
class Ran:
    outcome: Outcome
    elapsed: float
    peak: int


async def probe_against(
    server: AbstractAsyncContextManager[int],
    name: str,
    transport: Transport,
    *,
    measure: bool = True,
) -> Ran:
    """Run probe ``name`` against ``server``; time it from the moment
    its deadline is set, and trace its memory when ``measure``."""
    async with server as port:
        request = ProbeRequest(
            host="127.0.0.1",
            port=port,
            transport=transport,
            deadline=Deadline.after(DEADLINE),
            settings=SETTINGS,
            address="127.0.0.1",
        )
        return await _timed(name, request, measure)


async def _timed(name: str, request: ProbeRequest, measure: bool) -> Ran:
    loop = asyncio.get_running_loop()
    started = request.deadline.when - DEADLINE
    if measure:
        tracemalloc.start()
        tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0] if measure else 0
    try:
        outcome = await PROBES[name](request)
        peak = tracemalloc.get_traced_memory()[1] - base if measure else 0
    finally:
        if measure:
            tracemalloc.stop()
    return Ran(outcome, loop.time() - started, peak)


def check(ran: Ran, allowed: set[tuple[Status, Reason]]) -> None:
    """The promises every run keeps, then its verdict."""
    outcome = ran.outcome
    assert isinstance(outcome, Outcome)
    said = f"{outcome.status}/{outcome.reason}: {outcome.detail}"
    assert outcome.status is not Status.ERROR, said
    assert ran.elapsed < DEADLINE + SLACK, f"{ran.elapsed:.2f} s; {said}"
    assert ran.peak < MEMORY_BOUND, f"{ran.peak} bytes; {said}"
    assert len(json.dumps(outcome.evidence)) < EVIDENCE_BOUND, said
    assert (outcome.status, outcome.reason) in allowed, said


def test_the_table_lists_every_probe_and_the_matrix_transports() -> None:
    assert set(TRANSPORTS) == set(PROBES)
    assert set(LEADS) == set(TCP_PROBES)
    for rule in load_matrix(None, PROBES.keys()).rules:
        assert Transport(rule.transport) in TRANSPORTS[rule.probe], rule.id


@pytest.mark.parametrize("kind", sorted(TCP_KINDS))
@pytest.mark.parametrize("name", TCP_PROBES)
def test_tcp_probe_against_hostile_server(name: str, kind: str) -> None:
    hostile_kind = TCP_KINDS[kind]
    ran = asyncio.run(probe_against(hostile_kind.make(name), name, TCP))
    if name == "tcp":
        # Proves only that a connection opens, whoever holds the port.
        check(ran, {(Status.PASS, Reason.OK)})
        return
    check(ran, {(Status.FAIL, reason) for reason in hostile_kind.reasons})


def test_a_huge_iscsi_data_segment_is_refused_unread() -> None:
    ran = asyncio.run(probe_against(hostile.huge_iscsi_segment(), "iscsi", TCP))
    check(ran, {(Status.FAIL, Reason.PROTOCOL_ERROR)})
    assert "16777215" in ran.outcome.detail


def test_a_banner_trickled_without_its_end_is_not_taken() -> None:
    server = hostile.trickle(b"SSH-2.0-OpenSSH_9.2p1", 0.05)
    ran = asyncio.run(probe_against(server, "ssh", TCP))
    check(ran, {(Status.FAIL, Reason.TIMEOUT)})
    assert "began but did not end" in ran.outcome.detail
    assert str(ran.outcome.evidence["first_bytes"]).startswith("SSH-2.0-")


# UDP: noise, and correct answers spoiled one field at a time.

_CORRECT: dict[str, UdpHandler] = {
    "dns": hostile.dns_udp(),
    "ntp": hostile.ntp_udp(),
    "nbns": hostile.nbns_udp(),
    "portmap": hostile.rpc_udp(),
    "nfs": hostile.rpc_udp(),
    "mountd": hostile.rpc_udp(),
    "udp-path": hostile.echo,
}
_SPOILED: dict[str, UdpHandler] = {
    "dns": hostile.dns_udp(wrong_id=True),
    "ntp": hostile.ntp_udp(wrong_origin=True),
    "nbns": hostile.nbns_udp(wrong_id=True),
    "portmap": hostile.rpc_udp(wrong_xid=True),
    "nfs": hostile.rpc_udp(wrong_xid=True),
    "mountd": hostile.rpc_udp(wrong_xid=True),
}
OTHER_PORT = ("127.0.0.1", 0)
OTHER_ADDRESS = ("127.0.0.2", None)
FAIL_TIMEOUT = {(Status.FAIL, Reason.TIMEOUT)}
# udp-path takes any datagram as proof of a path, and silence as "cannot
# tell": by design, since nothing answers on its ports.
PATH_ANSWERED = {(Status.PASS, Reason.OK)}
PATH_SILENT = {(Status.WARN, Reason.TIMEOUT)}
NOT_THEIRS = {(Status.FAIL, reason) for reason in NOT_THEM}

UDP_CASES = [
    *(
        (name, kind, hostile.UDP_NOISE[kind], None)
        for name in UDP_PROBES
        for kind in sorted(hostile.UDP_NOISE)
    ),
    *((name, "correct", _CORRECT[name], None) for name in UDP_PROBES),
    *((name, "other-port", _CORRECT[name], OTHER_PORT) for name in UDP_PROBES),
    *((name, "other-address", _CORRECT[name], OTHER_ADDRESS) for name in UDP_PROBES),
    *((name, "wrong-id", _SPOILED[name], None) for name in sorted(_SPOILED)),
    ("dns", "truncated", hostile.dns_udp(truncated=True), None),
]


def udp_allowed(name: str, kind: str) -> set[tuple[Status, Reason]]:
    if kind == "correct":
        return {(Status.PASS, Reason.OK)}
    if kind in ("silent", "other-port", "other-address"):
        return PATH_SILENT if name == "udp-path" else FAIL_TIMEOUT
    if kind == "truncated":
        return {(Status.FAIL, Reason.DNS_FAILURE)}
    return PATH_ANSWERED if name == "udp-path" else NOT_THEIRS


@pytest.mark.parametrize(
    ("name", "kind", "handler", "reply_from"),
    UDP_CASES,
    ids=[f"{case[0]}-{case[1]}" for case in UDP_CASES],
)
def test_udp_probe_against_hostile_server(
    name: str,
    kind: str,
    handler: UdpHandler,
    reply_from: tuple[str, int | None] | None,
) -> None:
    async def main() -> tuple[Ran, list[bytes]]:
        async with serving_udp(handler, reply_from=reply_from) as (server, port):
            request = ProbeRequest(
                host="127.0.0.1",
                port=port,
                transport=UDP,
                deadline=Deadline.after(DEADLINE),
                settings=SETTINGS,
                address="127.0.0.1",
            )
            return await _timed(name, request, measure=True), server.seen

    ran, seen = asyncio.run(main())
    check(ran, udp_allowed(name, kind))
    assert seen, "the server was never asked"


def test_a_flood_of_stray_datagrams_ends_the_wait_early() -> None:
    async def main() -> Ran:
        async with serving_udp(hostile.flood) as (_server, port):
            request = ProbeRequest(
                "127.0.0.1", port, UDP, Deadline.after(DEADLINE), SETTINGS, "127.0.0.1"
            )
            return await _timed("ntp", request, measure=False)

    ran = asyncio.run(main())
    check(ran, NOT_THEIRS)
    assert ran.elapsed < DEADLINE / 2


# DNS and ONC RPC over TCP: the same spoiled answers, framed.

TCP_SPOOFS = [
    ("dns", "correct", hostile.dns_tcp, {(Status.PASS, Reason.OK)}),
    ("dns", "wrong-id", lambda: hostile.dns_tcp(wrong_id=True), NOT_THEIRS),
    (
        "dns",
        "truncated",
        lambda: hostile.dns_tcp(truncated=True),
        {(Status.FAIL, Reason.DNS_FAILURE)},
    ),
    *(
        (name, "correct", hostile.rpc_tcp, {(Status.PASS, Reason.OK)})
        for name in ("portmap", "nfs", "mountd")
    ),
    *(
        (
            name,
            "wrong-xid",
            lambda: hostile.rpc_tcp(wrong_xid=True),
            {(Status.FAIL, r) for r in (*NOT_THEM, Reason.TIMEOUT)},
        )
        for name in ("portmap", "nfs", "mountd")
    ),
]


@pytest.mark.parametrize(
    ("name", "kind", "make", "allowed"),
    TCP_SPOOFS,
    ids=[f"{case[0]}-{case[1]}" for case in TCP_SPOOFS],
)
def test_spoiled_answers_over_tcp_are_not_taken(
    name: str,
    kind: str,
    make: Callable[[], AbstractAsyncContextManager[int]],
    allowed: set[tuple[Status, Reason]],
) -> None:
    ran = asyncio.run(probe_against(make(), name, TCP))
    check(ran, allowed)


@pytest.mark.parametrize("transport", [UDP, TCP])
def test_an_oversized_dns_answer_is_read_within_the_deadline(
    transport: Transport,
) -> None:
    """Thousands of A records, far past the 512 bytes a UDP answer
    without EDNS may take: well-formed, so it may pass, but in time."""
    records = 3000
    for name in NAMES:
        # The server keeps its answers: build them before the clock runs.
        query = dns.message.make_query(name, "A").to_wire()
        hostile.dns_reply(query, records=records)

    async def main() -> Ran:
        if transport is TCP:
            return await probe_against(
                hostile.dns_tcp(records=records), "dns", TCP, measure=False
            )
        async with serving_udp(hostile.dns_udp(records=records)) as (_s, port):
            request = ProbeRequest(
                "127.0.0.1", port, UDP, Deadline.after(DEADLINE), SETTINGS, "127.0.0.1"
            )
            return await _timed("dns", request, measure=False)

    ran = asyncio.run(main())
    outcome = ran.outcome
    assert outcome.status is not Status.ERROR, outcome.detail
    assert outcome.reason in {Reason.OK, Reason.DNS_FAILURE, *NOT_THEM}
    assert ran.elapsed < DEADLINE + SLACK


# Redirects and credentials: nothing is followed, nothing is sent.

KEY = "ABCD1-EFGH2-IJKL3-MNOP4-QRST5"


@pytest.mark.parametrize(
    ("name", "query", "allowed"),
    [
        ("activation", "", {(Status.FAIL, Reason.PROTOCOL_ERROR)}),
        ("activation", f"?activationKey={KEY}", {(Status.PASS, Reason.OK)}),
        ("proxy", "", {(Status.FAIL, Reason.PROTOCOL_ERROR)}),
    ],
)
def test_a_redirect_to_another_host_is_never_followed(
    name: str, query: str, allowed: set[tuple[Status, Reason]]
) -> None:
    elsewhere: list[bytes] = []
    asked: list[bytes] = []

    async def main() -> Ran:
        async with hostile.answering(b"", elsewhere, host="127.0.0.2") as far:
            location = f"http://127.0.0.2:{far}/{query}"
            answer = (
                f"HTTP/1.1 302 Found\r\nLocation: {location}\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
            ran = await probe_against(hostile.answering(answer, asked), name, TCP)
            # Give a follower time to connect, had the probe been one.
            await asyncio.sleep(0.2)
            return ran

    ran = asyncio.run(main())
    check(ran, allowed)
    assert elsewhere == []
    assert len(asked) == 1
    if query:
        assert KEY not in ran.outcome.detail
        assert ran.outcome.evidence["location_host"] == "127.0.0.2"


@pytest.mark.parametrize("name", ["activation", "proxy"])
def test_http_requests_carry_no_credentials_or_cookies(name: str) -> None:
    asked: list[bytes] = []
    answer = b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"
    asyncio.run(probe_against(hostile.answering(answer, asked), name, TCP))
    head = asked[0].lower()
    for field in (b"authorization", b"proxy-authorization", b"cookie"):
        assert field + b":" not in head
