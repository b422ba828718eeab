"""Tests for probes.smb: the codec on captured bytes, the probes on
loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes import netbios, smb
from probes.base import (
    Deadline,
    Outcome,
    ProbeRequest,
    ProbeSettings,
    Reason,
    Status,
    Transport,
)

# Captured on loopback from Samba 4.17.12-Debian (smbd, "server min
# protocol = SMB2_02"), each with its four-byte transport header. Our
# SMB2 NEGOTIATE, with this ClientGuid and salt:
GUID = bytes.fromhex("779b40fa2add5ad854455bfc2abcdc8f")
SALT = bytes.fromhex("f160507f5afc60f46b4ce913b0b31de81a77ce44872273833072508cf82e5f4c")
SAMBA_REQUEST = bytes.fromhex(
    "000000b2fe534d42400000000000000000000100000000000000000000000000"
    "00000000fffe0000000000000000000000000000000000000000000000000000"
    "0000000024000500010000007f000000779b40fa2add5ad854455bfc2abcdc8f"
    "7000000002000000020210020003020311030000010026000000000001002000"
    "0100f160507f5afc60f46b4ce913b0b31de81a77ce44872273833072508cf82e"
    "5f4c000002000a000000000004000200010004000300"
)
# smbd's answer on 445: 3.1.1, signing enabled, two contexts.
SAMBA_RESPONSE = bytes.fromhex(
    "0000010cfe534d42400000000000000000000100010000000000000000000000"
    "00000000fffe0000000000000000000000000000000000000000000000000000"
    "000000004100010011030200736777746573740000000000000000000f000000"
    "0000800000008000000080003084dd3a5d83dd01000000000000000080004a00"
    "d0000000604806062b0601050502a03e303ca00e300c060a2b06010401823702"
    "020aa32a3028a0261b246e6f745f646566696e65645f696e5f52464334313738"
    "40706c656173655f69676e6f7265000000000000010026000000000001002000"
    "01004521ad7139f9e2162c160149da0c989b349a6e0afd6121a1f579b12eb5d9"
    "681a0000020004000000000001000200"
)
# smbd's answer on 139, after "82 00 00 00" (positive session response).
SAMBA_139_RESPONSE = bytes.fromhex(
    "0000010cfe534d42400000000000000000000100010000000000000000000000"
    "00000000fffe0000000000000000000000000000000000000000000000000000"
    "000000004100010011030200736777746573740000000000000000000b000000"
    "000001000000010000000100e8c0fc3a5d83dd01000000000000000080004a00"
    "d0000000604806062b0601050502a03e303ca00e300c060a2b06010401823702"
    "020aa32a3028a0261b246e6f745f646566696e65645f696e5f52464334313738"
    "40706c656173655f69676e6f7265000000000000010026000000000001002000"
    "0100fcda93bc968fa113ff2f1c6099044756aa3afd729c76970d1e29bc59a4d5"
    "83360000020004000000000001000200"
)
# Our SMB1 NEGOTIATE (pid 0x1234, mid 0x5678) and smbd's SMB2 answer
# to it: the wildcard dialect 2.??? ([MS-SMB2] 3.3.5.3.1).
SMB1_REQUEST = bytes.fromhex(
    "00000045ff534d4272000000001801c800000000000000000000000000003412"
    "00007856002200024e54204c4d20302e31320002534d4220322e303032000253"
    "4d4220322e3f3f3f00"
)
SAMBA_WILDCARD_RESPONSE = bytes.fromhex(
    "000000cafe534d42400000000000000000000100010000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000041000100ff0200007367777465737400000000000000000007000000"
    "00008000000080000000800002139c4d5d83dd01000000000000000080004a00"
    "00000000604806062b0601050502a03e303ca00e300c060a2b06010401823702"
    "020aa32a3028a0261b246e6f745f646566696e65645f696e5f52464334313738"
    "40706c656173655f69676e6f7265"
)
# Captured from Samba 4.17.12-Debian with "server max protocol = NT1":
# it closes the connection on our SMB2 NEGOTIATE, and answers our SMB1
# NEGOTIATE (pid 0x030e, mid 0xc4b9) with NT LM 0.12.
NT1_PID, NT1_MID = 0x030E, 0xC4B9
NT1_RESPONSE = bytes.fromhex(
    "0000009fff534d4272000000008801c800000000000000000000000000000e03"
    "0000b9c41100000332000100044100000000010051230000fdf38080b815103f"
    "5d83dd010000005a0073677774657374000000000000000000604806062b0601"
    "050502a03e303ca00e300c060a2b06010401823702020aa32a3028a0261b246e"
    "6f745f646566696e65645f696e5f5246433431373840706c656173655f69676e"
    "6f7265"
)
SAMBA_GUID = "74776773-7365-0074-0000-000000000000"
OPENSSH = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
STATUS_NOT_SUPPORTED = 0xC00000BB


def body(framed: bytes) -> bytes:
    """The message without its transport header."""
    return framed[smb.TRANSPORT_HEADER_SIZE :]


def smb2_error(status: int, message_id: int = 0) -> bytes:
    """[MS-SMB2] 2.2.2: an ERROR response to NEGOTIATE, framed."""
    header = bytearray(body(SAMBA_RESPONSE)[:64])
    header[8:12] = status.to_bytes(4, "little")
    header[24:32] = message_id.to_bytes(8, "little")
    message = bytes(header) + bytes.fromhex("0900000000000000") + b"\x00"
    return smb.frame(message) + message


def patched(framed: bytes, at: int, value: bytes) -> bytes:
    """``framed`` with the message bytes at ``at`` replaced."""
    data = bytearray(framed)
    start = smb.TRANSPORT_HEADER_SIZE + at
    data[start : start + len(value)] = value
    return bytes(data)


# Codec: requests.


def test_negotiate_request_is_the_captured_one() -> None:
    message = smb.negotiate_request(GUID, SALT)
    assert smb.frame(message) + message == SAMBA_REQUEST


def test_negotiate_request_layout() -> None:
    message = smb.negotiate_request(GUID, SALT)
    assert message[:4] == b"\xfeSMB"
    fields = message[64:]
    assert int.from_bytes(fields[:2], "little") == 36
    assert int.from_bytes(fields[2:4], "little") == 5
    # Signing enabled, not required.
    assert int.from_bytes(fields[4:6], "little") == 1
    offset = int.from_bytes(fields[28:32], "little")
    assert offset % 8 == 0
    assert int.from_bytes(fields[32:34], "little") == 2
    dialects = [
        int.from_bytes(fields[36 + 2 * i : 38 + 2 * i], "little") for i in range(5)
    ]
    assert dialects == [0x0202, 0x0210, 0x0300, 0x0302, 0x0311]
    # PREAUTH_INTEGRITY_CAPABILITIES: SHA-512 and the salt.
    assert message[offset : offset + 2] == b"\x01\x00"
    assert message[offset + 14 : offset + 46] == SALT
    # ENCRYPTION_CAPABILITIES starts 8-byte aligned after it.
    second = offset + ((8 + 38 + 7) & ~7)
    assert message[second : second + 2] == b"\x02\x00"
    assert len(message) == second + 8 + 10


def test_negotiate_request_needs_a_16_byte_guid() -> None:
    with pytest.raises(smb.SmbError):
        smb.negotiate_request(b"short", SALT)


def test_smb1_negotiate_request_is_the_captured_one() -> None:
    message = smb.smb1_negotiate_request(0x1234, 0x5678)
    assert smb.frame(message) + message == SMB1_REQUEST


# Codec: replies.


def test_parse_samba_negotiate_response() -> None:
    reply = smb.parse_reply(body(SAMBA_RESPONSE))
    assert isinstance(reply, smb.NegotiateResponse)
    assert reply.dialect == smb.Dialect.SMB_3_1_1
    assert reply.security_mode == 1
    assert not reply.signing_required
    assert reply.server_guid == SAMBA_GUID
    assert smb.capability_names(reply.capabilities) == [
        "dfs",
        "leasing",
        "large_mtu",
        "multi_channel",
    ]
    assert (reply.max_read_size, reply.max_write_size) == (8388608, 8388608)
    assert reply.max_transact_size == 8388608
    assert smb.filetime_iso(reply.system_time) == "2026-12-03T19:33:53.377Z"
    assert reply.negotiate_contexts == 2
    assert reply.cipher == smb.Cipher.AES_128_GCM


def test_parse_samba_negotiate_response_on_139() -> None:
    reply = smb.parse_reply(body(SAMBA_139_RESPONSE))
    assert isinstance(reply, smb.NegotiateResponse)
    assert reply.dialect == smb.Dialect.SMB_3_1_1
    assert reply.max_read_size == 65536
    assert smb.capability_names(reply.capabilities) == [
        "dfs",
        "leasing",
        "multi_channel",
    ]


def test_parse_the_wildcard_answer_to_smb1() -> None:
    reply = smb.parse_reply(body(SAMBA_WILDCARD_RESPONSE), pid=0x1234, mid=0x5678)
    assert isinstance(reply, smb.NegotiateResponse)
    assert reply.dialect == smb.Dialect.WILDCARD
    assert smb.dialect_name(reply.dialect) == "2.???"
    assert reply.negotiate_contexts == 0
    assert reply.cipher is None


def test_parse_an_smb1_only_answer() -> None:
    reply = smb.parse_reply(body(NT1_RESPONSE), pid=NT1_PID, mid=NT1_MID)
    assert reply == smb.Smb1Response(
        status=0,
        dialect="NT LM 0.12",
        signing_required=False,
        system_time=int.from_bytes(bytes.fromhex("b815103f5d83dd01"), "little"),
    )
    assert smb.filetime_iso(reply.system_time) == "2026-12-03T19:34:00.419Z"


def test_an_smb1_answer_to_another_request_is_refused() -> None:
    with pytest.raises(smb.SmbError) as caught:
        smb.parse_reply(body(NT1_RESPONSE), pid=NT1_PID, mid=NT1_MID + 1)
    assert not isinstance(caught.value, smb.NotSmbError)


def test_an_smb1_error_to_an_smb2_request_is_an_smb1_response() -> None:
    message = bytearray(body(NT1_RESPONSE)[:33]) + b"\x00\x00"
    message[5:9] = (0xC0000002).to_bytes(4, "little")
    reply = smb.parse_reply(bytes(message))
    assert reply == smb.Smb1Response(status=0xC0000002)


def test_smb1_no_dialect_and_a_dialect_never_offered() -> None:
    words = body(NT1_RESPONSE)[33:]
    none = body(NT1_RESPONSE)[:33] + b"\xff\xff" + words[2:]
    reply = smb.parse_reply(none, pid=NT1_PID, mid=NT1_MID)
    assert reply == smb.Smb1Response(status=0)
    unknown = body(NT1_RESPONSE)[:33] + b"\x07\x00" + words[2:]
    with pytest.raises(smb.SmbError):
        smb.parse_reply(unknown, pid=NT1_PID, mid=NT1_MID)


def test_an_error_status_is_a_rejected_negotiate() -> None:
    with pytest.raises(smb.NegotiateRejected) as caught:
        smb.parse_reply(body(smb2_error(STATUS_NOT_SUPPORTED)))
    assert caught.value.status == STATUS_NOT_SUPPORTED
    assert "STATUS_NOT_SUPPORTED" in str(caught.value)


@pytest.mark.parametrize(
    ("at", "value"),
    [
        (12, b"\x01\x00"),  # command SESSION_SETUP
        (16, b"\x00\x00\x00\x00"),  # no SERVER_TO_REDIR flag
        (24, b"\x07"),  # message id 7
        (4, b"\x20\x00"),  # header StructureSize
        (64, b"\x24\x00"),  # response StructureSize
        (64 + 60, b"\x10\x00\x00\x00"),  # contexts inside the header
        (64 + 60, b"\xf8\x00\x00\x00"),  # contexts past the end
    ],
)
def test_replies_that_do_not_answer_our_negotiate(at: int, value: bytes) -> None:
    with pytest.raises(smb.SmbError) as caught:
        smb.parse_reply(body(patched(SAMBA_RESPONSE, at, value)))
    assert not isinstance(caught.value, smb.NotSmbError)


@pytest.mark.parametrize(
    "message", [b"", b"SSH-2.0-OpenSSH", b"HTTP/1.1 400", b"\xfdSMB" + bytes(60)]
)
def test_parse_reply_knows_what_is_not_smb(message: bytes) -> None:
    with pytest.raises(smb.NotSmbError):
        smb.parse_reply(message)


@pytest.mark.parametrize(
    ("head", "length"),
    [
        (b"\x00\x00\x01\x0c", 268),
        (b"\x00\x00\x00\x00", 0),
        (b"\x00\x01\x00\x00", 65536),
    ],
)
def test_message_length(head: bytes, length: int) -> None:
    assert smb.message_length(head) == length


@pytest.mark.parametrize(
    "head", [b"SSH-", b"HTTP", b"\x82\x00\x00\x00", b"\x00\xff\xff\xff"]
)
def test_message_length_refuses_what_is_not_smb(head: bytes) -> None:
    with pytest.raises(smb.NotSmbError):
        smb.message_length(head)


@pytest.mark.parametrize(
    ("data", "smb_like"),
    [
        (SAMBA_RESPONSE[:6], True),
        (NT1_RESPONSE[:9], True),
        (b"\x00", True),
        (b"", False),
        (b"SSH-2.0", False),
        (b"\x00\x00\x00\x10HTTP", False),
    ],
)
def test_looks_like_smb(data: bytes, smb_like: bool) -> None:
    assert smb.looks_like_smb(data) is smb_like


@pytest.mark.parametrize(
    ("revision", "name"),
    [
        (0x0202, "2.0.2"),
        (0x0210, "2.1"),
        (0x0300, "3.0"),
        (0x0302, "3.0.2"),
        (0x0311, "3.1.1"),
        (0x02FF, "2.???"),
        (0x0222, "0x0222"),
    ],
)
def test_dialect_name(revision: int, name: str) -> None:
    assert smb.dialect_name(revision) == name


def test_filetime_edges() -> None:
    assert smb.filetime_iso(0) is None
    assert smb.filetime_iso(2**64 - 1) is None
    assert smb.filetime_iso(116444736000000000) == "1970-01-01T00:00:00.000Z"
    assert smb.filetime_unix(116444736000000000) == 0.0


def test_frame_refuses_what_24_bits_cannot_say() -> None:
    with pytest.raises(smb.SmbError):
        smb.frame(bytes(1 << 24))


REPLIES = [
    (SAMBA_RESPONSE, 0, 0),
    (SAMBA_139_RESPONSE, 0, 0),
    (SAMBA_WILDCARD_RESPONSE, 0x1234, 0x5678),
    (NT1_RESPONSE, NT1_PID, NT1_MID),
]


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_smb_error(data: bytes) -> None:
    with contextlib.suppress(smb.SmbError):
        smb.parse_reply(data)
    with contextlib.suppress(smb.SmbError):
        smb.parse_reply(b"\xfeSMB" + data)
    with contextlib.suppress(smb.SmbError):
        smb.parse_reply(b"\xffSMB" + data, pid=1, mid=2)
    with contextlib.suppress(smb.SmbError):
        smb.message_length(data[:4])


@given(st.sampled_from(REPLIES), st.integers(min_value=0, max_value=300))
def test_truncated_replies_raise_only_smb_error(
    reply: tuple[bytes, int, int], cut: int
) -> None:
    framed, pid, mid = reply
    message = body(framed)
    with contextlib.suppress(smb.SmbError):
        smb.parse_reply(message[:cut], pid=pid, mid=mid)


@given(
    st.sampled_from(REPLIES),
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=0, max_value=255),
)
def test_altered_replies_raise_only_smb_error(
    reply: tuple[bytes, int, int], at: int, value: int
) -> None:
    framed, pid, mid = reply
    message = bytearray(body(framed))
    message[at % len(message)] = value
    with contextlib.suppress(smb.SmbError):
        smb.parse_reply(bytes(message), pid=pid, mid=mid)


@given(st.binary(min_size=16, max_size=16), st.binary(max_size=64))
def test_any_guid_and_salt_make_a_well_formed_request(guid: bytes, salt: bytes) -> None:
    message = smb.negotiate_request(guid, salt)
    assert message[:4] == b"\xfeSMB"
    assert uuid.UUID(bytes_le=message[76:92]).bytes_le == guid


# The probes against small servers on loopback.

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Handler = Callable[[Reader, Writer], Awaitable[None]]
Probe = Callable[[ProbeRequest], Awaitable[Outcome]]


def request(port: int, seconds: float) -> ProbeRequest:
    return ProbeRequest(
        host="127.0.0.1",
        port=port,
        transport=Transport.TCP,
        deadline=Deadline.after(seconds),
        settings=ProbeSettings(),
        address="127.0.0.1",
    )


def run(
    handler: Handler, seconds: float = 2.0, probe: Probe = smb.probe_direct
) -> Outcome:
    async def main() -> Outcome:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await probe(request(port, seconds))
        finally:
            server.close()

    return asyncio.run(main())


async def read_framed(reader: Reader) -> bytes:
    """One message in a four-byte header (SMB or a NetBIOS packet)."""
    head = await reader.readexactly(4)
    length = (head[1] & 1) << 16 | int.from_bytes(head[2:], "big")
    if head[0] == 0:
        length = int.from_bytes(head[1:], "big")
    return head + await reader.readexactly(length)


def answers(*replies: bytes, hold: float = 0.0, session: bool = False) -> Handler:
    """A server that reads the NetBIOS session request (``session``) and
    one SMB message, then writes ``replies`` and holds the connection
    for ``hold`` seconds."""

    async def handler(reader: Reader, writer: Writer) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            if session:
                await read_framed(reader)
            await read_framed(reader)
            for reply in replies:
                writer.write(reply)
                await writer.drain()
            await asyncio.sleep(hold)
        writer.close()

    return handler


def test_a_samba_server_passes_with_its_evidence() -> None:
    heard: list[bytes] = []

    async def handler(reader: Reader, writer: Writer) -> None:
        heard.append(await read_framed(reader))
        writer.write(SAMBA_RESPONSE)
        await writer.drain()
        writer.close()

    outcome = run(handler)
    assert (outcome.status, outcome.reason) == (Status.PASS, Reason.OK)
    assert outcome.address == "127.0.0.1"
    assert "negotiated SMB 3.1.1, signing not required" in outcome.detail
    evidence = outcome.evidence
    assert evidence["dialect"] == "3.1.1"
    assert evidence["signing_required"] is False
    assert evidence["server_guid"] == SAMBA_GUID
    assert evidence["capabilities"] == ["dfs", "leasing", "large_mtu", "multi_channel"]
    assert evidence["server_time"] == "2026-12-03T19:33:53.377Z"
    assert isinstance(evidence["clock_offset_s"], float)
    assert evidence["cipher"] == "aes-128-gcm"
    assert evidence["negotiate_contexts"] == 2
    assert evidence["max_read_size"] == 8388608
    # What we sent: a framed SMB2 NEGOTIATE, fresh guid and salt.
    request_sent = heard[0]
    assert request_sent[:4] == SAMBA_REQUEST[:4]
    assert request_sent[4:8] == b"\xfeSMB"
    assert request_sent != SAMBA_REQUEST


def test_signing_required_shows() -> None:
    reply = patched(SAMBA_RESPONSE, 66, b"\x03\x00")
    outcome = run(answers(reply))
    assert outcome.status is Status.PASS
    assert outcome.evidence["signing_required"] is True
    assert "signing required" in outcome.detail


def test_an_older_dialect_passes() -> None:
    message = bytearray(body(SAMBA_WILDCARD_RESPONSE))
    message[68:70] = b"\x10\x02"  # 2.1
    message[24:32] = bytes(8)
    outcome = run(answers(smb.frame(bytes(message)) + bytes(message)))
    assert outcome.status is Status.PASS
    assert outcome.evidence["dialect"] == "2.1"
    assert outcome.evidence["negotiate_contexts"] == 0


def test_a_dialect_never_offered_is_a_protocol_error() -> None:
    outcome = run(answers(patched(SAMBA_WILDCARD_RESPONSE, 68, b"\x22\x02")))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert outcome.evidence["dialect"] == "0x0222"


def test_a_refused_negotiate_is_a_protocol_error() -> None:
    outcome = run(answers(smb2_error(STATUS_NOT_SUPPORTED)))
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.PROTOCOL_ERROR,
    )
    assert outcome.evidence["status"] == "STATUS_NOT_SUPPORTED"
    assert outcome.remedy


def smb1_only(connections: list[int]) -> Handler:
    """Samba with "server max protocol = NT1": close on SMB2, answer SMB1
    with the captured response, its pid and mid echoed."""

    async def handler(reader: Reader, writer: Writer) -> None:
        connections.append(1)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            asked = await read_framed(reader)
            if asked[4:8] == b"\xffSMB":
                reply = bytearray(NT1_RESPONSE)
                reply[30:32] = asked[30:32]  # PIDLow
                reply[34:36] = asked[34:36]  # MID
                writer.write(bytes(reply))
                await writer.drain()
        writer.close()

    return handler


def test_an_smb1_only_server_is_a_protocol_error() -> None:
    connections: list[int] = []
    outcome = run(smb1_only(connections))
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.PROTOCOL_ERROR,
    )
    assert outcome.evidence["smb1_only"] is True
    assert outcome.evidence["smb1_dialect"] == "NT LM 0.12"
    assert outcome.evidence["server_time"] == "2026-12-03T19:34:00.419Z"
    assert "speaks only SMB1" in outcome.detail
    assert outcome.remedy
    assert len(connections) == 2


def test_an_smb1_answer_to_smb2_is_smb1_only_at_once() -> None:
    message = bytearray(body(NT1_RESPONSE)[:33]) + b"\x00\x00"
    message[5:9] = (0xC0000002).to_bytes(4, "little")
    outcome = run(answers(smb.frame(bytes(message)) + bytes(message)))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert outcome.evidence["smb1_only"] is True
    assert outcome.evidence["smb1_status"] == "0xc0000002"
    assert "answered an SMB2 NEGOTIATE in SMB1" in outcome.detail


def test_an_smb1_answer_with_other_ids_is_not_trusted() -> None:
    async def handler(reader: Reader, writer: Writer) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            asked = await read_framed(reader)
            if asked[4:8] == b"\xffSMB":
                writer.write(NT1_RESPONSE)
        writer.close()

    outcome = run(handler)
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "smb1_only" not in outcome.evidence


def test_a_server_that_answers_only_smb1_negotiates_in_smb2() -> None:
    async def handler(reader: Reader, writer: Writer) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            asked = await read_framed(reader)
            if asked[4:8] == b"\xffSMB":
                writer.write(SAMBA_WILDCARD_RESPONSE)
        writer.close()

    outcome = run(handler)
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert outcome.evidence["dialect"] == "2.???"
    assert "answered an SMB1 multi-protocol one" in outcome.detail


def test_closing_on_both_negotiates_is_the_wrong_protocol() -> None:
    connections: list[int] = []

    async def handler(_reader: Reader, writer: Writer) -> None:
        connections.append(1)
        writer.close()

    outcome = run(handler)
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.WRONG_PROTOCOL,
    )
    assert outcome.evidence["first_bytes"] == ""
    assert "did not answer an SMB1 one either" in outcome.detail
    assert len(connections) == 2


def test_an_ssh_banner_is_the_wrong_protocol() -> None:
    async def handler(_reader: Reader, writer: Writer) -> None:
        writer.write(OPENSSH)
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    outcome = run(handler, seconds=3)
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.WRONG_PROTOCOL,
    )
    assert outcome.evidence["first_bytes"] == (
        "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\\r\\n"
    )
    assert "not SMB" in outcome.detail
    assert outcome.remedy


def test_a_web_server_is_the_wrong_protocol() -> None:
    page = b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n"
    outcome = run(answers(page))
    assert outcome.reason is Reason.WRONG_PROTOCOL
    first = outcome.evidence["first_bytes"]
    assert isinstance(first, str)
    assert first.startswith("HTTP/1.1 400 Bad Request\\r\\n")


def test_a_huge_length_is_the_wrong_protocol() -> None:
    outcome = run(answers(b"\x00\xff\xff\xff" + bytes(100), hold=2))
    assert outcome.reason is Reason.WRONG_PROTOCOL


def test_silence_after_connect_is_a_timeout() -> None:
    outcome = run(answers(hold=2), seconds=0.5)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.TIMEOUT)
    assert "opened but no reply came" in outcome.detail


def test_a_reply_that_stalls_is_a_timeout() -> None:
    outcome = run(answers(SAMBA_RESPONSE[:100], hold=2), seconds=0.5)
    assert outcome.reason is Reason.TIMEOUT
    assert "began but did not end" in outcome.detail


def test_a_reply_cut_short_is_a_protocol_error() -> None:
    outcome = run(answers(SAMBA_RESPONSE[:100]))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "in the middle of an SMB reply" in outcome.detail


def test_a_closed_port_is_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main() -> Outcome:
        return await smb.probe_direct(request(port, 1.0))

    outcome = asyncio.run(main())
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.REFUSED)
    assert not outcome.remedy


# SMB over the NetBIOS session service (139).

POSITIVE = b"\x82\x00\x00\x00"
# Captured from Samba 4.17.12-Debian: its answer to a SESSION REQUEST
# that lacks the calling name, "called name not present".
SAMBA_NEGATIVE = bytes.fromhex("8300000182")


def session(handler_replies: bytes, *then: bytes, hold: float = 0.0) -> Handler:
    """A 139 server: read the SESSION REQUEST, answer ``handler_replies``,
    then (when ``then`` is given) read the NEGOTIATE and answer it."""

    async def handler(reader: Reader, writer: Writer) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await read_framed(reader)
            writer.write(handler_replies)
            await writer.drain()
            if then:
                await read_framed(reader)
                for reply in then:
                    writer.write(reply)
                    await writer.drain()
            await asyncio.sleep(hold)
        writer.close()

    return handler


def test_139_with_a_samba_server_passes() -> None:
    heard: list[bytes] = []

    async def handler(reader: Reader, writer: Writer) -> None:
        heard.append(await read_framed(reader))
        writer.write(POSITIVE)
        heard.append(await read_framed(reader))
        writer.write(SAMBA_139_RESPONSE)
        await writer.drain()
        writer.close()

    outcome = run(handler, probe=smb.probe_netbios_session)
    assert (outcome.status, outcome.reason) == (Status.PASS, Reason.OK)
    assert outcome.evidence["dialect"] == "3.1.1"
    assert outcome.evidence["session"] == "positive"
    assert heard[0] == netbios.session_request()
    assert heard[1][4:8] == b"\xfeSMB"


def test_139_skips_keep_alives() -> None:
    keep_alive = b"\x85\x00\x00\x00"
    handler = session(POSITIVE, keep_alive, keep_alive + SAMBA_139_RESPONSE)
    outcome = run(handler, probe=smb.probe_netbios_session)
    assert outcome.status is Status.PASS


def test_139_a_negative_response_proves_the_service() -> None:
    outcome = run(session(SAMBA_NEGATIVE), probe=smb.probe_netbios_session)
    assert (outcome.status, outcome.reason) == (Status.PASS, Reason.OK)
    assert outcome.evidence["negative_response"] == "called_name_not_present"
    assert "session service" in outcome.detail
    assert "refused the session" in outcome.detail


def test_139_a_retarget_is_reported() -> None:
    retarget = bytes.fromhex("840000060ae7090501bd")
    outcome = run(session(retarget), probe=smb.probe_netbios_session)
    assert outcome.status is Status.WARN
    assert outcome.evidence["retarget_address"] == "10.231.9.5"
    assert outcome.evidence["retarget_port"] == 445
    assert "10.231.9.5 port 445" in outcome.detail


def test_139_a_broken_session_response_is_a_protocol_error() -> None:
    outcome = run(session(b"\x82\x00\x00\x02\x00\x00"), probe=smb.probe_netbios_session)
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "session request" in outcome.detail


def test_139_an_ssh_server_is_the_wrong_protocol() -> None:
    outcome = run(session(OPENSSH, hold=1), probe=smb.probe_netbios_session)
    assert outcome.reason is Reason.WRONG_PROTOCOL
    first = outcome.evidence["first_bytes"]
    assert isinstance(first, str)
    assert first.startswith("SSH-2.0-OpenSSH")


def test_139_silence_after_the_session_is_a_timeout() -> None:
    outcome = run(
        session(POSITIVE, hold=2), seconds=0.5, probe=smb.probe_netbios_session
    )
    assert outcome.reason is Reason.TIMEOUT
    assert "after the NetBIOS session opened" in outcome.detail


def test_139_an_smb1_only_server_is_found_too() -> None:
    async def handler(reader: Reader, writer: Writer) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await read_framed(reader)
            writer.write(POSITIVE)
            asked = await read_framed(reader)
            if asked[4:8] == b"\xffSMB":
                reply = bytearray(NT1_RESPONSE)
                reply[30:32] = asked[30:32]
                reply[34:36] = asked[34:36]
                writer.write(bytes(reply))
                await writer.drain()
        writer.close()

    outcome = run(handler, probe=smb.probe_netbios_session)
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert outcome.evidence["smb1_only"] is True


def test_the_probe_keeps_its_deadline() -> None:
    async def main() -> float:
        server = await asyncio.start_server(answers(hold=3), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await smb.probe_netbios_session(request(port, 0.4))
        finally:
            server.close()
        return loop.time() - started

    assert asyncio.run(main()) < 1.0
