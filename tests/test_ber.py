"""Tests for probes.ber: encodings from X.690, bounds, and fuzzing."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes import ber

# OpenLDAP slapd 2.5.13+dfsg-5 (Debian 12): its BindResponse to the
# anonymous bind of ldapsearch 2.5.13, recorded with a TCP relay.
SLAPD_BIND_RESPONSE = bytes.fromhex("300c02010161070a010004000400")

# Encoding.


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0, "020100"),
        (1, "020101"),
        (127, "02017f"),
        (128, "02020080"),
        (256, "02020100"),
        (-1, "0201ff"),
        (-128, "020180"),
        (-129, "0202ff7f"),
        (2**31 - 1, "02047fffffff"),
    ],
)
def test_integer_is_minimal_twos_complement(value: int, wire: str) -> None:
    # X.690 8.3.2: the fewest octets that keep the sign.
    assert ber.integer(value).hex() == wire
    assert ber.read_integer(ber.decode(bytes.fromhex(wire))) == value


@pytest.mark.parametrize(
    ("length", "wire"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "8180"),
        (255, "81ff"),
        (256, "820100"),
        (65536, "83010000"),
        (2**32 - 1, "84ffffffff"),
    ],
)
def test_length_is_definite_and_shortest(length: int, wire: str) -> None:
    assert ber.encode_length(length).hex() == wire


def test_a_length_past_four_octets_is_refused() -> None:
    with pytest.raises(ber.BerError):
        ber.encode_length(2**32)
    with pytest.raises(ber.BerError):
        ber.encode_length(-1)


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (ber.boolean(True), "0101ff"),
        (ber.boolean(False), "010100"),
        (ber.enumerated(2), "0a0102"),
        (ber.octet_string(""), "0400"),
        (ber.octet_string("cn"), "0402636e"),
        (ber.octet_string(b"\x00\xff"), "040200ff"),
        (ber.null(), "0500"),
        (ber.null(ber.application(2, constructed=False)), "4200"),
        (ber.sequence(), "3000"),
        (ber.sequence(ber.integer(5), ber.null()), "300502010505" + "00"),
        (ber.constructed(ber.SET, ber.octet_string("3")), "3103040133"),
        (
            ber.octet_string("objectClass", ber.context(7)),
            "870b" + b"objectClass".hex(),
        ),
        (ber.constructed(ber.application(3)), "6300"),
    ],
)
def test_encodings(wire: bytes, expected: str) -> None:
    assert wire.hex() == expected


def test_a_long_string_takes_the_long_form() -> None:
    wire = ber.octet_string(b"x" * 200)
    assert wire[:3] == bytes.fromhex("0481c8")
    assert ber.read_octets(ber.decode(wire)) == b"x" * 200


def test_tag_numbers_above_30_cannot_be_encoded() -> None:
    with pytest.raises(ber.BerError):
        ber.encode(ber.context(31), b"")


# Decoding.


def test_decode_a_captured_bind_response() -> None:
    element = ber.decode(SLAPD_BIND_RESPONSE)
    assert element.tag == ber.SEQUENCE
    message_id, op = element.children
    assert ber.read_integer(message_id) == 1
    assert op.tag == ber.application(1)
    code, matched, diagnostic = ber.children_of(op, ber.application(1))
    assert ber.read_enumerated(code) == 0
    assert ber.read_octets(matched) == ber.read_octets(diagnostic) == b""


def test_four_octet_lengths_as_active_directory_writes_them() -> None:
    # Active Directory writes every length in the long form of 4 octets.
    wire = bytes.fromhex("30840000000b" + "020105" + "048400000000" + "0500")
    element = ber.decode(wire)
    assert [child.tag for child in element.children] == [
        ber.INTEGER,
        ber.OCTET_STRING,
        ber.NULL,
    ]
    assert ber.frame_size(wire, 100) == len(wire)


def test_non_minimal_integers_are_read() -> None:
    assert ber.read_integer(ber.decode(bytes.fromhex("0203000005"))) == 5


@pytest.mark.parametrize(
    ("wire", "words"),
    [
        ("3080020101" + "0000", "indefinite"),
        ("04ff", "reserved"),
        ("04850000000001" + "00", "length of 5 octets"),
        ("1f2100", "high tag"),
        ("3003020101" + "00", "follow"),
        ("30030201", "claims"),
        ("30", "truncated"),
        ("", "truncated"),
        ("3004020201", "claims"),
        ("3003" + "020201", "claims"),
    ],
)
def test_decode_refuses(wire: str, words: str) -> None:
    with pytest.raises(ber.BerError, match=words):
        ber.decode(bytes.fromhex(wire))


@pytest.mark.parametrize(
    ("wire", "reader"),
    [
        ("0200", ber.read_integer),
        ("0209010000000000000000", ber.read_integer),
        ("0a0100", ber.read_integer),
        ("010200ff", ber.read_boolean),
        ("0100", ber.read_boolean),
        ("3000", ber.read_octets),
        ("0400", ber.read_integer),
    ],
)
def test_readers_check_tag_and_size(
    wire: str, reader: Callable[[ber.Element], object]
) -> None:
    with pytest.raises(ber.BerError):
        reader(ber.decode(bytes.fromhex(wire)))


def test_booleans_read_any_non_zero_octet_as_true() -> None:
    assert ber.read_boolean(ber.decode(bytes.fromhex("010101")))
    assert not ber.read_boolean(ber.decode(bytes.fromhex("010100")))


def _nested(depth: int) -> bytes:
    wire = ber.null()
    for _ in range(depth - 1):
        wire = ber.sequence(wire)
    return wire


def test_nesting_is_bounded() -> None:
    assert ber.decode(_nested(ber.MAX_DEPTH)).tag == ber.SEQUENCE
    with pytest.raises(ber.BerError, match="deeper"):
        ber.decode(_nested(ber.MAX_DEPTH + 1))


def test_element_count_is_bounded() -> None:
    fits = ber.sequence(*[ber.null()] * (ber.MAX_ELEMENTS - 1))
    assert len(ber.decode(fits).children) == ber.MAX_ELEMENTS - 1
    with pytest.raises(ber.BerError, match="elements"):
        ber.decode(ber.sequence(*[ber.null()] * ber.MAX_ELEMENTS))


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (b"", None),
        (b"\x30", None),
        (b"\x30\x84\x00\x00", None),
        (b"\x30\x00", 2),
        (b"\x30\x05", 7),
        (b"\x30\x81\x80", 131),
        (b"\x30\x84\x00\x00\x01\x00", 262),
        (SLAPD_BIND_RESPONSE + b"more", 14),
    ],
)
def test_frame_size(data: bytes, size: int | None) -> None:
    assert ber.frame_size(data, 1000) == size


def test_frame_size_refuses_a_huge_length_from_its_header_alone() -> None:
    with pytest.raises(ber.BerError, match="over the limit"):
        ber.frame_size(b"\x30\x84\xff\xff\xff\xff", 256 * 1024)
    with pytest.raises(ber.BerError, match="over the limit"):
        ber.frame_size(b"\x30\x82\x01\x00", 100)


def test_describe_names_class_number_and_form() -> None:
    assert ber.describe(ber.application(4)) == "[APPLICATION 4] constructed"
    assert ber.describe(ber.context(7)) == "[7] primitive"
    assert ber.describe(ber.INTEGER) == "[UNIVERSAL 2] primitive"


# Properties.

_TAG_NUMBERS = st.integers(min_value=0, max_value=30)
_CLASSES = st.sampled_from(list(ber.TagClass))


def _primitive() -> st.SearchStrategy[ber.Element]:
    return st.builds(
        lambda cls, number, content: ber.Element(ber.Tag(cls, False, number), content),
        _CLASSES,
        _TAG_NUMBERS,
        st.binary(max_size=300),
    )


def _constructed(
    children: st.SearchStrategy[ber.Element],
) -> st.SearchStrategy[ber.Element]:
    return st.builds(
        lambda cls, number, parts: ber.Element(
            ber.Tag(cls, True, number), children=tuple(parts)
        ),
        _CLASSES,
        _TAG_NUMBERS,
        st.lists(children, max_size=5),
    )


_ELEMENTS = st.recursive(_primitive(), _constructed, max_leaves=30)


def _encode(element: ber.Element) -> bytes:
    if not element.tag.constructed:
        return ber.encode(element.tag, element.content)
    return ber.constructed(element.tag, *(_encode(c) for c in element.children))


@given(_ELEMENTS)
def test_encode_then_decode_gives_the_element_back(element: ber.Element) -> None:
    wire = _encode(element)
    assert ber.decode(wire) == element
    assert ber.frame_size(wire, len(wire)) == len(wire)


@given(_ELEMENTS, st.data())
def test_every_cut_of_an_element_is_refused(
    element: ber.Element, data: st.DataObject
) -> None:
    wire = _encode(element)
    cut = data.draw(st.integers(min_value=0, max_value=len(wire) - 1))
    with pytest.raises(ber.BerError):
        ber.decode(wire[:cut])
    size = ber.frame_size(wire[:cut], len(wire))
    assert size is None or size == len(wire)


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_ber_error(data: bytes) -> None:
    with contextlib.suppress(ber.BerError):
        ber.frame_size(data, 300)
    with contextlib.suppress(ber.BerError):
        element = ber.decode(data)
        for reader in (ber.read_integer, ber.read_boolean, ber.read_octets):
            with contextlib.suppress(ber.BerError):
                reader(element)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_integers_of_eight_octets_round_trip(value: int) -> None:
    assert ber.read_integer(ber.decode(ber.integer(value))) == value
