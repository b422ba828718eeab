"""Tests for probes.ldap: the codec on captured bytes, the probes on
loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes import ber, ldap
from probes.base import (
    Deadline,
    Outcome,
    ProbeRequest,
    ProbeSettings,
    Reason,
    Status,
    Transport,
    printable,
)
from tests.test_ber import _ELEMENTS, _encode
from tests.test_tls import Pki, make_pki, server_context, serving

# Captured from OpenLDAP slapd 2.5.13+dfsg-5 (Debian 12) on 127.0.0.9,
# through a recording TCP relay, with the root DSE readable by anyone
# and the suffix dc=lab,dc=test. First, this probe's own exchange
# (message ID 0x6ee8fdb5, timeLimit 2): the search, the entry and the
# SearchResultDone in one segment, and the unbind.
CAPTURED_ID = 0x6EE8FDB5
PROBE_SEARCH = bytes.fromhex(
    "3081db02046ee8fdb56381d204000a01000a0100020101020102010100870b6f"
    "626a656374436c6173733081b1040e6e616d696e67436f6e7465787473041473"
    "7570706f727465644c44415056657273696f6e040b646e73486f73744e616d65"
    "041464656661756c744e616d696e67436f6e746578740417737570706f727465"
    "645341534c4d656368616e69736d730415737570706f72746564436170616269"
    "6c6974696573040a76656e646f724e616d65040d76656e646f7256657273696f"
    "6e040a7365727665724e616d65040f6c646170536572766963654e616d65"
)
SLAPD_ROOT_DSE = bytes.fromhex(
    "3081d202046ee8fdb56481c904003081c43022040e6e616d696e67436f6e7465"
    "7874733110040e64633d6c61622c64633d74657374301b0414737570706f7274"
    "65644c44415056657273696f6e31030401333081800417737570706f72746564"
    "5341534c4d656368616e69736d733165040d534352414d2d5348412d35313204"
    "0d534352414d2d5348412d333834040d534352414d2d5348412d323536040d53"
    "4352414d2d5348412d323234040b534352414d2d5348412d31040a4449474553"
    "542d4d443504084352414d2d4d443504044e544c4d300f02046ee8fdb565070a"
    "010004000400"
)
PROBE_UNBIND = bytes.fromhex("300802046ee8fdb64200")

# The same slapd answering ldapsearch 2.5.13 (`ldapsearch -x -H
# ldap://127.0.0.9 -s base -b "" namingContexts supportedLDAPVersion`):
# its search (message 2, after an anonymous bind) and the reply.
LDAPSEARCH_SEARCH = bytes.fromhex(
    "304b020102634604000a01000a0100020100020100010100870b6f626a656374"
    "636c6173733026040e6e616d696e67436f6e74657874730414737570706f7274"
    "65644c44415056657273696f6e"
)
SLAPD_TO_LDAPSEARCH = bytes.fromhex(
    "304a0201026445040030413022040e6e616d696e67436f6e7465787473311004"
    "0e64633d6c61622c64633d74657374301b0414737570706f727465644c444150"
    "56657273696f6e3103040133300c02010265070a010004000400"
)

# slapd 2.5.13 with `require authc`: the search of message 2 refused.
SLAPD_REFUSED = bytes.fromhex(
    "3023020102651e0a01350400041761757468656e7469636174696f6e207265717569726564"
)
# slapd 2.5.13 with `access to dn.base="" by * none`: message 3 done,
# with no entry.
SLAPD_HIDDEN = bytes.fromhex("300c02010365070a010004000400")
# slapd 2.5.13 sent a request with the unknown operation [APPLICATION
# 30]: a Notice of Disconnection (protocolError, "unknown LDAP request").
SLAPD_NOTICE = bytes.fromhex(
    "303802010078330a010204000414756e6b6e6f776e204c444150207265717565"
    "73748a16312e332e362e312e342e312e313436362e3230303336"
)

# Not captured: built here in Active Directory's manner ([MS-ADTS]
# 3.1.1.3.2 root DSE attributes, every length in the 4-octet long form
# AD writes).
AD_HOST = "dc1.corp.example.com"
AD_DOMAIN = "DC=corp,DC=example,DC=com"


def _long(tag: ber.Tag, *parts: bytes) -> bytes:
    content = b"".join(parts)
    return bytes([tag.identifier(), 0x84]) + len(content).to_bytes(4, "big") + content


def _ad_attribute(name: str, *values: str) -> bytes:
    return _long(
        ber.SEQUENCE,
        _long(ber.OCTET_STRING, name.encode()),
        _long(ber.SET, *(_long(ber.OCTET_STRING, v.encode()) for v in values)),
    )


def ad_root_dse(message_id: int) -> bytes:
    attributes = (
        _ad_attribute(
            "namingContexts",
            AD_DOMAIN,
            f"CN=Configuration,{AD_DOMAIN}",
            f"CN=Schema,CN=Configuration,{AD_DOMAIN}",
            f"DC=DomainDnsZones,{AD_DOMAIN}",
            f"DC=ForestDnsZones,{AD_DOMAIN}",
        ),
        _ad_attribute("defaultNamingContext", AD_DOMAIN),
        _ad_attribute("dnsHostName", AD_HOST),
        _ad_attribute("supportedLDAPVersion", "3", "2"),
        _ad_attribute(
            "supportedSASLMechanisms", "GSSAPI", "GSS-SPNEGO", "EXTERNAL", "DIGEST-MD5"
        ),
        _ad_attribute(
            "supportedCapabilities",
            "1.2.840.113556.1.4.800",
            "1.2.840.113556.1.4.1670",
            "1.2.840.113556.1.4.1791",
        ),
        _ad_attribute(
            "serverName",
            f"CN=DC1,CN=Servers,CN=Default-First-Site-Name,CN=Sites,"
            f"CN=Configuration,{AD_DOMAIN}",
        ),
    )
    msgid = _long(ber.INTEGER, message_id.to_bytes(4, "big"))
    entry = _long(
        ber.SEQUENCE,
        msgid,
        _long(
            ber.application(4),
            _long(ber.OCTET_STRING),
            _long(ber.SEQUENCE, *attributes),
        ),
    )
    done = _long(
        ber.SEQUENCE,
        msgid,
        _long(
            ber.application(5),
            _long(ber.ENUMERATED, b"\x00"),
            _long(ber.OCTET_STRING),
            _long(ber.OCTET_STRING),
        ),
    )
    return entry + done


# Built here: the unnamed ExtendedResponse with message ID 0 that Active
# Directory sends before it drops a connection it cannot decode.
AD_DISCONNECT = _long(
    ber.SEQUENCE,
    _long(ber.INTEGER, b"\x00"),
    _long(
        ber.application(24),
        _long(ber.ENUMERATED, b"\x02"),
        _long(ber.OCTET_STRING),
        _long(
            ber.OCTET_STRING,
            b"00000057: LdapErr: DSID-0C090D7D, comment: Error decoding "
            b"ldap message, data 0, v4563\x00",
        ),
    ),
)


def split(data: bytes) -> list[bytes]:
    """Cut a byte stream into its LDAPMessages."""
    messages: list[bytes] = []
    while data:
        size = ldap.frame_size(data)
        assert size is not None
        messages.append(data[:size])
        data = data[size:]
    return messages


def parse_all(data: bytes) -> list[ldap.Message]:
    return [ldap.parse_message(m) for m in split(data)]


# Encoding.


def test_the_search_is_the_captured_one() -> None:
    assert ldap.build_search(CAPTURED_ID, time_limit=2) == PROBE_SEARCH


def test_the_unbind_is_the_captured_one() -> None:
    assert ldap.build_unbind(CAPTURED_ID + 1) == PROBE_UNBIND
    assert ldap.build_unbind(3) == bytes.fromhex("30050201034200")


def _search_fields(wire: bytes) -> list[ber.Element]:
    message = ber.decode(wire)
    return list(ber.children_of(message.children[1], ber.application(3)))


def test_the_search_has_the_shape_of_ldapsearch_s() -> None:
    ours = _search_fields(ldap.build_search(2))
    theirs = _search_fields(LDAPSEARCH_SEARCH)
    # baseObject "", scope, derefAliases, typesOnly: the same bytes.
    for index in (0, 1, 2, 5):
        assert ours[index] == theirs[index]
    # sizeLimit: 1 here, none there; timeLimit none in both.
    assert ber.read_integer(ours[3]) == 1
    assert ber.read_integer(theirs[3]) == 0
    assert ours[4] == theirs[4]
    # The same present filter, spelled with another case.
    assert ours[6].tag == theirs[6].tag == ber.context(7)
    assert ours[6].content.lower() == theirs[6].content.lower()
    asked = {ber.read_octets(a) for a in theirs[7].children}
    assert asked <= {ber.read_octets(a) for a in ours[7].children}


def test_new_message_ids_leave_room_for_the_unbind() -> None:
    ids = {ldap.new_message_id() for _ in range(100)}
    assert all(0 < i < ldap.MAX_INT for i in ids)
    assert len(ids) > 90


@pytest.mark.parametrize("message_id", [0, -1, ldap.MAX_INT + 1])
def test_message_ids_out_of_range_are_refused(message_id: int) -> None:
    with pytest.raises(ldap.LdapError):
        ldap.build_search(message_id)


# Decoding captured replies.


def test_parse_slapd_root_dse() -> None:
    entry, done = parse_all(SLAPD_ROOT_DSE)
    assert entry.message_id == done.message_id == CAPTURED_ID
    assert isinstance(entry.body, ldap.SearchEntry)
    assert entry.body.object_name == ""
    assert entry.body.values("namingcontexts") == (b"dc=lab,dc=test",)
    assert entry.body.values("supportedLDAPVersion") == (b"3",)
    assert len(entry.body.values("supportedSASLMechanisms")) == 8
    assert isinstance(done.body, ldap.SearchDone)
    assert done.body.result == ldap.LdapResult(0, "", "")


def test_parse_what_slapd_told_ldapsearch() -> None:
    # The same facts ldapsearch printed: namingContexts dc=lab,dc=test,
    # supportedLDAPVersion 3, result 0 Success.
    entry, done = parse_all(SLAPD_TO_LDAPSEARCH)
    assert isinstance(entry.body, ldap.SearchEntry)
    assert entry.body.attributes == (
        ("namingContexts", (b"dc=lab,dc=test",)),
        ("supportedLDAPVersion", (b"3",)),
    )
    assert isinstance(done.body, ldap.SearchDone)
    assert done.body.result.name == "success"


def test_parse_refusal_hidden_and_notice() -> None:
    refused = ldap.parse_message(SLAPD_REFUSED)
    assert isinstance(refused.body, ldap.SearchDone)
    assert refused.body.result.code == ldap.ResultCode.unwillingToPerform
    assert refused.body.result.diagnostic == "authentication required"
    hidden = ldap.parse_message(SLAPD_HIDDEN)
    assert hidden.message_id == 3
    notice = ldap.parse_message(SLAPD_NOTICE)
    assert notice.message_id == 0
    assert notice.is_disconnection
    assert isinstance(notice.body, ldap.ExtendedResponse)
    assert notice.body.name == ldap.NOTICE_OF_DISCONNECTION
    assert notice.body.result.name == "protocolError"


def test_parse_the_bind_response_as_another_operation() -> None:
    message = ldap.parse_message(bytes.fromhex("300c02010161070a010004000400"))
    assert message.body == ldap.OtherOperation(ldap.Operation.bindResponse)


def test_parse_active_directory_style_lengths() -> None:
    entry, done = parse_all(ad_root_dse(7))
    assert isinstance(entry.body, ldap.SearchEntry)
    facts = ldap.root_dse_facts(entry.body)
    assert facts == {
        "naming_contexts": [
            AD_DOMAIN,
            f"CN=Configuration,{AD_DOMAIN}",
            f"CN=Schema,CN=Configuration,{AD_DOMAIN}",
            f"DC=DomainDnsZones,{AD_DOMAIN}",
            f"DC=ForestDnsZones,{AD_DOMAIN}",
        ],
        "default_naming_context": AD_DOMAIN,
        "dns_host_name": AD_HOST,
        "supported_ldap_versions": [3, 2],
        "supported_sasl_mechanisms": ["GSSAPI", "GSS-SPNEGO", "EXTERNAL", "DIGEST-MD5"],
        "active_directory": True,
        "server_name": (
            "CN=DC1,CN=Servers,CN=Default-First-Site-Name,CN=Sites,"
            f"CN=Configuration,{AD_DOMAIN}"
        ),
    }
    assert done.message_id == 7


def test_an_unnamed_notice_counts_as_a_disconnection() -> None:
    message = ldap.parse_message(AD_DISCONNECT)
    assert message.is_disconnection
    assert isinstance(message.body, ldap.ExtendedResponse)
    assert message.body.name is None
    assert message.body.result.diagnostic.startswith("00000057: LdapErr")


def test_root_dse_facts_are_bounded() -> None:
    many = tuple(str(n).encode() * 300 for n in range(50))
    entry = ldap.SearchEntry(
        "",
        (
            ("namingContexts", many),
            ("vendorName", (b"Example",)),
            ("vendorVersion", (b"1.0",)),
            ("supportedLDAPVersion", (b"3", b"x", "\u00b2".encode(), b"9" * 40)),
        ),
    )
    facts = ldap.root_dse_facts(entry)
    contexts = facts["naming_contexts"]
    assert isinstance(contexts, list)
    assert len(contexts) == ldap.MAX_VALUES
    assert all(len(str(c)) <= ldap.MAX_TEXT + 3 for c in contexts)
    assert facts["vendor"] == "Example 1.0"
    assert facts["supported_ldap_versions"] == [3]
    assert ldap.root_dse_facts(None) == {}


def test_controls_and_referrals_are_read() -> None:
    referral = ber.constructed(
        ber.context(3, constructed=True), ber.octet_string("ldap://b/")
    )
    done = ber.constructed(
        ber.application(5),
        ber.enumerated(10),
        ber.octet_string(""),
        ber.octet_string(""),
        referral,
    )
    controls = ber.constructed(ber.context(0, constructed=True))
    message = ldap.parse_message(ber.sequence(ber.integer(4), done, controls))
    assert isinstance(message.body, ldap.SearchDone)
    assert message.body.result.name == "referral"
    assert message.body.result.referrals == ("ldap://b/",)


def _message(*parts: bytes) -> bytes:
    return ber.sequence(*parts)


_DONE = ber.constructed(
    ber.application(5), ber.enumerated(0), ber.octet_string(""), ber.octet_string("")
)


@pytest.mark.parametrize(
    ("data", "not_ldap"),
    [
        (b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", True),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", True),
        (bytes.fromhex("15030300020246"), True),
        (_message(ber.integer(1)), True),
        (_message(ber.octet_string("1"), _DONE), True),
        (_message(ber.integer(1), ber.integer(2)), True),
        (_message(ber.integer(-1), _DONE), True),
        (_message(ber.integer(2**31), _DONE), True),
        (_message(ber.integer(1), _DONE, _DONE, _DONE), True),
        (bytes.fromhex("3080020101650000"), True),
        (_message(ber.integer(1), _DONE, ber.null()), False),
        (
            _message(
                ber.integer(1),
                ber.constructed(ber.application(5), ber.integer(0)),
            ),
            False,
        ),
        (
            _message(
                ber.integer(1),
                ber.constructed(
                    ber.application(5),
                    ber.integer(0),
                    ber.octet_string(""),
                    ber.octet_string(""),
                ),
            ),
            False,
        ),
        (
            _message(
                ber.integer(1),
                ber.constructed(ber.application(4), ber.octet_string("")),
            ),
            False,
        ),
        (
            _message(
                ber.integer(1),
                ber.constructed(
                    ber.application(4),
                    ber.octet_string(""),
                    ber.sequence(ber.sequence(ber.octet_string("cn"))),
                ),
            ),
            False,
        ),
        (_message(ber.integer(1), ber.null(ber.application(5, False))), False),
    ],
)
def test_parse_refuses(data: bytes, not_ldap: bool) -> None:
    with pytest.raises(ldap.LdapError) as caught:
        size = ldap.frame_size(data)
        assert size == len(data)
        ldap.parse_message(data)
    assert isinstance(caught.value, ldap.NotLdapError) is not_ldap


def test_frame_size_refuses_a_huge_message_before_reading_it() -> None:
    with pytest.raises(ldap.NotLdapError, match="over the limit"):
        ldap.frame_size(b"\x30\x84\x40\x00\x00\x00")
    # The bound covers the whole message, its 5-byte header included.
    largest = b"\x30\x83" + (ldap.MAX_MESSAGE - 5).to_bytes(3, "big")
    assert ldap.frame_size(largest) == ldap.MAX_MESSAGE
    with pytest.raises(ldap.NotLdapError):
        ldap.frame_size(b"\x30\x83" + (ldap.MAX_MESSAGE - 4).to_bytes(3, "big"))
    assert ldap.frame_size(b"") is None
    assert ldap.frame_size(b"\x30\x84\x00") is None


def test_result_and_operation_names() -> None:
    assert ldap.result_name(50) == "insufficientAccessRights"
    assert ldap.result_name(99) == "code 99"
    assert ldap.operation_name(24) == "extendedResp"
    assert ldap.operation_name(30) == "[APPLICATION 30]"


# Following one search.


def _msg(message_id: int, body: ldap.Body) -> ldap.Message:
    return ldap.Message(message_id, body)


_ENTRY = ldap.SearchEntry("", (("namingContexts", (b"dc=x",)),))
_OK = ldap.SearchDone(ldap.LdapResult(0, "", ""))


def test_replies_gather_entry_and_references_until_done() -> None:
    replies = ldap.SearchReplies(5)
    assert replies.take(_msg(5, ldap.SearchReference(("ldap://x/",)))) is None
    assert replies.take(_msg(5, _ENTRY)) is None
    assert replies.take(_msg(5, ldap.SearchEntry("cn=second", ()))) is None
    reply = replies.take(_msg(5, _OK))
    assert reply == ldap.Reply(_OK.result, _ENTRY, False, 1)


def test_replies_end_at_a_notice_of_disconnection() -> None:
    replies = ldap.SearchReplies(5)
    notice = ldap.parse_message(SLAPD_NOTICE)
    reply = replies.take(notice)
    assert reply is not None
    assert reply.disconnected
    assert reply.result.name == "protocolError"


def test_other_unsolicited_notifications_are_ignored() -> None:
    other = ldap.ExtendedResponse(ldap.LdapResult(0, "", ""), "1.2.3", None)
    assert ldap.SearchReplies(5).take(_msg(0, other)) is None


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (_msg(6, _OK), "message 6, not to our 5"),
        (_msg(0, _OK), "message 0"),
        (_msg(5, ldap.OtherOperation(1)), "bindResponse"),
        (
            _msg(5, ldap.ExtendedResponse(ldap.LdapResult(2, "", ""), None, None)),
            "ExtendedResponse",
        ),
    ],
)
def test_replies_refuse_what_has_no_place(message: ldap.Message, words: str) -> None:
    with pytest.raises(ldap.LdapError, match=words):
        ldap.SearchReplies(5).take(message)


# Properties.

_CAPTURED = (SLAPD_ROOT_DSE, SLAPD_TO_LDAPSEARCH, SLAPD_NOTICE, SLAPD_REFUSED)


@given(st.binary(max_size=600))
def test_random_bytes_raise_only_ldap_error(data: bytes) -> None:
    with contextlib.suppress(ldap.LdapError):
        ldap.frame_size(data)
    with contextlib.suppress(ldap.LdapError):
        ldap.parse_message(data)


@given(st.sampled_from(_CAPTURED), st.data())
def test_every_cut_of_a_captured_reply_is_refused(
    captured: bytes, data: st.DataObject
) -> None:
    first = split(captured)[0]
    cut = data.draw(st.integers(min_value=0, max_value=len(first) - 1))
    with pytest.raises(ldap.NotLdapError):
        ldap.parse_message(first[:cut])
    assert ldap.frame_size(first[:cut]) in (None, len(first))


@given(
    st.sampled_from(_CAPTURED),
    st.data(),
    st.integers(min_value=0, max_value=255),
)
def test_a_changed_byte_gives_a_message_or_ldap_error(
    captured: bytes, data: st.DataObject, value: int
) -> None:
    first = bytearray(split(captured)[0])
    first[data.draw(st.integers(min_value=0, max_value=len(first) - 1))] = value
    with contextlib.suppress(ldap.LdapError):
        message = ldap.parse_message(bytes(first))
        with contextlib.suppress(ldap.LdapError):
            ldap.SearchReplies(CAPTURED_ID).take(message)


@given(
    st.sampled_from([4, 5, 19, 24, 1]),
    st.lists(_ELEMENTS, max_size=4),
    st.integers(min_value=0, max_value=ldap.MAX_INT),
)
def test_random_operations_raise_only_ldap_error(
    number: int, parts: list[ber.Element], message_id: int
) -> None:
    op = ber.constructed(ber.application(number), *(_encode(p) for p in parts))
    wire = ber.sequence(ber.integer(message_id), op)
    with contextlib.suppress(ldap.LdapError):
        message = ldap.parse_message(wire)
        assert message.message_id == message_id
        with contextlib.suppress(ldap.LdapError):
            ldap.SearchReplies(message_id).take(message)
            if isinstance(message.body, ldap.SearchEntry):
                ldap.root_dse_facts(message.body)


@given(
    st.integers(min_value=1, max_value=ldap.MAX_INT),
    st.lists(st.text(min_size=1, max_size=40), max_size=20),
    st.integers(min_value=0, max_value=ldap.MAX_INT),
)
def test_any_search_request_decodes_back(
    message_id: int, attributes: list[str], time_limit: int
) -> None:
    wire = ldap.build_search(message_id, attributes, time_limit)
    message = ldap.parse_message(wire)
    assert message == ldap.Message(
        message_id, ldap.OtherOperation(ldap.Operation.searchRequest)
    )
    fields = _search_fields(wire)
    assert ber.read_integer(fields[4]) == time_limit
    assert [ber.read_octets(a).decode() for a in fields[7].children] == attributes


# The probes against small servers on loopback.

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Handler = Callable[[Reader, Writer], Awaitable[None]]
HOST = "dc1.lab.test"


@pytest.fixture
def captured_id(monkeypatch: pytest.MonkeyPatch) -> int:
    """Make the probe pick the message ID of the captured exchange."""
    monkeypatch.setattr(ldap, "new_message_id", lambda: CAPTURED_ID)
    return CAPTURED_ID


def fixed_id(monkeypatch: pytest.MonkeyPatch, message_id: int) -> None:
    monkeypatch.setattr(ldap, "new_message_id", lambda: message_id)


async def read_request(reader: Reader) -> bytes:
    """One LDAPMessage from the client, or b"" if it went away."""
    data = b""
    with contextlib.suppress(OSError, ldap.LdapError):
        while True:
            size = ldap.frame_size(data)
            if size is not None and len(data) >= size:
                return data[:size]
            chunk = await reader.read(4096)
            if not chunk:
                break
            data += chunk
    return b""


def answers(
    *chunks: bytes,
    heard: list[bytes] | None = None,
    hold: float = 0.0,
    pause: float = 0.0,
) -> Handler:
    """A server that reads the search, writes ``chunks`` (``pause``
    between them), keeps the connection for ``hold`` seconds, and
    notes the request and what followed it (the unbind) in ``heard``."""

    async def handler(reader: Reader, writer: Writer) -> None:
        request = await read_request(reader)
        if not request:
            return
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(pause)
        await asyncio.sleep(hold)
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1):
                after = await reader.read()
                if heard is not None:
                    heard.extend([request, after])

    return handler


def closes(*chunks: bytes) -> Handler:
    """A server that reads the search, writes ``chunks`` and hangs up."""

    async def handler(reader: Reader, writer: Writer) -> None:
        if await read_request(reader):
            writer.write(b"".join(chunks))
            await writer.drain()

    return handler


def greets(data: bytes, hold: float = 0.0) -> Handler:
    """A server that speaks first, as an SSH server does."""

    async def handler(reader: Reader, writer: Writer) -> None:
        writer.write(data)
        await writer.drain()
        await asyncio.sleep(hold)

    return handler


def run(
    handler: Handler,
    *,
    seconds: float = 2.0,
    probe: Callable[[ProbeRequest], Awaitable[Outcome]] = ldap.probe_ldap,
    context: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
    ca_bundle: Path | None = None,
) -> Outcome:
    async def go() -> Outcome:
        async with serving(handler, context) as port:
            return await probe(
                ProbeRequest(
                    host=host,
                    port=port,
                    transport=Transport.TCP,
                    deadline=Deadline.after(seconds),
                    settings=ProbeSettings(ca_bundle=ca_bundle),
                    address="127.0.0.1",
                )
            )

    return asyncio.run(go())


def test_the_captured_slapd_exchange_passes(captured_id: int) -> None:
    heard: list[bytes] = []
    outcome = run(answers(SLAPD_ROOT_DSE, heard=heard))
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.address == "127.0.0.1"
    assert outcome.detail.startswith("an LDAP server answers on 127.0.0.1 TCP ")
    assert "naming contexts dc=lab,dc=test" in outcome.detail
    evidence = outcome.evidence
    assert evidence["result_code"] == "success"
    assert evidence["naming_contexts"] == ["dc=lab,dc=test"]
    assert evidence["supported_ldap_versions"] == [3]
    assert evidence["dns_host_name"] is None
    assert evidence["active_directory"] is False
    assert isinstance(evidence["connect_ms"], float)
    assert isinstance(evidence["ldap_ms"], float)
    # The request was the captured one, bar the time limit left, and an
    # unbind followed it.
    search, after = heard
    assert search in {ldap.build_search(captured_id, time_limit=t) for t in (1, 2)}
    assert after == PROBE_UNBIND


def test_an_active_directory_reply_names_the_domain_controller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fixed_id(monkeypatch, 7)
    outcome = run(answers(ad_root_dse(7)))
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.detail.startswith("an Active Directory domain controller answers")
    assert f"root DSE of {AD_HOST}" in outcome.detail
    assert "and 2 more" in outcome.detail
    assert outcome.evidence["default_naming_context"] == AD_DOMAIN
    assert outcome.evidence["supported_ldap_versions"] == [3, 2]


def test_a_reply_in_one_byte_pieces_passes(captured_id: int) -> None:
    pieces = [SLAPD_ROOT_DSE[i : i + 1] for i in range(len(SLAPD_ROOT_DSE))]
    outcome = run(answers(*pieces))
    assert outcome.status is Status.PASS, outcome.detail


def test_a_refused_search_still_proves_ldap(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_id(monkeypatch, 2)
    heard: list[bytes] = []
    outcome = run(answers(SLAPD_REFUSED, heard=heard))
    assert (outcome.status, outcome.reason) == (Status.PASS, Reason.OK)
    assert "refused the root DSE to an anonymous search" in outcome.detail
    assert "unwillingToPerform: authentication required" in outcome.detail
    assert outcome.evidence["result_code"] == "unwillingToPerform"
    assert outcome.evidence["diagnostic_message"] == "authentication required"
    assert "naming_contexts" not in outcome.evidence
    assert heard[1] == ldap.build_unbind(3)


def test_a_hidden_root_dse_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_id(monkeypatch, 3)
    outcome = run(answers(SLAPD_HIDDEN))
    assert outcome.status is Status.PASS
    assert "returned no entry" in outcome.detail


@pytest.mark.parametrize("notice", [SLAPD_NOTICE, AD_DISCONNECT])
def test_a_notice_of_disconnection_proves_ldap(notice: bytes) -> None:
    outcome = run(answers(notice))
    assert outcome.status is Status.PASS
    assert "Notice of Disconnection (protocolError" in outcome.detail
    assert outcome.evidence["disconnected"] is True
    assert outcome.evidence["result_code"] == "protocolError"


@pytest.mark.parametrize(
    ("handler", "words", "first"),
    [
        (
            greets(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", hold=5),
            "answered an LDAP search with an SSH banner",
            "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\\r\\n",
        ),
        (
            answers(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n"),
            "answered an LDAP search with HTTP",
            "HTTP/1.1 400 Bad Request\\r\\nServer: nginx\\r\\n\\r\\n",
        ),
        (
            answers(bytes.fromhex("15030300020250"), hold=5),
            "with TLS (an LDAPS port?)",
            "\\x15\\x03\\x03\\x00\\x02\\x02P",
        ),
        (
            answers(b"\x30\x84\x7f\xff\xff\xff", hold=5),
            "with something that is not LDAP",
            "0\\x84\\x7f\\xff\\xff\\xff",
        ),
        (closes(), "closed the connection without a reply", ""),
        (
            closes(SLAPD_ROOT_DSE[:20]),
            "closed the connection with an incomplete reply",
            printable(SLAPD_ROOT_DSE[:20]),
        ),
    ],
)
def test_what_is_not_ldap_is_the_wrong_protocol(
    handler: Handler, words: str, first: str
) -> None:
    outcome = run(handler, seconds=3)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.WRONG_PROTOCOL)
    assert words in outcome.detail
    assert outcome.remedy
    assert outcome.evidence["first_bytes"] == first
    # The verdict comes at once, not at the deadline.
    ldap_ms = outcome.evidence["ldap_ms"]
    assert isinstance(ldap_ms, float)
    assert ldap_ms < 1000


def test_a_huge_length_is_refused_without_reading_it() -> None:
    outcome = run(answers(b"\x30\x84\x7f\xff\xff\xff" + b"\x00" * 100, hold=5))
    assert outcome.reason is Reason.WRONG_PROTOCOL
    assert "over the limit" in str(outcome.evidence["error"])


def test_silence_after_connect_is_a_timeout() -> None:
    outcome = run(answers(hold=3), seconds=0.5)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.TIMEOUT)
    assert "opened but no LDAP reply came" in outcome.detail
    assert outcome.evidence["received_bytes"] == 0


def test_a_reply_that_stops_halfway_is_a_timeout() -> None:
    outcome = run(answers(SLAPD_ROOT_DSE[:100], hold=3), seconds=0.5)
    assert outcome.reason is Reason.TIMEOUT
    assert "did not finish" in outcome.detail
    assert outcome.evidence["received_bytes"] == 100


@pytest.mark.parametrize(
    ("chunks", "words"),
    [
        ((SLAPD_ROOT_DSE,), f"a reply to message {CAPTURED_ID}, not to our 5"),
        ((bytes.fromhex("300c02010561070a010004000400"),), "bindResponse"),
        ((SLAPD_HIDDEN,), "a reply to message 3"),
        ((ldap.build_search(5),), "searchRequest"),
    ],
)
def test_out_of_place_ldap_is_a_protocol_error(
    monkeypatch: pytest.MonkeyPatch, chunks: tuple[bytes, ...], words: str
) -> None:
    fixed_id(monkeypatch, 5)
    outcome = run(answers(*chunks))
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.PROTOCOL_ERROR)
    assert words in outcome.detail
    assert outcome.remedy


@pytest.mark.usefixtures("captured_id")
def test_an_entry_then_garbage_is_a_protocol_error() -> None:
    entry = split(SLAPD_ROOT_DSE)[0]
    outcome = run(answers(entry + b"HTTP/1.1 400 Bad Request\r\n\r\n"))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert outcome.evidence["messages"] == 1


@pytest.mark.usefixtures("captured_id")
def test_an_entry_then_a_close_is_a_protocol_error() -> None:
    entry = split(SLAPD_ROOT_DSE)[0]
    outcome = run(closes(entry))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "closed the connection before it ended the search" in outcome.detail


@pytest.mark.usefixtures("captured_id")
def test_endless_entries_are_cut_off() -> None:
    entry = split(SLAPD_ROOT_DSE)[0]
    outcome = run(answers(entry * (ldap.MAX_MESSAGES + 5), hold=2))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert f"within {ldap.MAX_MESSAGES} messages" in outcome.detail


def test_a_closed_port_is_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def go() -> Outcome:
        return await ldap.probe_ldap(
            ProbeRequest(
                host="127.0.0.1",
                port=port,
                transport=Transport.TCP,
                deadline=Deadline.after(1),
                settings=ProbeSettings(),
                address="127.0.0.1",
            )
        )

    outcome = asyncio.run(go())
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.REFUSED)
    assert outcome.remedy == ""


# LDAPS: the TLS verdicts of probes.tls, then the search over TLS.


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), host=HOST)


def run_ldaps(
    handler: Handler,
    context: ssl.SSLContext | None,
    ca_bundle: Path | None,
    host: str = HOST,
) -> Outcome:
    return run(
        handler, probe=ldap.probe_ldaps, context=context, host=host, ca_bundle=ca_bundle
    )


@pytest.mark.usefixtures("captured_id")
def test_ldaps_passes_with_tls_and_ldap_evidence(pki: Pki) -> None:
    heard: list[bytes] = []
    outcome = run_ldaps(
        answers(SLAPD_ROOT_DSE, heard=heard), server_context(pki.good), pki.ca_bundle
    )
    assert outcome.status is Status.PASS, outcome.detail
    assert " over TLSv1." in outcome.detail
    evidence = outcome.evidence
    assert evidence["sni"] == HOST
    assert evidence["issuer"] == "Test Root CA"
    assert evidence["subject"] == HOST
    assert evidence["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert evidence["naming_contexts"] == ["dc=lab,dc=test"]
    assert evidence["result_code"] == "success"
    assert heard[1] == PROBE_UNBIND


@pytest.mark.usefixtures("captured_id")
def test_ldaps_to_an_ip_address_sends_no_sni(pki: Pki) -> None:
    outcome = run_ldaps(
        answers(SLAPD_ROOT_DSE), server_context(pki.good), pki.ca_bundle, "127.0.0.1"
    )
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.evidence["sni"] is None


def test_ldaps_with_an_unknown_ca_points_at_the_domain_ca(pki: Pki) -> None:
    outcome = run_ldaps(answers(SLAPD_ROOT_DSE), server_context(pki.good), None)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.TLS_INTERCEPTED)
    assert "'Test Root CA'" in outcome.detail
    assert "the domain's own CA" in outcome.detail
    assert "AD CS" in outcome.remedy
    assert outcome.evidence["issuer"] == "Test Root CA"
    assert outcome.address == "127.0.0.1"


def test_ldaps_with_an_inspecting_ca_names_the_bundle(pki: Pki) -> None:
    outcome = run_ldaps(
        answers(SLAPD_ROOT_DSE), server_context(pki.inspected), pki.ca_bundle
    )
    assert outcome.reason is Reason.TLS_INTERCEPTED
    assert str(pki.ca_bundle) in outcome.detail


def test_ldaps_with_a_wrong_name_is_untrusted(pki: Pki) -> None:
    outcome = run_ldaps(answers(), server_context(pki.wrong_name), pki.ca_bundle)
    assert outcome.reason is Reason.TLS_UNTRUSTED
    assert "domain controller" in outcome.remedy
    assert "AWS" not in outcome.remedy


def test_ldaps_to_a_server_that_drops_tls_suggests_a_certificate(pki: Pki) -> None:
    # A domain controller without a certificate, or plain LDAP on 636,
    # reads the ClientHello and hangs up.
    outcome = run_ldaps(answers(), None, pki.ca_bundle)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.REFUSED)
    assert "without a certificate for LDAPS" in outcome.detail
    assert "Enroll a server certificate" in outcome.remedy


def test_ldaps_to_an_ssh_server_is_the_wrong_protocol(pki: Pki) -> None:
    outcome = run_ldaps(
        greets(b"SSH-2.0-OpenSSH_9.2p1\r\n", hold=3), None, pki.ca_bundle
    )
    assert outcome.reason is Reason.WRONG_PROTOCOL
    assert "LDAPS" in outcome.remedy


def test_ldaps_that_speaks_no_ldap_inside_tls(pki: Pki) -> None:
    outcome = run_ldaps(
        answers(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
        server_context(pki.good),
        pki.ca_bundle,
    )
    assert outcome.reason is Reason.WRONG_PROTOCOL
    assert "over TLSv1." in outcome.detail
    assert outcome.evidence["issuer"] == "Test Root CA"


def test_ldaps_untrusted_by_ip_asks_for_the_dns_name() -> None:
    verdict = Outcome(Status.FAIL, Reason.TLS_UNTRUSTED, "misnamed", remedy="AWS text")
    request = ProbeRequest(
        host="10.0.0.5",
        port=636,
        transport=Transport.TCP,
        deadline=Deadline(0.0),
        settings=ProbeSettings(),
    )
    worded = ldap._for_ldaps(verdict, request)
    assert worded.reason is Reason.TLS_UNTRUSTED
    assert "10.0.0.5" in worded.remedy
    assert "DNS name" in worded.remedy
    transport = Outcome(Status.FAIL, Reason.TIMEOUT, "dropped")
    assert ldap._for_ldaps(transport, request) is transport
