"""Property tests that fill the gaps of the codecs' own: random and
truncated input for the parsers their test files leave out.

Every codec already has random-bytes and truncation tests in its own
file (``test_ntp``, ``test_ssh``, ``test_http``, ``test_iscsi``,
``test_smb``, ``test_netbios``, ``test_oncrpc``, ``test_ber``,
``test_ldap``, ``test_icmp``, ``test_tls``, ``test_dns``). These add
what was missing: chunked bodies cut anywhere, NetBIOS session answers
cut or changed, the LDAP search follower fed any messages, SSH prefixes
judged at a deadline, ICMP records with any errno, activation keys cut
short, iSCSI key text cut anywhere, and RPC records in any chunking.
Each checks that nothing but the codec's own error escapes, and what
a truncated input may still yield.
"""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes import activation, http, iscsi_pdu, ldap, netbios, oncrpc, ssh
from probes.icmp import IcmpError, parse_extended_err

# HTTP: chunked bodies (RFC 9112 7.1).

_CHUNKS = st.lists(st.binary(min_size=1, max_size=40), max_size=8)


def chunked(parts: list[bytes]) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts)
    return body + b"0\r\n\r\n"


@given(_CHUNKS, st.data())
def test_a_chunked_body_cut_anywhere_yields_a_prefix_or_http_error(
    parts: list[bytes], data: st.DataObject
) -> None:
    wire = chunked(parts)
    cut = data.draw(st.integers(0, len(wire)))
    whole = b"".join(parts)
    assert http.decode_chunked(wire) == whole
    assert http.chunked_done(wire)
    try:
        decoded = http.decode_chunked(wire[:cut])
        done = http.chunked_done(wire[:cut])
    except http.HttpError:
        return
    assert whole.startswith(decoded)
    # Done once the last-chunk line is in; the final CRLF may follow.
    assert done == (cut >= len(wire) - 2)
    if done:
        assert decoded == whole


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_any_head_and_body_give_an_answer_or_http_error(
    head: bytes, body: bytes
) -> None:
    with contextlib.suppress(http.HttpError):
        response = http.parse_head(b"HTTP/1.1 " + head + b"\r\n\r\n")
        http.body_length(response)
        answer = activation.read_answer(response, body)
        assert isinstance(answer.status_line, str)


# Activation keys cut short are no keys.

KEY = "ABCD1-EFGH2-IJKL3-MNOP4-QRST5"


@given(st.integers(0, len(KEY)))
def test_a_key_cut_short_is_no_key(cut: int) -> None:
    head = http.Response("HTTP/1.1", 200, "OK", ())
    answer = activation.read_answer(head, KEY[:cut].encode())
    if answer.key is not None:
        assert len(answer.key.split("-")) == 5
        assert KEY.startswith(answer.key)


# NetBIOS session answers (RFC 1002 4.3).

_SESSION_ANSWERS = (
    netbios.session_packet(netbios.SessionType.POSITIVE_SESSION_RESPONSE, b""),
    netbios.session_packet(netbios.SessionType.NEGATIVE_SESSION_RESPONSE, b"\x82"),
    netbios.session_packet(
        netbios.SessionType.RETARGET_SESSION_RESPONSE, b"\xc0\x00\x02\x01\x00\x8b"
    ),
)


def read_session(data: bytes) -> None:
    header = netbios.parse_session_header(data[: netbios.SESSION_HEADER_SIZE])
    netbios.parse_session_response(header, data[netbios.SESSION_HEADER_SIZE :])


