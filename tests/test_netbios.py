"""Tests for probes.netbios: the codec on captured bytes, the name
service probe on loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes import netbios
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

# Our SESSION REQUEST as captured on its way to Samba 4.17.12-Debian
# (smbd), which answered "82 00 00 00".
SESSION_REQUEST = bytes.fromhex(
    "8100004420434b4644454e45434644454646434647454646434341434143414341"
    "434143410020464445484648434e464345464542454445494341434143414341"
    "43414341414100"
)
# Captured from nmbd 4.17.12-Debian (netbios name SGWTEST, workgroup
# TESTLAB): our NODE STATUS REQUEST with transaction id 0x5a17 and its
# answer.
TRN_ID = 0x5A17
NODE_STATUS_REQUEST = bytes.fromhex(
    "5a170000000100000000000020434b4141414141414141414141414141414141"
    "414141414141414141414141410000210001"
)
NMBD_NODE_STATUS = bytes.fromhex(
    "5a178400000000010000000020434b4141414141414141414141414141414141"
    "4141414141414141414141414100002100010000000000890553475754455354"
    "2020202020202020000400534757544553542020202020202020030400534757"
    "544553542020202020202020200400544553544c414220202020202020200084"
    "00544553544c414220202020202020201e840000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "00"
)
# The same nmbd a minute later, master browser of TESTLAB by then
# (transaction id 0x0b0e); nmap's nbstat script lists the same names.
NMBD_BROWSER_STATUS = bytes.fromhex(
    "0b0e8400000000010000000020434b4141414141414141414141414141414141"
    "4141414141414141414141414100002100010000000000ad0753475754455354"
    "2020202020202020000400534757544553542020202020202020030400534757"
    "54455354202020202020202020040001025f5f4d5342524f5753455f5f020184"
    "00544553544c41422020202020202020008400544553544c4142202020202020"
    "20201d0400544553544c414220202020202020201e8400000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000"
)
NMBD_NAMES = [
    ("SGWTEST", 0x00, False),
    ("SGWTEST", 0x03, False),
    ("SGWTEST", 0x20, False),
    ("TESTLAB", 0x00, True),
    ("TESTLAB", 0x1E, True),
]


def with_id(data: bytes, trn_id: int) -> bytes:
    return trn_id.to_bytes(2, "big") + data[2:]


# Names.


@pytest.mark.parametrize(
    ("name", "suffix", "encoded"),
    [
        # RFC 1001 14.1's own example.
        ("FRED", 0x20, b"EGFCEFEECACACACACACACACACACACACA"),
        ("*SMBSERVER", 0x20, b"CKFDENECFDEFFCFGEFFCCACACACACACA"),
        ("SGW-REACH", 0x00, b"FDEHFHCNFCEFEBEDEICACACACACACAAA"),
    ],
)
def test_first_level_encoding(name: str, suffix: int, encoded: bytes) -> None:
    padded = netbios.pad_name(name, suffix)
    assert netbios.first_level(padded) == encoded
    assert netbios.decode_first_level(encoded) == padded


def test_the_wildcard_name_is_padded_with_zeros() -> None:
    name = netbios.wire_name(b"*" + bytes(15))
    assert name == b"\x20CKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\x00"


@pytest.mark.parametrize(("name", "suffix"), [("X" * 16, 0), ("OK", 256), ("é", 0)])
def test_names_that_cannot_be(name: str, suffix: int) -> None:
    with pytest.raises((netbios.NetbiosError, UnicodeEncodeError)):
        netbios.pad_name(name, suffix)


@pytest.mark.parametrize("encoded", [b"A" * 31, b"Q" * 32, b"a" * 32])
def test_decode_refuses_bad_encodings(encoded: bytes) -> None:
    with pytest.raises(netbios.NetbiosError):
        netbios.decode_first_level(encoded)


@given(st.binary(min_size=16, max_size=16))
def test_first_level_round_trip(name16: bytes) -> None:
    encoded = netbios.first_level(name16)
    assert all(0x41 <= byte <= 0x50 for byte in encoded)
    assert netbios.decode_first_level(encoded) == name16


# The session service.


def test_session_request_is_the_captured_one() -> None:
    assert netbios.session_request() == SESSION_REQUEST


@pytest.mark.parametrize(
    ("head", "kind", "length"),
    [
        (b"\x82\x00\x00\x00", 0x82, 0),
        (b"\x83\x00\x00\x01", 0x83, 1),
        (b"\x00\x01\x00\x10", 0x00, 0x10010),
        (b"\x85\x00\x00\x00", 0x85, 0),
    ],
)
def test_parse_session_header(head: bytes, kind: int, length: int) -> None:
    header = netbios.parse_session_header(head)
    assert (header.type, header.length) == (kind, length)


@pytest.mark.parametrize(
    "head", [b"SSH-", b"HTTP", b"\x82\x02\x00\x00", b"\x86\x00\x00\x00"]
)
def test_parse_session_header_refuses_what_is_not_netbios(head: bytes) -> None:
    with pytest.raises(netbios.NotNetbiosError):
        netbios.parse_session_header(head)


def test_session_packet_sets_the_length_extension() -> None:
    packet = netbios.session_packet(0, bytes(0x10001))
    assert packet[:4] == b"\x00\x01\x00\x01"
    with pytest.raises(netbios.NetbiosError):
        netbios.session_packet(0, bytes(1 << 17))


def response(packet: bytes) -> netbios.SessionResponse:
    header = netbios.parse_session_header(packet[:4])
    return netbios.parse_session_response(header, packet[4:])


def test_positive_response() -> None:
    answer = response(b"\x82\x00\x00\x00")
    assert answer.type is netbios.SessionType.POSITIVE_SESSION_RESPONSE
    assert answer.error is None
    assert answer.error_name() == ""


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (0x80, "not_listening_on_called_name"),
        (0x81, "not_listening_for_calling_name"),
        (0x82, "called_name_not_present"),
        (0x83, "insufficient_resources"),
        (0x8F, "unspecified_error"),
        (0x42, "0x42"),
    ],
)
def test_negative_response(code: int, name: str) -> None:
    answer = response(b"\x83\x00\x00\x01" + bytes([code]))
    assert answer.error == code
    assert answer.error_name() == name


def test_retarget_response() -> None:
    answer = response(bytes.fromhex("840000060ae7090501bd"))
    assert answer.retarget == ("10.231.9.5", 445)


@pytest.mark.parametrize(
    "packet",
    [
        b"\x82\x00\x00\x01\x00",
        b"\x83\x00\x00\x00",
        b"\x84\x00\x00\x04\x0a\x00\x00\x01",
    ],
)
def test_session_responses_of_the_wrong_size(packet: bytes) -> None:
    with pytest.raises(netbios.NetbiosError) as caught:
        response(packet)
    assert not isinstance(caught.value, netbios.NotNetbiosError)


def test_a_session_message_is_no_session_response() -> None:
    with pytest.raises(netbios.NotNetbiosError):
        response(b"\x00\x00\x00\x02ab")


def test_a_body_shorter_than_its_header_says() -> None:
    header = netbios.parse_session_header(b"\x83\x00\x00\x01")
    with pytest.raises(netbios.NetbiosError):
        netbios.parse_session_response(header, b"")


# The name service.


def test_node_status_request_is_the_captured_one() -> None:
    assert netbios.node_status_request(TRN_ID) == NODE_STATUS_REQUEST


def test_node_status_request_needs_a_16_bit_id() -> None:
    with pytest.raises(netbios.NetbiosError):
        netbios.node_status_request(0x10000)


def test_parse_nmbd_node_status() -> None:
    status = netbios.parse_node_status(NMBD_NODE_STATUS, TRN_ID)
    assert status.rcode == 0
    assert [(n.name, n.suffix, n.group) for n in status.names] == NMBD_NAMES
    assert all(n.active for n in status.names)
    assert status.mac == "00:00:00:00:00:00"
    assert status.names[4].evidence() == {
        "name": "TESTLAB",
        "suffix": "0x1e",
        "group": True,
        "active": True,
    }


def test_parse_nmbd_as_master_browser() -> None:
    status = netbios.parse_node_status(NMBD_BROWSER_STATUS, 0x0B0E)
    shown = [f"{n.name}<{n.suffix:02x}>" for n in status.names]
    assert shown == [
        "SGWTEST<00>",
        "SGWTEST<03>",
        "SGWTEST<20>",
        "\\x01\\x02__MSBROWSE__\\x02<01>",
        "TESTLAB<00>",
        "TESTLAB<1d>",
        "TESTLAB<1e>",
    ]
    assert [n.group for n in status.names] == [
        False,
        False,
        False,
        True,
        True,
        False,
        True,
    ]


def test_a_compressed_answer_name_and_a_mac() -> None:
    # The answer's name as a pointer to offset 12 (RFC 1002 4.1), after
    # an echoed question, and a unit id in the statistics.
    header = bytes.fromhex("5a17840000010001 00000000".replace(" ", ""))
    question = NODE_STATUS_REQUEST[12:]
    answer = b"\xc0\x0c" + NMBD_NODE_STATUS[46:]
    rdata_start = 12 + len(question) + 2 + 10
    data = bytearray(header + question + answer)
    data[rdata_start + 1 + 5 * 18 : rdata_start + 1 + 5 * 18 + 6] = bytes.fromhex(
        "525400a1b2c3"
    )
    status = netbios.parse_node_status(bytes(data), TRN_ID)
    assert len(status.names) == 5
    assert status.mac == "52:54:00:a1:b2:c3"


def test_a_response_without_statistics_has_no_mac() -> None:
    rdlength = 1 + 5 * 18
    data = bytearray(NMBD_NODE_STATUS[: 56 + rdlength])
    data[54:56] = rdlength.to_bytes(2, "big")
    status = netbios.parse_node_status(bytes(data), TRN_ID)
    assert len(status.names) == 5
    assert status.mac is None


def test_an_error_code_is_read_without_names() -> None:
    data = bytearray(NMBD_NODE_STATUS[:12])
    data[3] |= 0x03
    data[6:8] = b"\x00\x00"
    status = netbios.parse_node_status(bytes(data), TRN_ID)
    assert (status.rcode, status.names) == (3, ())


@pytest.mark.parametrize(
    "data",
    [
        with_id(NMBD_NODE_STATUS, TRN_ID + 1),
        NODE_STATUS_REQUEST,  # no response bit
        b"\x5a\x17\xa8" + NMBD_NODE_STATUS[3:],  # opcode 5
        b"SSH-2.0-OpenSSH",
        b"",
    ],
)
def test_what_does_not_answer_our_request(data: bytes) -> None:
    assert not netbios.is_response_to(data, TRN_ID)
    with pytest.raises(netbios.NotNetbiosError):
        netbios.parse_node_status(data, TRN_ID)


@pytest.mark.parametrize(
    ("at", "value"),
    [
        (46, b"\x00\x20"),  # RR_TYPE NB, not NBSTAT
        (54, b"\xff\xff"),  # RDLENGTH past the end
        (56, b"\x30"),  # 48 names in 137 bytes
        (12, b"\x80"),  # a label length byte of 0x80
        (4, b"\x00\x02"),  # two questions
    ],
)
def test_broken_node_status_responses(at: int, value: bytes) -> None:
    data = bytearray(NMBD_NODE_STATUS)
    data[at : at + len(value)] = value
    with pytest.raises(netbios.NetbiosError) as caught:
        netbios.parse_node_status(bytes(data), TRN_ID)
    assert not isinstance(caught.value, netbios.NotNetbiosError)


def test_hostile_names_stay_printable() -> None:
    data = bytearray(NMBD_NODE_STATUS)
    data[57:72] = b"\x1b[31mEVIL\r\n\x00\x00\x00\x00"
    status = netbios.parse_node_status(bytes(data), TRN_ID)
    assert status.names[0].name == "\\x1b[31mEVIL\\r\\n"


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_netbios_error(data: bytes) -> None:
    with contextlib.suppress(netbios.NetbiosError):
        netbios.parse_node_status(data, TRN_ID)
    with contextlib.suppress(netbios.NetbiosError):
        netbios.parse_node_status(b"\x5a\x17\x84\x00" + data, TRN_ID)
    with contextlib.suppress(netbios.NetbiosError):
        netbios.parse_session_header(data[:4])
    with contextlib.suppress(netbios.NetbiosError):
        netbios.parse_session_response(netbios.parse_session_header(data[:4]), data[4:])


@given(st.integers(min_value=0, max_value=len(NMBD_NODE_STATUS)))
def test_truncated_node_status_raises_only_netbios_error(cut: int) -> None:
    with contextlib.suppress(netbios.NetbiosError):
        netbios.parse_node_status(NMBD_NODE_STATUS[:cut], TRN_ID)


@given(
    st.integers(min_value=0, max_value=len(NMBD_NODE_STATUS) - 1),
    st.integers(min_value=0, max_value=255),
)
def test_altered_node_status_raises_only_netbios_error(at: int, value: int) -> None:
    data = bytearray(NMBD_NODE_STATUS)
    data[at] = value
    with contextlib.suppress(netbios.NetbiosError):
        netbios.parse_node_status(bytes(data), TRN_ID)


# The probe against small name services on loopback.


def request(port: int, seconds: float = 1.5) -> ProbeRequest:
    return ProbeRequest(
        host="127.0.0.1",
        port=port,
        transport=Transport.UDP,
        deadline=Deadline.after(seconds),
        settings=ProbeSettings(),
        address="127.0.0.1",
    )


def run(handler: Handler, seconds: float = 1.5) -> tuple[Outcome, list[bytes]]:
    async def main() -> tuple[Outcome, list[bytes]]:
        async with serving_udp(handler) as (server, port):
            outcome = await netbios.probe_name_status(request(port, seconds))
        return outcome, server.seen

    return asyncio.run(main())


def nmbd(data: bytes) -> list[bytes]:
    """The captured nmbd answer, with the asker's transaction id."""
    return [with_id(NMBD_NODE_STATUS, int.from_bytes(data[:2], "big"))]


