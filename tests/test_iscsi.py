"""Tests for probes.iscsi and probes.iscsi_pdu: the codec on captured
bytes, the negotiation as a pure step, the probe on loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes import iscsi
from probes import iscsi_pdu as pdu
from probes.base import (
    Deadline,
    Outcome,
    ProbeRequest,
    ProbeSettings,
    Reason,
    Status,
    Transport,
)

# Captured exchanges. The target is tgt 1.0.85 (Debian 12 package
# 1:1.0.85-1+deb12u1), run as `tgtd -f --iscsi portal=127.0.0.5:3260`,
# reached through a recording TCP relay on 127.0.0.6:3260; the initiator
# is this probe unless said otherwise. REQ is what the initiator sent,
# RSP what tgt answered, numbered by exchange.
#
# OPEN: two targets (an Amazon-style name with an 8 MB file-backed LUN,
# and iqn.2024-01.dev.sgw-reach.lab:plain-disk), no CHAP anywhere. The
# probe's random bytes were RANDOM_OPEN.
OPEN_REQ1 = bytes.fromhex(
    "438100000000007b800833dcc21a000033d35326000100000000000100000000"
    "00000000000000000000000000000000496e69746961746f724e616d653d6971"
    "6e2e323032342d30312e6465762e7367772d72656163683a70726f62652d6232"
    "63363035336200496e69746961746f72416c6961733d7367772d726561636800"
    "53657373696f6e547970653d446973636f7665727900417574684d6574686f64"
    "3d4e6f6e652c434841500000"
)

OPEN_RSP1 = bytes.fromhex(
    "2381000000000027800833dcc21a000033d35326000000000000000000000001"
    "00000002000000000000000000000000546172676574506f7274616c47726f75"
    "705461673d3100417574684d6574686f643d4e6f6e650000"
)

OPEN_REQ2 = bytes.fromhex(
    "4387000000000041800833dcc21a000033d35326000100000000000100000001"
    "000000000000000000000000000000004865616465724469676573743d4e6f6e"
    "6500446174614469676573743d4e6f6e65004d61785265637644617461536567"
    "6d656e744c656e6774683d363535333600000000"
)

OPEN_RSP2 = bytes.fromhex(
    "2387000000000022800833dcc21a010033d35326000000000000000100000001"
    "000000020000000000000000000000004865616465724469676573743d4e6f6e"
    "6500446174614469676573743d4e6f6e65000000"
)

OPEN_REQ3 = bytes.fromhex(
    "0480000000000010000000000000000033d35327ffffffff0000000100000002"
    "0000000000000000000000000000000053656e64546172676574733d416c6c00"
)

OPEN_RSP3 = bytes.fromhex(
    "24800000000000a7000000000000000033d35327ffffffff0000000200000002"
    "000000020000000000000000000000005461726765744e616d653d69716e2e31"
    "3939372d30352e636f6d2e616d617a6f6e3a7367772d31613262336334642d76"
    "6f6c303100546172676574416464726573733d3132372e302e302e353a333236"
    "302c31005461726765744e616d653d69716e2e323032342d30312e6465762e73"
    "67772d72656163682e6c61623a706c61696e2d6469736b005461726765744164"
    "64726573733d3132372e302e302e353a333236302c310000"
)

OPEN_REQ4 = bytes.fromhex(
    "4680000000000000000000000000000033d35328000100000000000200000003"
    "00000000000000000000000000000000"
)

OPEN_RSP4 = bytes.fromhex(
    "2680000000000000000000000000000033d35328000000000000000300000002"
    "00000002000000000000000000000000"
)

SPLIT_REQ1 = bytes.fromhex(
    "438100000000007b8067dfc973e100007b47ec0d000100000000000100000000"
    "00000000000000000000000000000000496e69746961746f724e616d653d6971"
    "6e2e323032342d30312e6465762e7367772d72656163683a70726f62652d3236"
    "33366530666100496e69746961746f72416c6961733d7367772d726561636800"
    "53657373696f6e547970653d446973636f7665727900417574684d6574686f64"
    "3d4e6f6e652c434841500000"
)

SPLIT_RSP1 = bytes.fromhex(
    "23810000000000278067dfc973e100007b47ec0d000000000000000000000001"
    "00000002000000000000000000000000546172676574506f7274616c47726f75"
    "705461673d3100417574684d6574686f643d4e6f6e650000"
)

SPLIT_REQ2 = bytes.fromhex(
    "438700000000003f8067dfc973e100007b47ec0d000100000000000100000001"
    "000000000000000000000000000000004865616465724469676573743d4e6f6e"
    "6500446174614469676573743d4e6f6e65004d61785265637644617461536567"
    "6d656e744c656e6774683d3531320000"
)

SPLIT_RSP2 = bytes.fromhex(
    "23870000000000228067dfc973e101007b47ec0d000000000000000100000001"
    "000000020000000000000000000000004865616465724469676573743d4e6f6e"
    "6500446174614469676573743d4e6f6e65000000"
)

SPLIT_REQ3 = bytes.fromhex(
    "048000000000001000000000000000007b47ec0effffffff0000000100000002"
    "0000000000000000000000000000000053656e64546172676574733d416c6c00"
)

SPLIT_RSP3 = bytes.fromhex(
    "240000000000020000000000000000007b47ec0e000000010000000200000002"
    "000000020000000000000000000000005461726765744e616d653d69716e2e31"
    "3939372d30352e636f6d2e616d617a6f6e3a7367772d31613262336334642d76"
    "6f6c303100546172676574416464726573733d3132372e302e302e353a333236"
    "302c31005461726765744e616d653d69716e2e323032342d30312e6465762e73"
    "67772d72656163682e6c61623a706c61696e2d6469736b005461726765744164"
    "64726573733d3132372e302e302e353a333236302c31005461726765744e616d"
    "653d69716e2e313939372d30352e636f6d2e616d617a6f6e3a7367772d316132"
    "62336334642d7461706564726976652d30330054617267657441646472657373"
    "3d3132372e302e302e353a333236302c31005461726765744e616d653d69716e"
    "2e313939372d30352e636f6d2e616d617a6f6e3a7367772d3161326233633464"
    "2d7461706564726976652d303400546172676574416464726573733d3132372e"
    "302e302e353a333236302c31005461726765744e616d653d69716e2e31393937"
    "2d30352e636f6d2e616d617a6f6e3a7367772d31613262336334642d74617065"
    "64726976652d303500546172676574416464726573733d3132372e302e302e35"
    "3a333236302c31005461726765744e616d653d69716e2e313939372d30352e63"
    "6f6d2e616d617a6f6e3a7367772d31613262336334642d746170656472697665"
    "2d303600546172676574416464726573"
)

SPLIT_REQ4 = bytes.fromhex(
    "048000000000000000000000000000007b47ec0e000000010000000200000003"
    "00000000000000000000000000000000"
)

SPLIT_RSP4 = bytes.fromhex(
    "248000000000001300000000000000007b47ec0effffffff0000000300000003"
    "00000002000000000000000000000000733d3132372e302e302e353a33323630"
    "2c310000"
)

SPLIT_REQ5 = bytes.fromhex(
    "468000000000000000000000000000007b47ec0f000100000000000300000004"
    "00000000000000000000000000000000"
)

SPLIT_RSP5 = bytes.fromhex(
    "268000000000000000000000000000007b47ec0f000000000000000400000003"
    "00000002000000000000000000000000"
)

LAB_RSP3 = bytes.fromhex(
    "248000000000005300000000000000006f9e1bcbffffffff0000000200000002"
    "000000020000000000000000000000005461726765744e616d653d69716e2e32"
    "3032342d30312e6465762e7367772d72656163682e6c61623a706c61696e2d64"
    "69736b00546172676574416464726573733d3132372e302e302e353a33323630"
    "2c310000"
)

CHAP_REQ1 = bytes.fromhex(
    "438100000000007b80cf3383196e00004b9d20d5000100000000000100000000"
    "00000000000000000000000000000000496e69746961746f724e616d653d6971"
    "6e2e323032342d30312e6465762e7367772d72656163683a70726f62652d6638"
    "32613238323800496e69746961746f72416c6961733d7367772d726561636800"
    "53657373696f6e547970653d446973636f7665727900417574684d6574686f64"
    "3d4e6f6e652c434841500000"
)

CHAP_RSP1 = bytes.fromhex(
    "230000000000002780cf3383196e00004b9d20d5000000000000000000000001"
    "00000002000000000000000000000000546172676574506f7274616c47726f75"
    "705461673d3100417574684d6574686f643d434841500000"
)

NONE_ONLY_RSP1 = bytes.fromhex(
    "2300000000000029000000000000000000000007000000000000000000000000"
    "00000000020100000000000000000000546172676574506f7274616c47726f75"
    "705461673d3100417574684d6574686f643d52656a65637400000000"
)

NMAP_REQ1 = bytes.fromhex(
    "038100000000005f400001370000000000000001000100000000000100000001"
    "00000000000000000000000000000000496e69746961746f724e616d653d6971"
    "6e2e313939312d30352e636f6d2e6d6963726f736f66743a6e6d61705f697363"
    "73695f70726f62650053657373696f6e547970653d446973636f766572790041"
    "7574684d6574686f643d4e6f6e650000"
)

NMAP_RSP1 = bytes.fromhex(
    "3f800400000000300000000000000000ffffffff000000000000000000000000"
    "00000000000000000000000000000000038100000000005f4000013700000000"
    "0000000100010000000000010000000100000000000000000000000000000000"
)

RANDOM_OPEN = bytes.fromhex("b2c6053b0833dcc21a33d35326")
OPEN = [
    (OPEN_REQ1, OPEN_RSP1),
    (OPEN_REQ2, OPEN_RSP2),
    (OPEN_REQ3, OPEN_RSP3),
    (OPEN_REQ4, OPEN_RSP4),
]
# SPLIT: six targets, the probe declaring MaxRecvDataSegmentLength=512
# instead of 65536. tgt cuts its SendTargets answer at 512 bytes in the
# middle of a TargetAddress, with F clear and a Target Transfer Tag but
# without the C bit RFC 7143 11.11.2 asks for; the second Text Request
# fetches the rest.
RANDOM_SPLIT = bytes.fromhex("2636e0fa67dfc973e17b47ec0d")
SPLIT = [
    (SPLIT_REQ1, SPLIT_RSP1),
    (SPLIT_REQ2, SPLIT_RSP2),
    (SPLIT_REQ3, SPLIT_RSP3),
    (SPLIT_REQ4, SPLIT_RSP4),
    (SPLIT_REQ5, SPLIT_RSP5),
]
SPLIT_KEYS = (("MaxRecvDataSegmentLength", "512"),)
# LAB: the same, with only the non-Amazon target left.
# CHAP: discovery CHAP set with `tgtadm --op bind --mode account --user
# NAME` (no --tid binds the account to discovery sessions); tgt answers
# the offer None,CHAP with AuthMethod=CHAP, T clear, status success.
RANDOM_CHAP = bytes.fromhex("f82a2828cf3383196e4b9d20d5")
# NONE_ONLY: the same tgt, when a test client offered AuthMethod=None
# alone (ITT 7): status 0201 and AuthMethod=Reject.
# NMAP: nmap 7.93's iscsi-info script against the OPEN setup. Its Login
# Request lacks the immediate bit RFC 7143 11.12 fixes at 1, and tgt
# answers with a Reject (reason protocol-error) holding that header.


def plan(random: bytes) -> iscsi._Plan:
    return iscsi._Plan.fresh(random)


# Codec: our requests, byte for byte.


def test_the_first_login_request_matches_the_capture() -> None:
    p = plan(RANDOM_OPEN)
    built = pdu.login_request(
        p.session,
        itt=p.itt,
        cmd_sn=1,
        exp_stat_sn=0,
        csg=pdu.Stage.SECURITY_NEGOTIATION,
        nsg=pdu.Stage.LOGIN_OPERATIONAL_NEGOTIATION,
        transit=True,
        keys=iscsi.first_keys(p.name),
    )
    assert built == OPEN_REQ1
    # RFC 7143 11.12: immediate bit and opcode 0x03; T, CSG 0, NSG 1.
    assert built[:2] == b"\x43\x81"
    assert built[8:14] == bytes.fromhex("800833dcc21a")
    assert p.name == "iqn.2024-01.dev.sgw-reach:probe-b2c6053b"
    assert pdu.is_iqn(p.name)
    assert len(built) % 4 == 0


def test_text_and_logout_requests_match_the_capture() -> None:
    p = plan(RANDOM_OPEN)
    text = pdu.text_request(
        itt=p.itt + 1,
        ttt=pdu.RESERVED_TAG,
        cmd_sn=1,
        exp_stat_sn=2,
        keys=(("SendTargets", "All"),),
    )
    assert text == OPEN_REQ3
    logout = pdu.logout_request(p.session, itt=p.itt + 2, cmd_sn=2, exp_stat_sn=3)
    assert logout == OPEN_REQ4


def test_a_random_isid_is_of_the_random_type() -> None:
    isid = pdu.random_isid(b"\x01\x02\x03\x04\x05")
    # RFC 7143 11.12.5: T = 10b, A = 0.
    assert isid == b"\x80\x01\x02\x03\x04\x05"
    with pytest.raises(pdu.IscsiError):
        pdu.random_isid(b"\x01")
    with pytest.raises(pdu.IscsiError):
        pdu.Session(b"\x80")


def test_fresh_plans_differ() -> None:
    first, second = iscsi._Plan.fresh(), iscsi._Plan.fresh()
    assert first.name != second.name
    assert first.session.isid != second.session.isid
    assert first.session.isid[0] == 0x80
    assert first.itt != pdu.RESERVED_TAG


@pytest.mark.parametrize(("length", "padding"), [(0, 0), (1, 3), (4, 0), (7, 1)])
def test_pad(length: int, padding: int) -> None:
    assert pdu.pad(length) == padding


def test_frame_sets_the_data_segment_length_and_pads() -> None:
    framed = pdu.frame(bytes(48), b"abcde")
    assert framed[5:8] == b"\x00\x00\x05"
    assert framed[48:] == b"abcde\x00\x00\x00"
    with pytest.raises(pdu.IscsiError):
        pdu.frame(bytes(47))


def test_encode_keys_refuses_bad_keys() -> None:
    assert pdu.encode_keys([("A", "1"), ("B.c", "x y")]) == b"A=1\x00B.c=x y\x00"
    with pytest.raises(pdu.IscsiError):
        pdu.encode_keys([("bad key", "1")])
    with pytest.raises(pdu.IscsiError):
        pdu.encode_keys([("Key", "a\x00b")])


# Codec: tgt's answers.


def test_tgt_login_responses() -> None:
    first = pdu.read_login_response(pdu.parse_pdu(OPEN_RSP1))
    assert (first.transit, first.more, first.csg, first.nsg) == (True, False, 0, 1)
    assert first.status == pdu.LoginStatus.SUCCESS
    assert first.itt == 0x33D35326
    assert first.isid == bytes.fromhex("800833dcc21a")
    assert pdu.decode_keys(pdu.parse_pdu(OPEN_RSP1).data) == (
        ("TargetPortalGroupTag", "1"),
        ("AuthMethod", "None"),
    )
    second = pdu.read_login_response(pdu.parse_pdu(OPEN_RSP2))
    assert (second.transit, second.csg, second.nsg) == (True, 1, 3)
    # tgt writes its dummy TSIH 1 in host byte order: 0x0100 on the wire.
    assert (second.tsih, second.stat_sn) == (256, 1)


def test_tgt_send_targets_answer() -> None:
    text = pdu.read_text_response(pdu.parse_pdu(OPEN_RSP3))
    assert (text.final, text.more, text.ttt) == (True, False, pdu.RESERVED_TAG)
    targets = pdu.read_send_targets(pdu.decode_keys(text.data))
    assert [t.name for t in targets] == [
        "iqn.1997-05.com.amazon:sgw-1a2b3c4d-vol01",
        "iqn.2024-01.dev.sgw-reach.lab:plain-disk",
    ]
    assert [t.amazon for t in targets] == [True, False]
    assert targets[0].portals == (pdu.Portal("127.0.0.5", 3260, 1),)
    assert str(targets[0].portals[0]) == "127.0.0.5:3260,1"


def test_tgt_split_answer_joins_into_six_targets() -> None:
    first = pdu.read_text_response(pdu.parse_pdu(SPLIT_RSP3))
    rest = pdu.read_text_response(pdu.parse_pdu(SPLIT_RSP4))
    assert (first.final, first.more, first.ttt) == (False, False, 1)
    assert len(first.data) == 512
    assert rest.final
    assert first.data.endswith(b"TargetAddres")
    with pytest.raises(pdu.IscsiError):
        pdu.decode_keys(first.data)
    targets = pdu.read_send_targets(pdu.decode_keys(first.data + rest.data))
    assert len(targets) == 6
    assert all(t.portals for t in targets)


def test_tgt_logout_response() -> None:
    assert pdu.read_logout_response(pdu.parse_pdu(OPEN_RSP4)) == 0


def test_tgt_asks_for_chap() -> None:
    response = pdu.read_login_response(pdu.parse_pdu(CHAP_RSP1))
    assert (response.transit, response.status) == (False, 0)
    keys = pdu.decode_keys(pdu.parse_pdu(CHAP_RSP1).data)
    assert pdu.first_value(keys, "AuthMethod") == "CHAP"


def test_tgt_refuses_none_alone_with_authentication_failure() -> None:
    response = pdu.read_login_response(pdu.parse_pdu(NONE_ONLY_RSP1))
    assert response.status == pdu.LoginStatus.AUTHENTICATION_FAILURE
    assert (response.status_class, response.status_detail) == (2, 1)
    assert response.itt == 7
    # tgt leaves the ISID out of a failed response.
    assert response.isid == bytes(6)
    assert iscsi.status_evidence(response.status) == {
        "class": "initiator-error",
        "detail": "authentication-failure",
        "code": "0201",
    }


def test_tgt_rejects_nmaps_login_without_the_immediate_bit() -> None:
    assert NMAP_REQ1[0] == 0x03
    reject = pdu.read_reject(pdu.parse_pdu(NMAP_RSP1))
    assert reject.reason == pdu.RejectReason.PROTOCOL_ERROR
    assert reject.rejected_itt == 1
    assert reject.rejected_opcode == pdu.Opcode.LOGIN_REQUEST
    assert pdu.parse_pdu(NMAP_RSP1).header.itt == pdu.RESERVED_TAG


def test_a_reject_without_the_rejected_header() -> None:
    header = bytearray(48)
    header[0:3] = b"\x3f\x80\x09"
    reject = pdu.read_reject(pdu.parse_pdu(bytes(header)))
    assert (reject.reason, reject.rejected_itt) == (9, None)


@pytest.mark.parametrize(
    "data",
    [
        OPEN_RSP1,
        CHAP_RSP1,
        NONE_ONLY_RSP1,
        NMAP_RSP1,
        b"#",
        b"?",
        b"",
    ],
)
def test_login_answers_that_may_be_iscsi(data: bytes) -> None:
    pdu.check_login_answer(data)


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
        b"HTTP/1.1 400 Bad Request\r\n",
        b"\x15\x03\x03\x00\x02\x02\x32",
        b"220 mail.example ESMTP\r\n",
        b"# a comment\n",
        b"?0",
        OPEN_RSP3,
        OPEN_REQ1,
    ],
)
def test_login_answers_that_are_not_iscsi(data: bytes) -> None:
    with pytest.raises(pdu.NotIscsiError):
        pdu.check_login_answer(data)


def test_a_huge_data_segment_is_refused_from_the_header() -> None:
    header = bytearray(OPEN_RSP1[:48])
    header[5:8] = b"\x01\x00\x01"
    with pytest.raises(pdu.IscsiError) as caught:
        pdu.parse_header(bytes(header))
    assert not isinstance(caught.value, pdu.NotIscsiError)
    assert "65537" in str(caught.value)


def test_the_ahs_is_skipped() -> None:
    header = bytearray(48)
    header[0] = pdu.Opcode.TEXT_RESPONSE
    header[4] = 2
    header[5:8] = b"\x00\x00\x03"
    wire = bytes(header) + b"A" * 8 + b"k=v\x00"
    parsed = pdu.parse_pdu(wire)
    assert parsed.data == b"k=v"
    with pytest.raises(pdu.IscsiError):
        pdu.parse_pdu(wire[:-1])


def test_opcodes_and_flags_are_checked() -> None:
    with pytest.raises(pdu.IscsiError):
        pdu.read_text_response(pdu.parse_pdu(OPEN_RSP1))
    with pytest.raises(pdu.IscsiError):
        pdu.parse_header(OPEN_REQ4)
    both = bytearray(OPEN_RSP1)
    both[1] |= 0x40
    with pytest.raises(pdu.IscsiError):
        pdu.read_login_response(pdu.parse_pdu(bytes(both)))


@pytest.mark.parametrize(
    ("data", "keys"),
    [
        (b"", ()),
        (b"\x00\x00", ()),
        (b"A=1\x00B=\x00", (("A", "1"), ("B", ""))),
        (b"A=x=y\x00\x00\x00", (("A", "x=y"),)),
        ("T=caf\u00e9\x00".encode(), (("T", "caf\u00e9"),)),
    ],
)
def test_decode_keys(data: bytes, keys: pdu.Keys) -> None:
    assert pdu.decode_keys(data) == keys


@pytest.mark.parametrize(
    "data",
    [b"novalue\x00", b"A=1\x00\x00B=2\x00", b"=1\x00", b"K\xff=1", b"K=\xff", b"a b=1"],
)
def test_decode_keys_refuses(data: bytes) -> None:
    with pytest.raises(pdu.IscsiError):
        pdu.decode_keys(data)


@pytest.mark.parametrize(
    ("value", "portal"),
    [
        ("10.0.0.7:3260,1", pdu.Portal("10.0.0.7", 3260, 1)),
        ("10.0.0.7", pdu.Portal("10.0.0.7", 3260, None)),
        ("gw.example:3261", pdu.Portal("gw.example", 3261, None)),
        ("[fe80::1]:3260,2", pdu.Portal("fe80::1", 3260, 2)),
        ("[2001:db8::5]", pdu.Portal("2001:db8::5", 3260, None)),
    ],
)
def test_parse_portal(value: str, portal: pdu.Portal) -> None:
    assert pdu.parse_portal(value) == portal


def test_portals_print_as_on_the_wire() -> None:
    assert str(pdu.Portal("fe80::1", 3260, 2)) == "[fe80::1]:3260,2"
    assert str(pdu.Portal("gw", 3261, None)) == "gw:3261"


@pytest.mark.parametrize(
    "value",
    ["", ":3260", "h:port", "h:70000", "h:3260,x", "[fe80::1", "[::1]x", "h:\u0663"],
)
def test_parse_portal_refuses(value: str) -> None:
    with pytest.raises(pdu.IscsiError):
        pdu.parse_portal(value)


def test_an_address_before_any_name_is_refused() -> None:
    with pytest.raises(pdu.IscsiError):
        pdu.read_send_targets((("TargetAddress", "10.0.0.1:3260,1"),))


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("iqn.1997-05.com.amazon:sgw-1a2b3c4d-vol01", True),
        ("iqn.2024-01.dev.sgw-reach", True),
        ("iqn.97-05.com.amazon:x", False),
        ("IQN.1997-05.com.amazon:x", False),
        ("eui.02004567A425678D", False),
    ],
)
def test_is_iqn(name: str, ok: bool) -> None:
    assert pdu.is_iqn(name) is ok


@pytest.mark.parametrize(
    ("received", "answers"),
    [
        ((("HeaderDigest", "None"),), ()),
        ((("TargetPortalGroupTag", "1"), ("TargetAlias", "gw")), ()),
        ((("DefaultTime2Wait", "2"),), (("DefaultTime2Wait", "2"),)),
        ((("IFMarker", "No"),), (("IFMarker", "No"),)),
        ((("ErrorRecoveryLevel", "Reject"),), ()),
        ((("X-com.example.Thing", "1"),), (("X-com.example.Thing", "NotUnderstood"),)),
        ((("iSCSIProtocolLevel", "1"),), (("iSCSIProtocolLevel", "NotUnderstood"),)),
    ],
)
def test_answer_offers(received: pdu.Keys, answers: pdu.Keys) -> None:
    assert pdu.answer_offers(iscsi.OPERATIONAL_KEYS, received) == answers


def test_a_list_offer_is_answered_with_its_first_value() -> None:
    offered = (("DataDigest", "CRC32C,None"),)
    assert pdu.answer_offers((), offered) == (("DataDigest", "CRC32C"),)


@pytest.mark.parametrize(
    ("enum_type", "value", "name"),
    [
        (pdu.LoginStatus, 0x0209, "session-type-not-supported"),
        (pdu.LoginStatus, 0x0299, "0x299"),
        (pdu.StatusClass, 3, "target-error"),
        (pdu.RejectReason, 4, "protocol-error"),
    ],
)
def test_spec_name(enum_type: type[IntEnum], value: int, name: str) -> None:
    assert pdu.spec_name(enum_type, value) == name


# The negotiation, one Login Response at a time.


def login_answer(raw: bytes) -> tuple[pdu.LoginResponse, bytes]:
    parsed = pdu.parse_pdu(raw)
    return pdu.read_login_response(parsed), parsed.data


def test_login_steps_of_the_tgt_capture() -> None:
    state = iscsi.Negotiation(sent=iscsi.first_keys("iqn.2024-01.x:y"))
    step = iscsi.login_step(state, *login_answer(OPEN_RSP1))
    assert step == iscsi.Continue(
        pdu.Stage.LOGIN_OPERATIONAL_NEGOTIATION,
        pdu.Stage.FULL_FEATURE_PHASE,
        True,
        iscsi.OPERATIONAL_KEYS,
    )
    done = iscsi.login_step(state, *login_answer(OPEN_RSP2))
    assert isinstance(done, iscsi.LoggedIn)
    assert done.tsih == 256


def test_login_step_chap() -> None:
    state = iscsi.Negotiation()
    step = iscsi.login_step(state, *login_answer(CHAP_RSP1))
    assert step == iscsi.AuthRequired("CHAP")


def test_login_step_refused() -> None:
    step = iscsi.login_step(iscsi.Negotiation(), *login_answer(NONE_ONLY_RSP1))
    assert isinstance(step, iscsi.Refused)
    assert step.keys == (("TargetPortalGroupTag", "1"), ("AuthMethod", "Reject"))


def response(
    opcode: int,
    flags: int = 0x80,
    *,
    itt: int,
    data: bytes = b"",
    status: int = 0,
    ttt: int = pdu.RESERVED_TAG,
    stat_sn: int = 0,
    tsih: int = 0,
    code: int = 0,
) -> bytes:
    """A target's PDU as RFC 7143 11.11 to 11.19 lay them out."""
    header = bytearray(48)
    header[0], header[1], header[2] = opcode, flags, code
    header[14:16] = tsih.to_bytes(2, "big")
    header[16:20] = itt.to_bytes(4, "big")
    if opcode == pdu.Opcode.TEXT_RESPONSE:
        header[20:24] = ttt.to_bytes(4, "big")
    header[24:28] = stat_sn.to_bytes(4, "big")
    header[36:38] = status.to_bytes(2, "big")
    return pdu.frame(bytes(header), data)


