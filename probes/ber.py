"""A small BER codec: the subset of X.690 that LDAP uses (RFC 4511 5.1).

Encoding writes definite lengths in their shortest form, and primitive
OCTET STRINGs only, as RFC 4511 5.1 asks of LDAP. Decoding turns bytes
into a tree of :class:`Element` values and raises :class:`BerError` for
anything else; it is bounded, since the bytes come from the network:

- definite lengths only (RFC 4511 5.1), of at most 4 length octets;
- at most :data:`MAX_DEPTH` levels of nesting and :data:`MAX_ELEMENTS`
  elements in one decoded value;
- INTEGERs of at most :data:`MAX_INTEGER_OCTETS` octets.

:func:`frame_size` reads only the identifier and length of the first
element, so a reader knows how many bytes one value takes (and can
refuse a length of gigabytes) before it reads them.

Limits: tag numbers above 30 (the high-tag-number form of X.690
8.1.2.4) are refused, as LDAP never uses them; so are the indefinite
length and the constructed form of strings, which RFC 4511 forbids. A
non-minimal INTEGER or length (leading zero octets) is accepted, as
lenient decoders do.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

MAX_DEPTH = 16
"""Nesting levels a decoded value may have; an LDAP reply needs 7."""
MAX_ELEMENTS = 4096
"""Elements one decoded value may hold (each takes at least 2 bytes)."""
MAX_INTEGER_OCTETS = 8
"""Contents octets of an INTEGER or ENUMERATED; LDAP's are 4 at most."""
# X.690 8.1.3.5: the long form gives the count of length octets in the
# first octet; 4 of them reach 4 GiB, more than any bound here.
_MAX_LENGTH_OCTETS = 4
# X.690 8.1.2.2 and 8.1.2.5: bits 8-7 of the identifier are the class,
# bit 6 is set for the constructed form, bits 5-1 the tag number, with
# 31 announcing the high-tag-number form (8.1.2.4).
_CLASS_SHIFT = 6
_CONSTRUCTED = 0x20
_NUMBER_MASK = 0x1F
_HIGH_TAG = 0x1F
# X.690 8.1.3.4 to 8.1.3.6: the long form sets bit 8 of the first
# length octet; 0x80 alone is the indefinite form, 0xFF is reserved.
_LONG_FORM = 0x80
_INDEFINITE = 0x80
_RESERVED = 0xFF


class BerError(ValueError):
    """The bytes are not a BER value this codec accepts."""


class TagClass(IntEnum):
    """The tag classes of X.690 8.1.2.2 (table 1)."""

    UNIVERSAL = 0
    APPLICATION = 1
    CONTEXT = 2
    PRIVATE = 3


@dataclass(frozen=True)
class Tag:
    """A tag with its form: the identifier octet of X.690 8.1.2."""

    cls: TagClass
    constructed: bool
    number: int

    def identifier(self) -> int:
        if not 0 <= self.number < _HIGH_TAG:
            raise BerError(f"tag number {self.number} needs the high-tag form")
        form = _CONSTRUCTED if self.constructed else 0
        return (self.cls << _CLASS_SHIFT) | form | self.number


def application(number: int, constructed: bool = True) -> Tag:
    return Tag(TagClass.APPLICATION, constructed, number)


def context(number: int, constructed: bool = False) -> Tag:
    return Tag(TagClass.CONTEXT, constructed, number)


# Universal tags of X.680 8.6 (table 1) that LDAP uses.
BOOLEAN = Tag(TagClass.UNIVERSAL, False, 1)
INTEGER = Tag(TagClass.UNIVERSAL, False, 2)
OCTET_STRING = Tag(TagClass.UNIVERSAL, False, 4)
NULL = Tag(TagClass.UNIVERSAL, False, 5)
ENUMERATED = Tag(TagClass.UNIVERSAL, False, 10)
SEQUENCE = Tag(TagClass.UNIVERSAL, True, 16)
SET = Tag(TagClass.UNIVERSAL, True, 17)


@dataclass(frozen=True)
class Element:
    """One decoded value: its tag, and its contents octets when
    primitive or the elements inside it when constructed."""

    tag: Tag
    content: bytes = b""
    children: tuple[Element, ...] = ()


# Encoding (X.690 8.1): identifier, definite length, contents.


def encode(tag: Tag, content: bytes) -> bytes:
    return bytes([tag.identifier()]) + encode_length(len(content)) + content


def encode_length(length: int) -> bytes:
    """The definite length, short form below 128 (X.690 8.1.3.4) and
    long form with the fewest octets above (X.690 8.1.3.5)."""
    if length < 0:
        raise BerError(f"negative length {length}")
    if length < _LONG_FORM:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(octets) > _MAX_LENGTH_OCTETS:
        raise BerError(f"length {length} is too large")
    return bytes([_LONG_FORM | len(octets)]) + octets


def integer(value: int, tag: Tag = INTEGER) -> bytes:
    """Two's complement in the fewest octets (X.690 8.3.2)."""
    magnitude = value if value >= 0 else ~value
    size = (magnitude.bit_length() + 8) // 8  # a sign bit included
    return encode(tag, value.to_bytes(size, "big", signed=True))


def enumerated(value: int) -> bytes:
    return integer(value, ENUMERATED)


def boolean(value: bool, tag: Tag = BOOLEAN) -> bytes:
    # X.690 8.2.2; RFC 4511 5.1 asks for 0xFF as TRUE.
    return encode(tag, b"\xff" if value else b"\x00")


