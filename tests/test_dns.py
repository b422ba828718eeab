"""Tests for probes.dns: the codec on bytes, the probe on loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes import dns as probe_dns
from probes.base import (
    Deadline,
    Outcome,
    ProbeRequest,
    ProbeSettings,
    Reason,
    Status,
    Transport,
)
from tests.fakes import UdpHandler, serving_udp

Zone = dict[str, tuple[int, list[str]]]
Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
ZONE: Zone = {
    "s3.amazonaws.com": (dns.rcode.NOERROR, ["52.216.1.1", "52.216.1.2"]),
    "ok.example.test": (dns.rcode.NOERROR, ["10.0.0.7"]),
    "gone.example.test": (dns.rcode.NXDOMAIN, []),
    "broken.example.test": (dns.rcode.SERVFAIL, []),
    "denied.example.test": (dns.rcode.REFUSED, []),
    "empty.example.test": (dns.rcode.NOERROR, []),
}


def respond(wire: bytes, zone: Zone = ZONE) -> bytes:
    """A tiny authoritative answer for ``zone``."""
    query = dns.message.from_wire(wire)
    reply = dns.message.make_response(query)
    qname = query.question[0].name
    rcode, addresses = zone.get(
        qname.to_text(omit_final_dot=True), (dns.rcode.NXDOMAIN, [])
    )
    reply.set_rcode(rcode)
    if addresses:
        records = dns.rrset.from_text_list(qname, 60, "IN", "A", addresses)
        reply.answer.append(records)
    return reply.to_wire()


def reply_for(
    query: dns.message.QueryMessage, records: list[tuple[str, str, str]]
) -> dns.message.Message:
    reply = dns.message.make_response(query)
    for owner, rdtype, value in records:
        record = dns.rrset.from_text(owner, 60, "IN", rdtype, value)
        reply.answer.append(record)
    return reply


# Codec: bytes in, answers or errors out.


def test_frame_prefixes_the_length() -> None:
    assert probe_dns.frame(b"abc") == b"\x00\x03abc"
    assert probe_dns.frame(b"") == b"\x00\x00"


def test_make_query_asks_for_a() -> None:
    query = probe_dns.make_query("s3.amazonaws.com")
    assert query.question[0].rdtype == dns.rdatatype.A
    assert query.flags & dns.flags.RD


@pytest.mark.parametrize("name", ["a..b", "x" * 64 + ".test", "a." * 130])
def test_make_query_refuses_invalid_names(name: str) -> None:
    with pytest.raises(probe_dns.DnsError):
        probe_dns.make_query(name)


def _cname_chain(q: dns.message.QueryMessage) -> dns.message.Message:
    return reply_for(
        q,
        [
            ("s3.amazonaws.com.", "CNAME", "s3-1.amazonaws.com."),
            ("s3-1.amazonaws.com.", "A", "52.216.9.9"),
        ],
    )


def _nxdomain(q: dns.message.QueryMessage) -> dns.message.Message:
    reply = dns.message.make_response(q)
    reply.set_rcode(dns.rcode.NXDOMAIN)
    return reply


def _truncated(q: dns.message.QueryMessage) -> dns.message.Message:
    reply = dns.message.make_response(q)
    reply.flags |= dns.flags.TC
    return reply


def _stray_a(q: dns.message.QueryMessage) -> dns.message.Message:
    # An A record for another owner, with no CNAME leading to it.
    return reply_for(q, [("elsewhere.test.", "A", "192.0.2.1")])


Builder = Callable[[dns.message.QueryMessage], dns.message.Message]


@pytest.mark.parametrize(
    ("build", "rcode", "addresses", "ok", "problem"),
    [
        (
            lambda q: reply_for(q, [("s3.amazonaws.com.", "A", "52.216.1.1")]),
            "NOERROR",
            ("52.216.1.1",),
            True,
            "no A record",
        ),
        (_cname_chain, "NOERROR", ("52.216.9.9",), True, "no A record"),
        (_nxdomain, "NXDOMAIN", (), False, "NXDOMAIN"),
        (dns.message.make_response, "NOERROR", (), False, "no A record"),
        (_truncated, "NOERROR", (), False, "truncated, no A record"),
        (_stray_a, "NOERROR", (), False, "no A record"),
    ],
)
def test_read_answer(
    build: Builder,
    rcode: str,
    addresses: tuple[str, ...],
    ok: bool,
    problem: str,
) -> None:
    query = probe_dns.make_query("s3.amazonaws.com")
    answer = probe_dns.read_answer(query, build(query).to_wire())
    assert answer.name == "s3.amazonaws.com"
    assert (answer.rcode, answer.addresses) == (rcode, addresses)
    assert answer.ok is ok
    if not ok:
        assert answer.problem() == problem


def test_read_answer_takes_only_the_reply_to_our_query() -> None:
    query = probe_dns.make_query("s3.amazonaws.com")
    other = probe_dns.make_query("example.com")
    other.id = query.id
    wrong_question = dns.message.make_response(other).to_wire()
    wrong_id = bytearray(dns.message.make_response(query).to_wire())
    wrong_id[0] ^= 0xFF
    for wire in (wrong_question, bytes(wrong_id), query.to_wire()):
        with pytest.raises(probe_dns.DnsError) as caught:
            probe_dns.read_answer(query, wire)
        # All three are DNS, so none is "not DNS".
        assert not isinstance(caught.value, probe_dns.NotDnsError)


@pytest.mark.parametrize(
    ("wire", "not_dns"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", True),
        (b"SSH-2.0-OpenSSH_9.2p1\r\n", True),
        (b"", True),
        (b"\x00\x01", True),
    ],
)
def test_read_answer_tells_garbage_from_broken_dns(
    wire: bytes,
    not_dns: bool,
) -> None:
    query = probe_dns.make_query("s3.amazonaws.com")
    with pytest.raises(probe_dns.DnsError) as caught:
        probe_dns.read_answer(query, wire)
    assert isinstance(caught.value, probe_dns.NotDnsError) is not_dns


def test_a_header_with_our_id_and_qr_is_broken_dns_not_garbage() -> None:
    query = probe_dns.make_query("s3.amazonaws.com")
    header = query.id.to_bytes(2, "big") + b"\x81\x80\x00\x01\x00\x01"
    wire = header + b"\xff" * 9
    assert probe_dns.looks_like_reply(query, wire)
    with pytest.raises(probe_dns.DnsError) as caught:
        probe_dns.read_answer(query, wire)
    assert not isinstance(caught.value, probe_dns.NotDnsError)


@pytest.mark.parametrize(
    ("rcodes", "worst"),
    [
        ([], None),
        (["NOERROR"], "NOERROR"),
        (["NOERROR", "NXDOMAIN"], "NXDOMAIN"),
        (["NXDOMAIN", "SERVFAIL"], "SERVFAIL"),
        (["SERVFAIL", "REFUSED", "NXDOMAIN"], "REFUSED"),
        (["NOERROR", "NOTIMP"], "NOTIMP"),
    ],
)
def test_worst_rcode(rcodes: list[str], worst: str | None) -> None:
    answers = [probe_dns.Answer("n", code, ()) for code in rcodes]
    assert probe_dns.worst_rcode(answers) == worst


_QUERY = probe_dns.make_query("s3.amazonaws.com")
_GOOD = reply_for(
    _QUERY,
    [
        ("s3.amazonaws.com.", "CNAME", "s3-1.amazonaws.com."),
        ("s3-1.amazonaws.com.", "A", "52.216.9.9"),
    ],
).to_wire()


def _read_or_dns_error(wire: bytes) -> None:
    with contextlib.suppress(probe_dns.DnsError):
        probe_dns.read_answer(_QUERY, wire)


@given(st.binary(max_size=600))
def test_random_bytes_raise_only_dns_error(wire: bytes) -> None:
    _read_or_dns_error(wire)


@given(st.integers(min_value=0, max_value=len(_GOOD)))
def test_truncated_replies_raise_only_dns_error(cut: int) -> None:
    _read_or_dns_error(_GOOD[:cut])


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=len(_GOOD) - 1),
            st.integers(min_value=0, max_value=255),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_replies_raise_only_dns_error(
    edits: list[tuple[int, int]],
) -> None:
    wire = bytearray(_GOOD)
    for where, value in edits:
        wire[where] = value
    _read_or_dns_error(bytes(wire))


# The probe against small servers on loopback.


def request(
    port: int,
    transport: Transport = Transport.UDP,
    names: tuple[str, ...] = ("ok.example.test",),
    seconds: float = 2.0,
) -> ProbeRequest:
    return ProbeRequest(
        host="127.0.0.1",
        port=port,
        transport=transport,
        deadline=Deadline.after(seconds),
        settings=ProbeSettings(dns_names=names),
        address="127.0.0.1",
    )


async def ask(port: int, transport: Transport) -> Outcome:
    return await probe_dns.probe(request(port, transport))


def run_udp(
    handler: UdpHandler,
    names: tuple[str, ...] = ("ok.example.test",),
    seconds: float = 2.0,
) -> Outcome:
    async def main() -> Outcome:
        async with serving_udp(handler) as (_server, port):
            asked = request(port, Transport.UDP, names, seconds)
            return await probe_dns.probe(asked)

    return asyncio.run(main())


def test_udp_every_name_resolves() -> None:
    names = ("s3.amazonaws.com", "ok.example.test")
    outcome = run_udp(lambda wire: [respond(wire)], names=names)
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.address == "127.0.0.1"
    evidence = outcome.evidence
    assert evidence["resolver"] == "127.0.0.1"
    assert evidence["transport"] == "udp"
    assert evidence["rcode"] == "NOERROR"
    answers = evidence["answers"]
    assert isinstance(answers, dict)
    assert set(answers) == set(names)
    s3 = answers["s3.amazonaws.com"]
    assert isinstance(s3, dict)
    assert s3["rcode"] == "NOERROR"
    assert sorted(s3["addresses"]) == ["52.216.1.1", "52.216.1.2"]
    assert isinstance(s3["rtt_ms"], float)
    assert isinstance(evidence["rtt_ms"], float)
    assert "resolved all 2 names over UDP" in outcome.detail


def test_udp_failed_names_are_named_with_their_rcode() -> None:
    names = (
        "ok.example.test",
        "gone.example.test",
        "broken.example.test",
        "empty.example.test",
    )
    outcome = run_udp(lambda wire: [respond(wire)], names=names)
    assert outcome.status is Status.FAIL
    assert outcome.reason is Reason.DNS_FAILURE
    assert outcome.detail == (
        "3 of 4 names failed at 127.0.0.1: gone.example.test (NXDOMAIN), "
        "broken.example.test (SERVFAIL), empty.example.test (no A record)"
    )
    assert outcome.evidence["rcode"] == "SERVFAIL"
    assert "forward" in outcome.remedy


def test_udp_refused_is_the_worst_rcode() -> None:
    names = ("gone.example.test", "denied.example.test")
    outcome = run_udp(lambda wire: [respond(wire)], names=names)
    assert outcome.evidence["rcode"] == "REFUSED"
    assert "refuses" in outcome.remedy


def test_udp_without_names_asks_the_default() -> None:
    seen: list[str] = []

    def handler(wire: bytes) -> list[bytes]:
        query = dns.message.from_wire(wire)
        seen.append(query.question[0].name.to_text(omit_final_dot=True))
        return [respond(wire)]

    outcome = run_udp(handler, names=())
    assert outcome.status is Status.PASS
    assert seen[0] == probe_dns.DEFAULT_NAME == "s3.amazonaws.com"


def test_udp_ignores_a_reply_with_another_id() -> None:
    def handler(wire: bytes) -> list[bytes]:
        forged = bytearray(respond(wire))
        forged[0] ^= 0x55
        return [bytes(forged), respond(wire)]

    assert run_udp(handler).status is Status.PASS


def test_udp_garbage_is_the_wrong_protocol() -> None:
    outcome = run_udp(lambda _wire: [b"hello, this is not DNS"], seconds=0.6)
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.WRONG_PROTOCOL,
    )
    assert outcome.evidence["first_bytes"] == "hello, this is not DNS"
    assert outcome.evidence["rejected"] == 3
    assert outcome.remedy


def test_udp_broken_dns_is_a_protocol_error() -> None:
    def handler(wire: bytes) -> list[bytes]:
        # Our id and a response header, then a body that does not parse.
        return [wire[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\xff"]

    outcome = run_udp(handler, seconds=0.6)
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert outcome.evidence["first_bytes"]


def test_udp_silence_is_a_timeout() -> None:
    outcome = run_udp(lambda _wire: [], seconds=0.5)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.TIMEOUT)
    assert outcome.remedy == ""
    assert outcome.evidence["transport"] == "udp"


def test_udp_some_names_unanswered_is_a_dns_failure() -> None:
    def handler(wire: bytes) -> list[bytes]:
        name = dns.message.from_wire(wire).question[0].name.to_text()
        return [] if name.startswith("slow") else [respond(wire)]

    names = ("ok.example.test", "slow.example.test")
    outcome = run_udp(handler, names=names, seconds=0.6)
    assert outcome.reason is Reason.DNS_FAILURE
    assert "slow.example.test (no answer)" in outcome.detail


def test_udp_closed_port_is_refused() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    outcome = asyncio.run(ask(port, Transport.UDP))
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.REFUSED)


def test_invalid_name_fails_that_name_only() -> None:
    names = ("ok.example.test", "a..b")
    outcome = run_udp(lambda wire: [respond(wire)], names=names)
    assert outcome.reason is Reason.DNS_FAILURE
    assert "a..b (not a valid name)" in outcome.detail


def test_a_silent_resolver_outranks_an_invalid_name() -> None:
    names = ("a..b", "ok.example.test")
    outcome = run_udp(lambda _wire: [], names=names, seconds=0.5)
    assert outcome.reason is Reason.TIMEOUT


def test_only_invalid_names_is_not_configured() -> None:
    outcome = run_udp(lambda wire: [respond(wire)], names=("a..b",))
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.NOT_CONFIGURED,
    )


TcpHandler = Callable[[Reader, Writer], Awaitable[None]]


async def read_framed(reader: Reader) -> bytes | None:
    try:
        size = int.from_bytes(await reader.readexactly(2), "big")
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        return None


def tcp_resolver(
    answers_per_connection: int = 100,
) -> tuple[TcpHandler, list[int]]:
    """A TCP resolver that closes after some answers; counts connections."""
    connections: list[int] = []

    async def handler(reader: Reader, writer: Writer) -> None:
        connections.append(1)
        for _ in range(answers_per_connection):
            wire = await read_framed(reader)
            if wire is None:
                break
            writer.write(probe_dns.frame(respond(wire)))
            await writer.drain()
        writer.close()

    return handler, connections


def run_tcp(
    handler: TcpHandler,
    names: tuple[str, ...] = ("ok.example.test",),
    seconds: float = 2.0,
) -> Outcome:
    async def main() -> Outcome:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            asked = request(port, Transport.TCP, names, seconds)
            return await probe_dns.probe(asked)
        finally:
            server.close()

    return asyncio.run(main())


NAMES = ("s3.amazonaws.com", "ok.example.test", "gone.example.test")


def test_tcp_asks_every_name_on_one_connection() -> None:
    handler, connections = tcp_resolver()
    outcome = run_tcp(handler, names=NAMES)
    assert outcome.reason is Reason.DNS_FAILURE
    assert outcome.detail == (
        "1 of 3 names failed at 127.0.0.1: gone.example.test (NXDOMAIN)"
    )
    assert outcome.evidence["transport"] == "tcp"
    assert len(connections) == 1


def test_tcp_reconnects_when_the_resolver_closes_after_an_answer() -> None:
    handler, connections = tcp_resolver(answers_per_connection=1)
    outcome = run_tcp(handler, names=NAMES[:2])
    assert outcome.status is Status.PASS, outcome.detail
    assert len(connections) == 2


def test_tcp_closed_without_an_answer_is_a_protocol_error() -> None:
    handler, _ = tcp_resolver(answers_per_connection=0)
    outcome = run_tcp(handler)
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "closed the connection without answering" in outcome.detail
    assert "TCP" in outcome.remedy


def test_tcp_silence_after_connect_is_a_timeout() -> None:
    async def hold(reader: Reader, writer: Writer) -> None:
        await reader.read(100)
        await asyncio.sleep(2)
        writer.close()

    outcome = run_tcp(hold, seconds=0.5)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.TIMEOUT)
    assert "opened but no reply" in outcome.detail


def test_tcp_http_answer_is_the_wrong_protocol() -> None:
    async def http(reader: Reader, writer: Writer) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    outcome = run_tcp(http)
    assert outcome.reason is Reason.WRONG_PROTOCOL
    first = outcome.evidence["first_bytes"]
    assert isinstance(first, str)
    assert first.startswith("HTTP/1.1 400 Bad Request\\r\\n")


def test_tcp_banner_then_silence_is_the_wrong_protocol() -> None:
    async def banner(_reader: Reader, writer: Writer) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2p1\r\n")
        await writer.drain()
        await asyncio.sleep(2)
        writer.close()

    outcome = run_tcp(banner, seconds=0.5)
    assert outcome.reason is Reason.WRONG_PROTOCOL


def test_tcp_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    outcome = asyncio.run(ask(port, Transport.TCP))
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.REFUSED)


def test_tcp_reply_cut_short_is_a_protocol_error() -> None:
    async def cut(reader: Reader, writer: Writer) -> None:
        wire = await read_framed(reader)
        assert wire is not None
        writer.write(probe_dns.frame(respond(wire))[:-3])
        await writer.drain()
        writer.close()

    outcome = run_tcp(cut)
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "stopped before its end" in outcome.detail


def test_tcp_reply_to_another_query_is_a_protocol_error() -> None:
    async def other(reader: Reader, writer: Writer) -> None:
        wire = await read_framed(reader)
        assert wire is not None
        reply = bytearray(respond(wire))
        reply[0] ^= 0xFF
        writer.write(probe_dns.frame(bytes(reply)))
        await writer.drain()
        writer.close()

    outcome = run_tcp(other)
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "does not answer our query" in outcome.detail