def test_nmbd_passes_with_its_names() -> None:
    outcome, seen = run(nmbd)
    assert (outcome.status, outcome.reason) == (Status.PASS, Reason.OK)
    assert outcome.address == "127.0.0.1"
    names = outcome.evidence["names"]
    assert isinstance(names, list)
    assert [
        (n["name"], n["suffix"], n["group"]) for n in names if isinstance(n, dict)
    ] == [(name, f"0x{suffix:02x}", group) for name, suffix, group in NMBD_NAMES]
    assert outcome.evidence["mac"] == "00:00:00:00:00:00"
    assert "SGWTEST<20>" in outcome.detail
    # What we sent: a node status request for "*" with a random id.
    assert seen[0][2:] == NODE_STATUS_REQUEST[2:]


def test_answers_to_other_requests_are_ignored() -> None:
    def handler(data: bytes) -> list[bytes]:
        trn_id = int.from_bytes(data[:2], "big")
        stale = with_id(NMBD_NODE_STATUS, trn_id ^ 0xFFFF)
        return [stale, b"garbage", *nmbd(data)]

    outcome, _seen = run(handler)
    assert outcome.status is Status.PASS


def test_an_error_code_still_proves_the_service() -> None:
    def handler(data: bytes) -> list[bytes]:
        return [data[:2] + b"\x84\x03" + bytes(8)]

    outcome, _seen = run(handler)
    assert outcome.status is Status.PASS
    assert outcome.evidence["rcode"] == 3
    assert outcome.evidence["names"] == []
    assert "error code 3" in outcome.detail