def test_login_step_answers_offers_and_gathers_continued_text() -> None:
    state = iscsi.Negotiation(
        stage=pdu.Stage.LOGIN_OPERATIONAL_NEGOTIATION, sent=iscsi.OPERATIONAL_KEYS
    )
    part = response(0x23, 0x44, itt=1, data=b"HeaderDigest=None\x00Default")
    step = iscsi.login_step(state, *login_answer(part))
    assert step == iscsi.Continue(
        pdu.Stage.LOGIN_OPERATIONAL_NEGOTIATION, pdu.Stage.FULL_FEATURE_PHASE, False, ()
    )
    rest = response(0x23, 0x04, itt=1, data=b"Time2Wait=2\x00")
    step = iscsi.login_step(state, *login_answer(rest))
    assert step == iscsi.Continue(
        pdu.Stage.LOGIN_OPERATIONAL_NEGOTIATION,
        pdu.Stage.FULL_FEATURE_PHASE,
        True,
        (("DefaultTime2Wait", "2"),),
    )


@pytest.mark.parametrize(
    "flags",
    [
        0x87,  # an answer for the operational stage while in security
        0x82,  # a move to the reserved stage 2
        0x80,  # a move back to the security stage
    ],
)
def test_login_step_refuses_wrong_stages(flags: int) -> None:
    state = iscsi.Negotiation()
    with pytest.raises(pdu.IscsiError):
        iscsi.login_step(state, *login_answer(response(0x23, flags, itt=1)))