@given(st.sampled_from(_SESSION_ANSWERS), st.data())
def test_session_answers_cut_or_changed_raise_only_netbios_error(
    answer: bytes, data: st.DataObject
) -> None:
    read_session(answer)
    cut = data.draw(st.integers(0, len(answer) - 1))
    with pytest.raises(netbios.NetbiosError):
        read_session(answer[:cut])
    changed = bytearray(answer)
    changed[data.draw(st.integers(0, len(answer) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(netbios.NetbiosError):
        read_session(bytes(changed))


# LDAP: the search follower fed any messages (RFC 4511 4.5.2).

_MESSAGE_IDS = st.sampled_from([0, 1, 7, ldap.MAX_INT])
_OPS = st.sampled_from([4, 5, 19, 24, 1, 3, 25])


def _result(code: int) -> bytes:
    from probes import ber  # noqa: PLC0415 - only these builders need it

    return ber.enumerated(code) + ber.octet_string(b"") + ber.octet_string(b"")


def _message(message_id: int, op: int, code: int) -> bytes:
    from probes import ber  # noqa: PLC0415 - only these builders need it

    if op == 4:
        parts = ber.octet_string(b"") + ber.sequence()
    elif op == 19:
        parts = ber.octet_string(b"ldap://elsewhere/")
    else:
        parts = _result(code)
    body = ber.constructed(ber.application(op), parts)
    return ber.sequence(ber.integer(message_id), body)


@given(
    st.lists(st.tuples(_MESSAGE_IDS, _OPS, st.integers(0, 80)), max_size=20),
)
def test_the_search_follower_takes_any_messages_or_raises_ldap_error(
    messages: list[tuple[int, int, int]],
) -> None:
    replies = ldap.SearchReplies(7)
    for message_id, op, code in messages:
        message = ldap.parse_message(_message(message_id, op, code))
        try:
            reply = replies.take(message)
        except ldap.LdapError:
            return
        if reply is not None:
            assert message.message_id in (0, 7)
            ldap.root_dse_facts(reply.entry)
            return


# SSH: whatever came by a deadline.

_BANNER = b"Welcome\r\nSSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


@given(st.integers(0, len(_BANNER)), st.binary(max_size=300))
def test_any_prefix_judged_at_the_deadline_raises_only_ssh_error(
    cut: int, noise: bytes
) -> None:
    for data in (_BANNER[:cut], noise, noise + _BANNER[:cut]):
        with contextlib.suppress(ssh.SshError):
            found = ssh._at_deadline(data)
            if found is not None:
                assert data.rstrip(b"\r\n").endswith(found.line)


# ICMP: a record with any errno, origin, type and code.


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 3),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=32),
)
def test_any_extended_error_describes_itself(
    errno: int, origin: int, icmp_type: int, code: int, sender: bytes
) -> None:
    data = struct.pack("=IBBBBII", errno, origin, icmp_type, code, 0, 0, 0) + sender
    try:
        report = parse_extended_err(data)
    except IcmpError:
        return
    assert isinstance(report.describe(), str)
    assert isinstance(report.name(), str)
    report.evidence()


# iSCSI: SendTargets text cut anywhere (RFC 7143 13.3).

_SEND_TARGETS = (
    b"TargetName=iqn.1997-05.com.amazon:sgw-12345678-vol1\x00"
    b"TargetAddress=192.0.2.5:3260,1\x00"
    b"TargetName=iqn.1997-05.com.amazon:sgw-12345678-vol2\x00"
    b"TargetAddress=[2001:db8::5]:3260,1\x00"
)


@given(st.integers(0, len(_SEND_TARGETS)), st.binary(max_size=8))
def test_send_targets_text_cut_anywhere_raises_only_iscsi_error(
    cut: int, tail: bytes
) -> None:
    with contextlib.suppress(iscsi_pdu.IscsiError):
        targets = iscsi_pdu.read_send_targets(
            iscsi_pdu.decode_keys(_SEND_TARGETS[:cut] + tail)
        )
        assert len(targets) <= 2 + len(tail)


# ONC RPC: records in any chunking, with any bytes (RFC 5531 11).


@given(st.binary(max_size=600), st.lists(st.integers(1, 64), max_size=40))
def test_a_record_reader_fed_in_any_chunks_raises_only_rpc_error(
    data: bytes, sizes: list[int]
) -> None:
    reader = oncrpc.RecordReader(max_record=256, max_fragments=4)
    at = 0
    with contextlib.suppress(oncrpc.RpcError):
        for size in [*sizes, len(data)]:
            reader.feed(data[at : at + size])
            at += size
            for _ in range(len(data) + 1):
                record = reader.next_record()
                if record is None:
                    break
                assert len(record) <= 256
            assert reader.pending <= len(data)