def test_garbage_is_the_wrong_protocol() -> None:
    outcome, seen = run(lambda _data: [b"SSH-2.0-OpenSSH_9.2p1\r\n"], seconds=0.6)
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.WRONG_PROTOCOL,
    )
    assert outcome.evidence["first_bytes"] == "SSH-2.0-OpenSSH_9.2p1\\r\\n"
    assert outcome.remedy
    assert len(seen) == 3


def test_a_broken_response_with_our_id_is_a_protocol_error() -> None:
    def handler(data: bytes) -> list[bytes]:
        broken = bytearray(with_id(NMBD_NODE_STATUS, 0))
        broken[:2] = data[:2]
        broken[56] = 0x30
        return [b"garbage first", bytes(broken)]

    outcome, _seen = run(handler, seconds=0.6)
    assert outcome.reason is Reason.PROTOCOL_ERROR
    rejected = outcome.evidence["rejected"]
    assert isinstance(rejected, int)
    assert rejected >= 2


def test_silence_is_a_timeout() -> None:
    outcome, seen = run(lambda _data: [], seconds=0.6)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.TIMEOUT)
    assert len(seen) == 3


def test_a_closed_port_is_refused() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main() -> Outcome:
        return await netbios.probe_name_status(request(port, 1.0))

    outcome = asyncio.run(main())
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.REFUSED)