@given(
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.binary(max_size=80),
    st.sampled_from(list(pdu.Stage)),
)
def test_login_step_never_raises_other_errors(
    flags: int, status: int, data: bytes, stage: pdu.Stage
) -> None:
    state = iscsi.Negotiation(stage=stage)
    raw = response(0x23, flags, itt=1, data=data, status=status)
    with contextlib.suppress(pdu.IscsiError):
        iscsi.login_step(state, *login_answer(raw))


# Property tests: random and truncated input raise only IscsiError.

CAPTURED = [
    OPEN_RSP1,
    OPEN_RSP2,
    OPEN_RSP3,
    OPEN_RSP4,
    SPLIT_RSP3,
    SPLIT_RSP4,
    LAB_RSP3,
    CHAP_RSP1,
    NONE_ONLY_RSP1,
    NMAP_RSP1,
]
READERS: list[Callable[[pdu.Pdu], object]] = [
    pdu.read_login_response,
    pdu.read_text_response,
    pdu.read_reject,
    pdu.read_logout_response,
]


def read_everything(wire: bytes) -> None:
    for check in (pdu.check_login_answer, pdu.decode_keys):
        with contextlib.suppress(pdu.IscsiError):
            check(wire)
    with contextlib.suppress(pdu.IscsiError):
        parsed = pdu.parse_pdu(wire)
        for reader in READERS:
            with contextlib.suppress(pdu.IscsiError):
                reader(parsed)
        keys = pdu.decode_keys(parsed.data)
        pdu.read_send_targets(keys)


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_iscsi_error(wire: bytes) -> None:
    read_everything(wire)


