"""Byte-level and property tests of the extended-error decoder."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes.base import Reason
from probes.icmp import IcmpError, Origin, parse_extended_err


def record(origin: int, icmp_type: int, code: int, sender: bytes) -> bytes:
    head = struct.pack("=IBBBBII", 113, origin, icmp_type, code, 0, 0, 0)
    return head + sender


def sockaddr_in(address: str) -> bytes:
    family = socket.AF_INET.to_bytes(2, "little")
    return family + b"\x00\x00" + socket.inet_aton(address) + bytes(8)


def sockaddr_in6(address: str) -> bytes:
    family = socket.AF_INET6.to_bytes(2, "little")
    packed = socket.inet_pton(socket.AF_INET6, address)
    return family + bytes(6) + packed + bytes(4)


@pytest.mark.parametrize(
    ("origin", "icmp_type", "code", "reason", "name"),
    [
        (2, 3, 13, Reason.PROHIBITED, "admin-prohibited"),
        (2, 3, 10, Reason.PROHIBITED, "host-prohibited"),
        (2, 3, 9, Reason.PROHIBITED, "net-prohibited"),
        (2, 3, 1, Reason.UNREACHABLE, "host-unreachable"),
        (2, 3, 0, Reason.UNREACHABLE, "net-unreachable"),
        (2, 3, 3, Reason.REFUSED, "port-unreachable"),
        (2, 11, 0, Reason.UNREACHABLE, "time-exceeded"),
        (3, 1, 1, Reason.PROHIBITED, "admin-prohibited"),
        (3, 1, 4, Reason.REFUSED, "port"),
        (3, 1, 3, Reason.UNREACHABLE, "address"),
        (1, 0, 0, Reason.UNREACHABLE, "local error 113"),
    ],
)
def test_reasons(
    origin: int, icmp_type: int, code: int, reason: Reason, name: str
) -> None:
    report = parse_extended_err(
        record(origin, icmp_type, code, sockaddr_in("192.0.2.7"))
    )
    assert report.reason is reason
    assert report.name() == name
    assert report.errno == 113


def test_offender_v4_and_v6() -> None:
    v4 = parse_extended_err(record(2, 3, 13, sockaddr_in("192.0.2.1")))
    assert v4.offender == "192.0.2.1"
    assert v4.describe() == "ICMP admin-prohibited from 192.0.2.1"
    v6 = parse_extended_err(record(3, 1, 1, sockaddr_in6("2001:db8::1")))
    assert v6.offender == "2001:db8::1"
    assert v6.origin is Origin.ICMP6


def test_no_offender() -> None:
    report = parse_extended_err(record(2, 3, 1, b""))
    assert report.offender is None
    assert report.describe() == "ICMP host-unreachable"


def test_short_record_is_an_icmp_error() -> None:
    with pytest.raises(IcmpError, match="too short"):
        parse_extended_err(bytes(15))


def test_unknown_origin_is_an_icmp_error() -> None:
    with pytest.raises(IcmpError, match="origin 9"):
        parse_extended_err(record(9, 0, 0, b""))


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_icmp_error(data: bytes) -> None:
    try:
        report = parse_extended_err(data)
    except IcmpError:
        return
    assert isinstance(report.describe(), str)
    assert report.reason in Reason


@given(st.integers(0, 40))
def test_truncated_records(cut: int) -> None:
    whole = record(2, 3, 13, sockaddr_in("198.51.100.9"))
    try:
        parse_extended_err(whole[:cut])
    except IcmpError:
        assert cut < 16
