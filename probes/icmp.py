"""Decode the kernel's extended socket errors into ICMP reports.

With ``IP_RECVERR`` (``IPV6_RECVERR``) set on a socket, Linux queues each
ICMP error that concerns it, with the ICMP type, code and the address of the
host or router that sent it, and a failed ``connect`` or ``recv`` leaves that
record on the socket's error queue. Reading it needs no raw socket and no
privilege. This module is the pure part: bytes of ``struct
sock_extended_err`` (linux/errqueue.h) in, an :class:`IcmpReport` out, and
the verdict that report means. Other systems have no such queue; there the
layer above falls back to the errno alone.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum

from probes.base import Reason

# linux/in.h and linux/in6.h; Python 3.11's socket module lacks both.
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)

# struct sock_extended_err: ee_errno u32, ee_origin u8, ee_type u8,
# ee_code u8, ee_pad u8, ee_info u32, ee_data u32; the offender's
# sockaddr follows it (SO_EE_OFFENDER).
_EXTENDED_ERR = struct.Struct("=IBBBBII")


class IcmpError(ValueError):
    """The bytes are not a ``sock_extended_err`` record."""


class Origin(IntEnum):
    """``ee_origin``: who raised the error."""

    NONE = 0
    LOCAL = 1
    ICMP = 2
    ICMP6 = 3


class Unreach(IntEnum):
    """ICMPv4 destination-unreachable codes (RFC 792, RFC 1812 5.2.7.1)."""

    NET = 0
    HOST = 1
    PROTOCOL = 2
    PORT = 3
    FRAG_NEEDED = 4
    NET_PROHIBITED = 9
    HOST_PROHIBITED = 10
    ADMIN_PROHIBITED = 13


class Unreach6(IntEnum):
    """ICMPv6 destination-unreachable codes (RFC 4443 3.1)."""

    NO_ROUTE = 0
    ADMIN_PROHIBITED = 1
    BEYOND_SCOPE = 2
    ADDRESS = 3
    PORT = 4
    POLICY_FAILED = 5
    REJECT_ROUTE = 6


ICMP_DEST_UNREACH = 3
ICMP_TIME_EXCEEDED = 11
ICMP6_DEST_UNREACH = 1
ICMP6_TIME_EXCEEDED = 3

_PROHIBITED_V4 = {
    Unreach.NET_PROHIBITED,
    Unreach.HOST_PROHIBITED,
    Unreach.ADMIN_PROHIBITED,
}
_PROHIBITED_V6 = {
    Unreach6.ADMIN_PROHIBITED,
    Unreach6.POLICY_FAILED,
    Unreach6.REJECT_ROUTE,
}


@dataclass(frozen=True)
class IcmpReport:
    """One queued error: its errno, origin, ICMP type and code, sender."""

    errno: int
    origin: Origin
    type: int
    code: int
    offender: str | None

    @property
    def reason(self) -> Reason:
        """The result reason this ICMP error stands for."""
        if self.origin not in (Origin.ICMP, Origin.ICMP6):
            return Reason.UNREACHABLE
        if self.is_port_unreachable:
            return Reason.REFUSED
        if self.is_prohibited:
            return Reason.PROHIBITED
        return Reason.UNREACHABLE

    @property
    def is_port_unreachable(self) -> bool:
        if self.origin is Origin.ICMP:
            return (self.type, self.code) == (ICMP_DEST_UNREACH, Unreach.PORT)
        return (self.type, self.code) == (ICMP6_DEST_UNREACH, Unreach6.PORT)

    @property
    def is_prohibited(self) -> bool:
        if self.origin is Origin.ICMP:
            return self.type == ICMP_DEST_UNREACH and self.code in _PROHIBITED_V4
        if self.origin is Origin.ICMP6:
            return self.type == ICMP6_DEST_UNREACH and self.code in _PROHIBITED_V6
        return False

    def describe(self) -> str:
        """A short phrase for people, e.g. 'ICMP admin-prohibited from X'."""
        if self.origin not in (Origin.ICMP, Origin.ICMP6):
            return _strerror(self.errno) if self.errno else "local error"
        sender = f" from {self.offender}" if self.offender else ""
        return f"ICMP {self.name()}{sender}"

    def name(self) -> str:
        if self.origin is Origin.ICMP:
            return _name_v4(self.type, self.code)
        if self.origin is Origin.ICMP6:
            return _name_v6(self.type, self.code)
        return f"local error {self.errno}"

    def evidence(self) -> dict[str, str | int | None]:
        return {
            "icmp": self.name(),
            "icmp_type": self.type,
            "icmp_code": self.code,
            "icmp_from": self.offender,
        }


def _strerror(code: int) -> str:
    """The errno's text; ``ee_errno`` is 32 bits, but strerror takes a C
    int, so a value past it (never from the kernel) gets no text."""
    try:
        return os.strerror(code)
    except (OverflowError, ValueError):
        return f"local error {code}"


def _name_v4(icmp_type: int, code: int) -> str:
    if icmp_type == ICMP_TIME_EXCEEDED:
        return "time-exceeded"
    if icmp_type != ICMP_DEST_UNREACH:
        return f"type {icmp_type} code {code}"
    try:
        return Unreach(code).name.lower().replace("_", "-") + (
            "" if code in _PROHIBITED_V4 else "-unreachable"
        )
    except ValueError:
        return f"unreachable code {code}"


def _name_v6(icmp_type: int, code: int) -> str:
    if icmp_type == ICMP6_TIME_EXCEEDED:
        return "time-exceeded"
    if icmp_type != ICMP6_DEST_UNREACH:
        return f"type {icmp_type} code {code}"
    try:
        return Unreach6(code).name.lower().replace("_", "-")
    except ValueError:
        return f"unreachable code {code}"


def parse_extended_err(data: bytes) -> IcmpReport:
    """Decode ``struct sock_extended_err`` and the offender after it."""
    if len(data) < _EXTENDED_ERR.size:
        raise IcmpError(f"extended error of {len(data)} bytes is too short")
    errno, origin, icmp_type, code, _pad, _info, _data = _EXTENDED_ERR.unpack_from(data)
    try:
        known = Origin(origin)
    except ValueError as exc:
        raise IcmpError(f"unknown error origin {origin}") from exc
    offender = parse_offender(data[_EXTENDED_ERR.size :])
    return IcmpReport(errno, known, icmp_type, code, offender)


def parse_offender(data: bytes) -> str | None:
    """Decode the sockaddr_in or sockaddr_in6 of the error's sender."""
    if len(data) < 2:
        return None
    family = int.from_bytes(data[:2], "little")
    if family == socket.AF_INET and len(data) >= 8:
        return str(ipaddress.IPv4Address(data[4:8]))
    if family == socket.AF_INET6 and len(data) >= 24:
        return str(ipaddress.IPv6Address(data[8:24]))
    return None


def read_error_queue(sock: socket.socket) -> IcmpReport | None:
    """Take the newest ICMP report off the socket's error queue, if any.

    Reads at most a bounded number of records, so a flood of errors cannot
    keep this loop going.
    """
    report: IcmpReport | None = None
    for _ in range(16):
        try:
            _msg, ancdata, _flags, _addr = sock.recvmsg(
                512, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT
            )
        except OSError:
            break
        for level, kind, payload in ancdata:
            if (level, kind) in (
                (socket.IPPROTO_IP, IP_RECVERR),
                (socket.IPPROTO_IPV6, IPV6_RECVERR),
            ):
                try:
                    report = parse_extended_err(payload)
                except IcmpError:
                    continue
    return report


def enable_error_queue(sock: socket.socket) -> None:
    """Ask the kernel to queue ICMP errors on this socket (Linux only)."""
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    except OSError:
        # Not Linux: errno alone must then tell the failures apart.
        return