def octet_string(value: bytes | str, tag: Tag = OCTET_STRING) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return encode(tag, data)


def null(tag: Tag = NULL) -> bytes:
    return encode(tag, b"")


def constructed(tag: Tag, *parts: bytes) -> bytes:
    return encode(tag, b"".join(parts))


def sequence(*parts: bytes) -> bytes:
    return constructed(SEQUENCE, *parts)


# Decoding.


@dataclass(frozen=True)
class _Header:
    tag: Tag
    length: int
    size: int


def frame_size(data: bytes, limit: int) -> int | None:
    """The size of the first element of ``data``, header included, or
    None while its header is still incomplete.

    Raises BerError when the header is not acceptable or announces more
    than ``limit`` bytes, without needing the contents.
    """
    header = _read_header(data, 0, len(data))
    if header is None:
        return None
    total = header.size + header.length
    if total > limit:
        raise BerError(
            f"an element of {header.length} bytes is over the limit of {limit}"
        )
    return total


def decode(data: bytes) -> Element:
    """Decode exactly one element that fills ``data``."""
    budget = _Budget()
    element, end = _decode_at(data, 0, len(data), 1, budget)
    if end != len(data):
        raise BerError(f"{len(data) - end} bytes follow the element")
    return element


@dataclass
class _Budget:
    elements: int = 0

    def spend(self) -> None:
        self.elements += 1
        if self.elements > MAX_ELEMENTS:
            raise BerError(f"more than {MAX_ELEMENTS} elements")


def _decode_at(
    data: bytes, start: int, stop: int, depth: int, budget: _Budget
) -> tuple[Element, int]:
    """Decode the element at ``start``, which must end by ``stop``."""
    if depth > MAX_DEPTH:
        raise BerError(f"nested deeper than {MAX_DEPTH} levels")
    budget.spend()
    header = _read_header(data, start, stop)
    if header is None:
        raise BerError(f"truncated header at offset {start}")
    begin = start + header.size
    end = begin + header.length
    if end > stop:
        raise BerError(
            f"element at offset {start} claims {header.length} bytes, "
            f"{stop - begin} are left"
        )
    if not header.tag.constructed:
        return Element(header.tag, data[begin:end]), end
    children: list[Element] = []
    at = begin
    while at < end:
        child, at = _decode_at(data, at, end, depth + 1, budget)
        children.append(child)
    return Element(header.tag, children=tuple(children)), end


def _read_header(data: bytes, start: int, stop: int) -> _Header | None:
    """Identifier and length octets at ``start``; None if they do not
    end by ``stop``."""
    if stop < start + 2:
        return None
    first = data[start]
    if first & _NUMBER_MASK == _HIGH_TAG:
        raise BerError(f"high tag number form in identifier {first:#04x}")
    tag = Tag(
        TagClass(first >> _CLASS_SHIFT),
        bool(first & _CONSTRUCTED),
        first & _NUMBER_MASK,
    )
    octet = data[start + 1]
    if octet < _LONG_FORM:
        return _Header(tag, octet, 2)
    if octet == _INDEFINITE:
        raise BerError("indefinite length (RFC 4511 5.1 allows definite only)")
    if octet == _RESERVED:
        raise BerError("reserved length octet 0xff")
    count = octet & ~_LONG_FORM
    if count > _MAX_LENGTH_OCTETS:
        raise BerError(f"length of {count} octets")
    if stop < start + 2 + count:
        return None
    length = int.from_bytes(data[start + 2 : start + 2 + count], "big")
    return _Header(tag, length, 2 + count)


# Reading primitive values out of elements.


def read_integer(element: Element, tag: Tag = INTEGER) -> int:
    """The value of an INTEGER (X.690 8.3) or ENUMERATED (8.4)."""
    content = _primitive(element, tag)
    if not content:
        raise BerError("an INTEGER needs at least one contents octet")
    if len(content) > MAX_INTEGER_OCTETS:
        raise BerError(f"an INTEGER of {len(content)} octets")
    return int.from_bytes(content, "big", signed=True)


def read_enumerated(element: Element) -> int:
    return read_integer(element, ENUMERATED)


def read_boolean(element: Element, tag: Tag = BOOLEAN) -> bool:
    """X.690 8.2: one octet, any non-zero value is TRUE."""
    content = _primitive(element, tag)
    if len(content) != 1:
        raise BerError(f"a BOOLEAN of {len(content)} octets")
    return content != b"\x00"


def read_octets(element: Element, tag: Tag = OCTET_STRING) -> bytes:
    return _primitive(element, tag)


def children_of(element: Element, tag: Tag) -> tuple[Element, ...]:
    """The elements inside a constructed ``element`` tagged ``tag``."""
    expect(element, tag)
    return element.children


def expect(element: Element, tag: Tag) -> None:
    if element.tag != tag:
        raise BerError(f"expected {describe(tag)}, found {describe(element.tag)}")


def _primitive(element: Element, tag: Tag) -> bytes:
    expect(element, tag)
    return element.content


def describe(tag: Tag) -> str:
    """A tag as ASN.1 writes it: ``[APPLICATION 4]``, ``[2]``, or the
    universal type's number, with its form."""
    form = "constructed" if tag.constructed else "primitive"
    if tag.cls is TagClass.CONTEXT:
        return f"[{tag.number}] {form}"
    return f"[{tag.cls.name} {tag.number}] {form}"