@given(st.sampled_from(CAPTURED), st.data())
def test_truncated_captures_raise_only_iscsi_error(
    wire: bytes, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(pdu.IscsiError):
        pdu.parse_pdu(wire[:cut])
    read_everything(wire[:cut])


@given(st.sampled_from(CAPTURED), st.integers(0, 47), st.integers(0, 255))
def test_one_changed_header_byte_raises_only_iscsi_error(
    wire: bytes, at: int, value: int
) -> None:
    changed = bytearray(wire)
    changed[at] = value
    read_everything(bytes(changed))


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z0-9.+@_\-]{1,63}", fullmatch=True),
            st.text(
                st.characters(codec="utf-8", exclude_characters="\x00"),
                max_size=40,
            ),
        ),
        max_size=6,
    )
)
def test_keys_round_trip(keys: list[tuple[str, str]]) -> None:
    assert pdu.decode_keys(pdu.encode_keys(keys)) == tuple(keys)


@given(st.text(max_size=40))
def test_random_portals_raise_only_iscsi_error(value: str) -> None:
    with contextlib.suppress(pdu.IscsiError):
        portal = pdu.parse_portal(value)
        assert 0 <= portal.port <= 0xFFFF


# The probe against small servers on loopback.

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Handler = Callable[[Reader, Writer], Awaitable[None]]


@dataclass(frozen=True)
class Request:
    """A PDU the probe sent, as a fake target reads it."""

    raw: bytes
    keys: pdu.Keys

    @property
    def opcode(self) -> int:
        return self.raw[0] & 0x3F

    @property
    def flags(self) -> int:
        return self.raw[1]

    @property
    def itt(self) -> int:
        return int.from_bytes(self.raw[16:20], "big")

    @property
    def ttt(self) -> int:
        return int.from_bytes(self.raw[20:24], "big")


async def read_request(reader: Reader) -> Request | None:
    try:
        header = await reader.readexactly(48)
        size = int.from_bytes(header[5:8], "big")
        data = await reader.readexactly(size + pdu.pad(size))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return Request(header + data, pdu.decode_keys(data[:size]))


def request(port: int, seconds: float) -> ProbeRequest:
    return ProbeRequest(
        host="127.0.0.1",
        port=port,
        transport=Transport.TCP,
        deadline=Deadline.after(seconds),
        settings=ProbeSettings(),
        address="127.0.0.1",
    )


def run(handler: Handler, seconds: float = 2.0) -> Outcome:
    async def main() -> Outcome:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            outcome = await iscsi.probe(request(port, seconds))
            # Let the server's handler see what the probe did last.
            await asyncio.sleep(0.05)
        finally:
            server.close()
        return outcome

    return asyncio.run(main())


@pytest.fixture
def fixed_plan(monkeypatch: pytest.MonkeyPatch) -> Callable[[bytes], None]:
    """Make the probe use given random bytes, to send captured requests."""

    def use(random: bytes) -> None:
        fixed = plan(random)
        monkeypatch.setattr(iscsi._Plan, "fresh", lambda: fixed)

    return use


def replay(exchange: list[tuple[bytes, bytes]], heard: list[bytes]) -> Handler:
    """A target that answers each request with the captured answer."""

    async def handler(reader: Reader, writer: Writer) -> None:
        for _expected, answer in exchange:
            got = await read_request(reader)
            if got is None:
                break
            heard.append(got.raw)
            writer.write(answer)
            await writer.drain()
        heard.append(await reader.read(100))
        writer.close()

    return handler


def test_the_tgt_discovery_replays_byte_for_byte(
    fixed_plan: Callable[[bytes], None],
) -> None:
    fixed_plan(RANDOM_OPEN)
    heard: list[bytes] = []
    outcome = run(replay(OPEN, heard))
    assert outcome.status is Status.PASS, outcome.detail
    assert heard == [req for req, _rsp in OPEN] + [b""]
    assert "lists 1 Storage Gateway target" in outcome.detail
    evidence = outcome.evidence
    assert evidence["targets"] == [
        {
            "name": "iqn.1997-05.com.amazon:sgw-1a2b3c4d-vol01",
            "portals": ["127.0.0.5:3260,1"],
        },
        {
            "name": "iqn.2024-01.dev.sgw-reach.lab:plain-disk",
            "portals": ["127.0.0.5:3260,1"],
        },
    ]
    assert evidence["amazon_targets"] is True
    assert evidence["chap_required"] is False
    assert evidence["tsih"] == 256
    assert evidence["logged_out"] is True
    assert evidence["status"] == {
        "class": "success",
        "detail": "success",
        "code": "0000",
    }
    assert evidence["initiator_name"] == "iqn.2024-01.dev.sgw-reach:probe-b2c6053b"
    assert isinstance(evidence["connect_ms"], float)
    assert isinstance(evidence["rtt_ms"], float)
    assert outcome.address == "127.0.0.1"


def test_the_split_tgt_answer_replays_byte_for_byte(
    fixed_plan: Callable[[bytes], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed_plan(RANDOM_SPLIT)
    monkeypatch.setattr(
        iscsi, "OPERATIONAL_KEYS", (*iscsi.OPERATIONAL_KEYS[:2], *SPLIT_KEYS)
    )
    heard: list[bytes] = []
    outcome = run(replay(SPLIT, heard))
    assert outcome.status is Status.PASS, outcome.detail
    assert heard == [req for req, _rsp in SPLIT] + [b""]
    targets = outcome.evidence["targets"]
    assert isinstance(targets, list)
    assert len(targets) == 6


def test_tgt_asking_for_chap_passes_without_going_on(
    fixed_plan: Callable[[bytes], None],
) -> None:
    fixed_plan(RANDOM_CHAP)
    heard: list[bytes] = []
    outcome = run(replay([(CHAP_REQ1, CHAP_RSP1)], heard))
    assert outcome.status is Status.PASS, outcome.detail
    assert heard == [CHAP_REQ1, b""]
    assert "CHAP required" in outcome.detail
    assert outcome.evidence["chap_required"] is True
    assert outcome.evidence["auth_method"] == "CHAP"
    assert outcome.evidence["targets"] == []


def answering(
    respond: Callable[[Request, int], list[bytes] | None],
    heard: list[Request] | None = None,
) -> Handler:
    """A target that calls ``respond(request, stat_sn)`` for each request
    and writes what it returns; None closes the connection."""

    async def handler(reader: Reader, writer: Writer) -> None:
        stat_sn = 0
        while (got := await read_request(reader)) is not None:
            if heard is not None:
                heard.append(got)
            answers = respond(got, stat_sn)
            if answers is None:
                break
            for answer in answers:
                writer.write(answer)
                stat_sn += 1
            await writer.drain()
        writer.close()

    return handler


TARGETS = (
    b"TargetName=iqn.1997-05.com.amazon:sgw-12345678-vol1\x00"
    b"TargetAddress=10.0.0.9:3260,1\x00"
)


def standard(req: Request, stat_sn: int, *, text: bytes = TARGETS) -> list[bytes]:
    """A discovery target without CHAP, the way tgt behaves."""
    if req.opcode == pdu.Opcode.LOGIN_REQUEST and req.flags & 0x0C == 0:
        keys = b"AuthMethod=None\x00"
        return [response(0x23, 0x81, itt=req.itt, data=keys, stat_sn=stat_sn)]
    if req.opcode == pdu.Opcode.LOGIN_REQUEST:
        return [response(0x23, 0x87, itt=req.itt, stat_sn=stat_sn, tsih=9)]
    if req.opcode == pdu.Opcode.TEXT_REQUEST:
        return [response(0x24, itt=req.itt, data=text, stat_sn=stat_sn)]
    return [response(0x26, itt=req.itt, stat_sn=stat_sn)]


def test_a_synthetic_target_passes_and_sequence_numbers_follow() -> None:
    heard: list[Request] = []
    outcome = run(answering(standard, heard))
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.evidence["tsih"] == 9
    assert [r.opcode for r in heard] == [3, 3, 4, 6]
    cmd_sn = [int.from_bytes(r.raw[24:28], "big") for r in heard]
    exp_stat_sn = [int.from_bytes(r.raw[28:32], "big") for r in heard]
    # RFC 7143 4.2.2.1: immediate PDUs do not advance CmdSN; the Text
    # Request does.
    assert cmd_sn == [1, 1, 1, 2]
    assert exp_stat_sn == [0, 1, 2, 3]
    # One task tag for the whole login, a new one per later task.
    assert heard[0].itt == heard[1].itt != heard[2].itt != heard[3].itt
    assert heard[0].keys[0][0] == "InitiatorName"
    assert dict(heard[0].keys)["AuthMethod"] == "None,CHAP"
    assert dict(heard[1].keys)["MaxRecvDataSegmentLength"] == "65536"


def test_targets_without_amazon_names_pass_and_say_so() -> None:
    text = b"TargetName=iqn.2003-01.org.linux-iscsi.host:disk\x00"
    outcome = run(answering(lambda r, n: standard(r, n, text=text)))
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.evidence["amazon_targets"] is False
    assert "none of its 1 target(s) is a Storage Gateway's" in outcome.detail
    assert outcome.evidence["targets"] == [
        {"name": "iqn.2003-01.org.linux-iscsi.host:disk", "portals": []}
    ]


def test_no_targets_at_all_passes_and_says_so() -> None:
    outcome = run(answering(lambda r, n: standard(r, n, text=b"")))
    assert outcome.status is Status.PASS, outcome.detail
    assert "lists no targets" in outcome.detail
    assert outcome.evidence["amazon_targets"] is False


def test_sendtargets_refused_is_a_protocol_error() -> None:
    text = b"SendTargets=Reject\x00"
    outcome = run(answering(lambda r, n: standard(r, n, text=text)))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "SendTargets=Reject" in outcome.detail


def refusing(status: int, data: bytes = b"") -> Handler:
    def respond(req: Request, stat_sn: int) -> list[bytes]:
        return [response(0x23, 0, itt=req.itt, status=status, data=data)]

    return answering(respond)


def test_an_authentication_failure_means_chap_required() -> None:
    outcome = run(refusing(0x0201, b"AuthMethod=Reject\x00"))
    assert outcome.status is Status.PASS, outcome.detail
    assert "CHAP required" in outcome.detail
    assert outcome.evidence["chap_required"] is True
    assert outcome.evidence["status"] == {
        "class": "initiator-error",
        "detail": "authentication-failure",
        "code": "0201",
    }


def test_the_captured_authentication_failure_passes() -> None:
    def respond(req: Request, stat_sn: int) -> list[bytes]:
        answer = bytearray(NONE_ONLY_RSP1)
        answer[16:20] = req.raw[16:20]
        return [bytes(answer)]

    outcome = run(answering(respond))
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.evidence["chap_required"] is True


def test_an_authorization_failure_passes_without_chap() -> None:
    outcome = run(refusing(0x0202))
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.evidence["chap_required"] is False
    assert "refuses this probe's initiator name" in outcome.detail


def test_another_method_than_chap_is_named() -> None:
    def respond(req: Request, stat_sn: int) -> list[bytes]:
        return [response(0x23, 0, itt=req.itt, data=b"AuthMethod=SRP\x00")]

    outcome = run(answering(respond))
    assert outcome.status is Status.PASS
    assert outcome.evidence["chap_required"] is False
    assert "authentication (SRP)" in outcome.detail


def test_a_target_taking_neither_method_says_so() -> None:
    def respond(req: Request, stat_sn: int) -> list[bytes]:
        return [response(0x23, 0, itt=req.itt, data=b"AuthMethod=Reject\x00")]

    outcome = run(answering(respond))
    assert outcome.status is Status.PASS
    assert outcome.evidence["chap_required"] is False
    assert "neither AuthMethod None nor CHAP" in outcome.detail


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (0x0209, "session-type-not-supported"),
        (0x0200, "initiator-error"),
        (0x0301, "service-unavailable"),
        (0x0399, "0x399"),
    ],
)
def test_other_statuses_are_protocol_errors(status: int, name: str) -> None:
    outcome = run(refusing(status))
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.PROTOCOL_ERROR)
    assert name in outcome.detail
    evidence_status = outcome.evidence["status"]
    assert isinstance(evidence_status, dict)
    assert evidence_status["detail"] == name
    assert evidence_status["code"] == f"{status:04x}"
    assert outcome.remedy


def test_a_redirect_passes_and_names_where() -> None:
    outcome = run(refusing(0x0101, b"TargetAddress=10.1.1.1:3260,1\x00"))
    assert outcome.status is Status.PASS, outcome.detail
    assert "10.1.1.1:3260,1" in outcome.detail
    assert outcome.evidence["redirect"] == "10.1.1.1:3260,1"


def test_the_captured_reject_is_a_protocol_error() -> None:
    def respond(req: Request, stat_sn: int) -> list[bytes]:
        answer = bytearray(NMAP_RSP1)
        answer[48 + 16 : 48 + 20] = req.raw[16:20]
        return [bytes(answer)]

    outcome = run(answering(respond))
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.PROTOCOL_ERROR)
    assert outcome.evidence["reject_reason"] == "protocol-error"
    assert "rejected the login request" in outcome.detail


def test_a_reject_of_another_task_is_a_protocol_error() -> None:
    outcome = run(answering(lambda r, n: [NMAP_RSP1] if r.opcode == 3 else None))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "never sent" in outcome.detail


def sends(*chunks: bytes, hold: float = 0.0, listen: bool = False) -> Handler:
    """A server that writes ``chunks`` at once (or after reading a
    little when ``listen``), then keeps the connection for ``hold`` s."""

    async def handler(reader: Reader, writer: Writer) -> None:
        if listen:
            await reader.read(10)
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        await asyncio.sleep(hold)
        writer.close()

    return handler


def test_an_ssh_banner_first_is_the_wrong_protocol() -> None:
    banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
    outcome = run(sends(banner, hold=5), seconds=3)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.WRONG_PROTOCOL)
    assert outcome.evidence["first_bytes"] == (
        "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\\r\\n"
    )
    assert "not iSCSI" in outcome.detail
    assert outcome.remedy


def test_an_http_answer_is_the_wrong_protocol() -> None:
    reply = b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n"
    outcome = run(sends(reply, listen=True))
    assert outcome.reason is Reason.WRONG_PROTOCOL
    first = outcome.evidence["first_bytes"]
    assert isinstance(first, str)
    assert first.startswith("HTTP/1.1 400")


def test_a_close_without_an_answer_is_the_wrong_protocol() -> None:
    outcome = run(sends(listen=True))
    assert outcome.reason is Reason.WRONG_PROTOCOL
    assert "closed the connection without an iSCSI answer" in outcome.detail
    assert outcome.evidence["first_bytes"] == ""


def test_a_few_plausible_bytes_then_silence_is_the_wrong_protocol() -> None:
    outcome = run(sends(b"#\x00", hold=2), seconds=0.5)
    assert outcome.reason is Reason.WRONG_PROTOCOL
    assert outcome.evidence["first_bytes"] == "#\\x00"


def test_silence_after_connect_is_a_timeout() -> None:
    outcome = run(sends(hold=2), seconds=0.5)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.TIMEOUT)
    assert "opened but no iSCSI reply" in outcome.detail
    assert outcome.evidence["step"] == "login"


def test_silence_after_the_login_names_the_step() -> None:
    def respond(req: Request, stat_sn: int) -> list[bytes]:
        return [] if req.opcode == pdu.Opcode.TEXT_REQUEST else standard(req, stat_sn)

    outcome = run(answering(respond), seconds=0.5)
    assert outcome.reason is Reason.TIMEOUT
    assert "stopped answering during SendTargets" in outcome.detail


def test_a_huge_data_segment_is_refused_without_waiting() -> None:
    header = bytearray(response(0x23, 0x81, itt=0))
    header[5:8] = b"\xff\xff\xff"
    loop_time: list[float] = []

    async def timed() -> Outcome:
        server = await asyncio.start_server(
            sends(bytes(header), hold=5), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        started = asyncio.get_running_loop().time()
        try:
            return await iscsi.probe(request(port, 3))
        finally:
            loop_time.append(asyncio.get_running_loop().time() - started)
            server.close()

    outcome = asyncio.run(timed())
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "16777215" in outcome.detail
    assert loop_time[0] < 1.0


def test_an_answer_for_another_task_is_a_protocol_error() -> None:
    def respond(req: Request, stat_sn: int) -> list[bytes]:
        return [response(0x23, 0x81, itt=req.itt ^ 1)]

    outcome = run(answering(respond))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "an answer for task" in outcome.detail


def test_unsolicited_pdus_are_skipped_within_bounds() -> None:
    ping = response(0x20, itt=pdu.RESERVED_TAG)

    def some(req: Request, stat_sn: int) -> list[bytes]:
        if req.opcode == pdu.Opcode.TEXT_REQUEST:
            return [ping, ping, *standard(req, stat_sn)]
        return standard(req, stat_sn)

    assert run(answering(some)).status is Status.PASS

    def flood(req: Request, stat_sn: int) -> list[bytes]:
        if req.opcode == pdu.Opcode.TEXT_REQUEST:
            return [ping] * (iscsi.MAX_STRAY_PDUS + 1)
        return standard(req, stat_sn)

    outcome = run(answering(flood))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "unsolicited" in outcome.detail


def test_a_target_that_never_agrees_is_bounded() -> None:
    heard: list[Request] = []

    def stay(req: Request, stat_sn: int) -> list[bytes]:
        return [response(0x23, 0x00, itt=req.itt, stat_sn=stat_sn)]

    outcome = run(answering(stay, heard))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "no login agreement" in outcome.detail
    assert len(heard) == iscsi.MAX_LOGIN_ROUNDS


def test_offers_in_the_operational_stage_are_answered() -> None:
    heard: list[Request] = []

    def offer(req: Request, stat_sn: int) -> list[bytes]:
        operational = req.opcode == 3 and req.flags & 0x0C == 0x04
        if operational and not any(k == "DefaultTime2Wait" for k, _ in req.keys):
            data = b"HeaderDigest=None\x00DefaultTime2Wait=2\x00"
            return [response(0x23, 0x04, itt=req.itt, data=data, stat_sn=stat_sn)]
        return standard(req, stat_sn)

    outcome = run(answering(offer, heard))
    assert outcome.status is Status.PASS, outcome.detail
    assert heard[2].keys == (("DefaultTime2Wait", "2"),)
    assert heard[2].flags == 0x87


def test_an_endless_text_answer_is_bounded() -> None:
    heard: list[Request] = []

    def endless(req: Request, stat_sn: int) -> list[bytes]:
        if req.opcode == pdu.Opcode.TEXT_REQUEST:
            part = b"TargetName=iqn.1997-05.com.amazon:x\x00"
            return [response(0x24, 0x00, itt=req.itt, ttt=5, data=part)]
        return standard(req, stat_sn)

    outcome = run(answering(endless, heard))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert f"longer than {iscsi.MAX_TEXT_ROUNDS} PDUs" in outcome.detail
    texts = [r for r in heard if r.opcode == pdu.Opcode.TEXT_REQUEST]
    assert len(texts) == iscsi.MAX_TEXT_ROUNDS
    # Later requests carry the target's TTT and no text (11.10.4).
    assert texts[1].ttt == 5
    assert texts[1].keys == ()


def test_a_close_after_the_login_is_a_protocol_error() -> None:
    def respond(req: Request, stat_sn: int) -> list[bytes] | None:
        if req.opcode == pdu.Opcode.TEXT_REQUEST:
            return None
        return standard(req, stat_sn)

    outcome = run(answering(respond))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "closed the connection during the SendTargets" in outcome.detail


def test_an_unanswered_logout_still_passes_quickly() -> None:
    def respond(req: Request, stat_sn: int) -> list[bytes]:
        if req.opcode == pdu.Opcode.LOGOUT_REQUEST:
            return []
        return standard(req, stat_sn)

    async def main() -> tuple[Outcome, float]:
        server = await asyncio.start_server(answering(respond), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        started = asyncio.get_running_loop().time()
        try:
            outcome = await iscsi.probe(request(port, 5))
        finally:
            server.close()
        return outcome, asyncio.get_running_loop().time() - started

    outcome, took = asyncio.run(main())
    assert outcome.status is Status.PASS
    assert outcome.evidence["logged_out"] is False
    assert took < iscsi.LOGOUT_WAIT + 0.5


def test_a_closed_port_is_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main() -> Outcome:
        return await iscsi.probe(request(port, 1.0))

    outcome = asyncio.run(main())
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.REFUSED)


def test_portals_elsewhere_are_named_only_when_none_is_the_probed_one() -> None:
    portal = pdu.Portal("10.0.0.5", 3260, 1)
    inside = pdu.Target("iqn.1997-05.com.amazon:v", (portal,))
    elsewhere = iscsi.elsewhere_portals
    assert elsewhere((inside,), "203.0.113.9") == ["10.0.0.5:3260,1"]
    assert elsewhere((inside,), "10.0.0.5") == []
    assert elsewhere((), "10.0.0.5") == []
