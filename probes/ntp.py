"""NTP probe: one client exchange on UDP 123, and the clock it reveals.

A mode-3 (client) packet goes out with the transmit timestamp T1; only a
mode-4 (server) reply whose origin timestamp is that same 64-bit value is
taken (RFC 5905 section 8: the origin check is what keeps a stale or
forged reply out). With the server's receive and transmit timestamps T2
and T3 and our arrival time T4, RFC 5905 section 8 gives

    offset = ((T2 - T1) + (T3 - T4)) / 2
    delay  = (T4 - T1) - (T3 - T2)

computed on the raw 64-bit values with wrap-around, so the NTP era
rollover of 2036 does not matter. ntplib lays out and reads the fixed
48-byte header (RFC 5905 7.3); the timestamps are kept as raw integers,
because a float cannot hold all 64 bits of one.

The verdict: a kiss-o'-death (stratum 0 with a kiss code, RFC 5905 7.4)
is a protocol error naming its code; a server that says it is not
synchronised (leap 3, or stratum 16) fails with clock-skew, since its time
proves nothing; an offset past ``settings.max_skew`` fails, past
``settings.warn_skew`` warns.

A request that is lost is sent again, but as a new request with a fresh
T1: resending the same bytes would leave it unclear which copy a reply
answers, and a late reply would skew the offset by the wait. Datagrams
that are not a matching server reply are ignored; if nothing else came
back, they decide the verdict (``wrong-protocol`` with their first bytes,
or ``protocol-error`` for NTP replies that do not echo our timestamp).

Limits: one server address and one sample, not the several samples and
filters a real NTP client uses, so a path with jittery delay gives a
noisier offset. The offset is this host's against the server's; the
gateway's own clock is not measured. No NTP authentication (MAC or NTS).
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import ntplib

from probes.base import (
    Deadline,
    JSONValue,
    Outcome,
    ProbeRequest,
    ProbeSettings,
    Reason,
    failed,
    passed,
    printable,
    warned,
)
from probes.icmp import IcmpReport
from probes.net import Datagram, Silence, address_of, udp_exchange, unanswered

VERSION = 4
"""The NTP version we speak; servers answer with the version asked."""

# RFC 5905 7.3: the fixed header is 48 bytes; the origin, receive and
# transmit timestamps sit at offsets 24, 32 and 40, eight bytes each.
PACKET_SIZE = 48
_ORIGIN, _RECEIVE, _TRANSMIT = 24, 32, 40
LEAP_UNSYNCHRONISED = 3
MAX_STRATUM = 15
# Requests sent, each fresh, before the probe gives up.
_ATTEMPTS = 3
# The lowest bits of the transmit timestamp we send (under 16 us) are
# random, so the origin check cannot be met by guessing from the time
# alone; the offset is computed from the true T1, so they cost nothing.
_NONCE_BITS = 16
# RFC 5905 7.4: the kiss codes a client must act on as a refusal.
_REFUSALS = frozenset({"DENY", "RSTR", "RATE"})
_ERA = 1 << 64
_FRACTION = 1 << 32


class Mode(IntEnum):
    """The association modes of RFC 5905 7.3 that matter here."""

    CLIENT = 3
    SERVER = 4


class NtpError(ValueError):
    """Bytes that are not an NTP packet of the expected kind."""


@dataclass(frozen=True)
class Reply:
    """The header of a server's reply; timestamps raw (32.32 fixed)."""

    leap: int
    version: int
    mode: int
    stratum: int
    poll: int
    precision: int
    root_delay: float
    root_dispersion: float
    ref_id: int
    origin: int
    receive: int
    transmit: int

    @property
    def kiss_code(self) -> str:
        """The reference id as four ASCII letters (meaningful at stratum
        0, the kiss code, and at stratum 1, the reference source)."""
        return printable(self.ref_id.to_bytes(4, "big").rstrip(b"\0"))


def ntp_time(unix_ns: int) -> int:
    """A Unix time in nanoseconds as a raw 64-bit NTP timestamp."""
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    whole = int(ntplib.system_to_ntp_time(seconds))
    return ((whole << 32) + nanos * _FRACTION // 1_000_000_000) % _ERA


def with_nonce(transmit: int, nonce: int) -> int:
    """Replace the lowest bits of a timestamp with random ones."""
    mask = (1 << _NONCE_BITS) - 1
    return (transmit & ~mask) | (nonce & mask)


def build_request(transmit: int, version: int = VERSION) -> bytes:
    """A client request whose transmit timestamp is ``transmit``."""
    packet = ntplib.NTPPacket(version=version, mode=Mode.CLIENT)
    header: bytes = packet.to_data()
    return header[:_TRANSMIT] + transmit.to_bytes(8, "big")


def parse_reply(data: bytes) -> Reply:
    """Decode the fixed header of an NTP packet (extensions ignored)."""
    if len(data) < PACKET_SIZE:
        raise NtpError(f"{len(data)} bytes is too short for NTP")
    packet = ntplib.NTPPacket()
    try:
        packet.from_data(data)
    except ntplib.NTPException as exc:
        raise NtpError(str(exc)) from exc
    return Reply(
        leap=int(packet.leap),
        version=int(packet.version),
        mode=int(packet.mode),
        stratum=int(packet.stratum),
        poll=int(packet.poll),
        precision=int(packet.precision),
        root_delay=float(packet.root_delay),
        root_dispersion=float(packet.root_dispersion),
        ref_id=int(packet.ref_id),
        origin=_raw(data, _ORIGIN),
        receive=_raw(data, _RECEIVE),
        transmit=_raw(data, _TRANSMIT),
    )


def _raw(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 8], "big")


def answers(reply: Reply, transmit: int) -> bool:
    """True when ``reply`` is a server's answer to our ``transmit``."""
    return reply.mode == Mode.SERVER and reply.origin == transmit


def seconds_between(later: int, earlier: int) -> float:
    """``later - earlier`` in seconds, for raw timestamps that may lie on
    either side of an era boundary (RFC 5905 section 6)."""
    diff = (later - earlier) % _ERA
    if diff >= _ERA // 2:
        diff -= _ERA
    return diff / _FRACTION


def offset_and_delay(
    t1: int,
    t2: int,
    t3: int,
    t4: int,
) -> tuple[float, float]:
    """Clock offset and round-trip delay in seconds (RFC 5905 8)."""
    offset = (seconds_between(t2, t1) + seconds_between(t3, t4)) / 2
    delay = seconds_between(t4, t1) - seconds_between(t3, t2)
    return offset, delay


def ref_id_text(reply: Reply, ipv6: bool) -> str:
    """The reference id as RFC 5905 7.3 reads it: letters at stratum 0
    and 1; an IPv4 address above, or for IPv6 servers the first four
    bytes of an MD5 hash, shown in hex."""
    if reply.stratum <= 1:
        return reply.kiss_code
    if ipv6:
        return f"0x{reply.ref_id:08x}"
    return str(ipaddress.IPv4Address(reply.ref_id))


# The probe: thin I/O over the codec above.


@dataclass
class _Rejects:
    """Datagrams that were not our answer, kept to explain a silence."""

    not_ntp: int = 0
    unmatched: int = 0
    first: bytes = b""
    echo: bool = False

    @property
    def count(self) -> int:
        return self.not_ntp + self.unmatched

    def note(self, data: bytes, request: bytes, is_ntp: bool) -> None:
        if self.count == 0:
            self.first = data
            self.echo = data == request
        if is_ntp:
            self.unmatched += 1
        else:
            self.not_ntp += 1


@dataclass(frozen=True)
class _Sample:
    reply: Reply
    t1: int
    t4: int


async def probe(request: ProbeRequest) -> Outcome:
    """Ask the server for the time and judge the answer."""
    address = await address_of(request)
    if isinstance(address, Outcome):
        return address
    rejects = _Rejects()
    result = await _ask(address, request, rejects)
    if isinstance(result, IcmpReport | Silence):
        if isinstance(result, Silence) and rejects.count:
            return _rejected(address, request.port, rejects).at(address)
        return unanswered(result, address, request.port)
    offset, delay = offset_and_delay(
        result.t1, result.reply.receive, result.reply.transmit, result.t4
    )
    request.log.debug(
        "ntp.reply", stratum=result.reply.stratum, offset_s=round(offset, 6)
    )
    evidence = _evidence(address, result.reply, offset, delay)
    verdict = _judge(address, result.reply, offset, request.settings, evidence)
    return verdict.at(address)


async def _ask(
    address: str, request: ProbeRequest, rejects: _Rejects
) -> _Sample | IcmpReport | Silence:
    """Up to three fresh requests, the time left shared out among them."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent_total = 0
    for attempt in range(_ATTEMPTS):
        share = request.deadline.remaining() / (_ATTEMPTS - attempt)
        until = Deadline(min(request.deadline.when, loop.time() + share))
        t1 = ntp_time(time.time_ns())
        sent = with_nonce(t1, secrets.randbits(_NONCE_BITS))
        payload = build_request(sent)
        samples: list[_Sample] = []
        request.log.debug("ntp.request", attempt=attempt + 1)
        result = await udp_exchange(
            address,
            request.port,
            payload,
            until,
            accept=_acceptor(payload, sent, t1, samples, rejects),
            resends=0,
        )
        if isinstance(result, Datagram):
            return samples[0]
        if isinstance(result, IcmpReport):
            return result
        sent_total += result.sent
    return Silence(round(loop.time() - started, 1), sent_total)


def _acceptor(
    payload: bytes,
    sent: int,
    t1: int,
    samples: list[_Sample],
    rejects: _Rejects,
) -> Callable[[bytes], bool]:
    """A filter for udp_exchange that takes only the answer to ``sent``
    and notes T4 as it arrives."""

    def accept(data: bytes) -> bool:
        t4 = ntp_time(time.time_ns())
        try:
            reply = parse_reply(data)
        except NtpError:
            rejects.note(data, payload, is_ntp=False)
            return False
        if not answers(reply, sent):
            rejects.note(data, payload, is_ntp=reply.mode == Mode.SERVER)
            return False
        samples.append(_Sample(reply, t1, t4))
        return True

    return accept


# Verdicts.


def _judge(
    address: str,
    reply: Reply,
    offset: float,
    settings: ProbeSettings,
    evidence: dict[str, JSONValue],
) -> Outcome:
    if reply.stratum == 0 and (
        reply.leap != LEAP_UNSYNCHRONISED or reply.kiss_code in _REFUSALS
    ):
        return _kissed(address, reply.kiss_code, evidence)
    if (
        reply.leap == LEAP_UNSYNCHRONISED
        or reply.stratum == 0
        or reply.stratum > MAX_STRATUM
    ):
        return _unsynchronised(address, reply, evidence)
    if reply.transmit == 0 or reply.receive == 0:
        return failed(
            Reason.PROTOCOL_ERROR,
            f"the NTP server at {address} left its receive or transmit "
            "timestamp at zero",
            f"Use another NTP server: the one at {address} is broken.",
            **evidence,
        )
    return _skew(address, reply, offset, settings, evidence)


def _kissed(
    address: str,
    code: str,
    evidence: dict[str, JSONValue],
) -> Outcome:
    if code == "RATE":
        remedy = (
            f"The server at {address} limits how often this host may ask: "
            "wait, and check that nothing else behind the same address "
            "polls it too often."
        )
    elif code in _REFUSALS:
        remedy = (
            f"The server at {address} refuses this host: allow it in the "
            "server's access rules, or use another NTP server."
        )
    else:
        remedy = f"Use another NTP server, or find why {address} sent {code}."
    return failed(
        Reason.PROTOCOL_ERROR,
        f"the NTP server at {address} answered with the kiss-o'-death "
        f"code {code or '(empty)'} instead of the time",
        remedy,
        kiss_code=code,
        **evidence,
    )


def _unsynchronised(
    address: str, reply: Reply, evidence: dict[str, JSONValue]
) -> Outcome:
    return failed(
        Reason.CLOCK_SKEW,
        f"the NTP server at {address} answered but is not synchronised "
        f"itself (leap {reply.leap}, stratum {reply.stratum}), so its "
        "time proves nothing",
        f"Give the NTP server at {address} a working time source, or "
        "point the gateway at a synchronised server.",
        **evidence,
    )


def _skew(
    address: str,
    reply: Reply,
    offset: float,
    settings: ProbeSettings,
    evidence: dict[str, JSONValue],
) -> Outcome:
    size = abs(offset)
    if size <= min(settings.warn_skew, settings.max_skew):
        return passed(
            f"the NTP server at {address} answered: stratum {reply.stratum}, "
            f"offset {offset:+.3f} s, round trip {evidence['rtt_ms']} ms",
            **evidence,
        )
    side = "behind" if offset > 0 else "ahead of"
    detail = (
        f"this host's clock and the server's at {address} differ by "
        f"{size:.3f} s (this host is {side} it)"
    )
    remedy = (
        "Find which clock is wrong: synchronise this host and the gateway "
        f"to a good time source, or correct the server at {address}."
    )
    if size > settings.max_skew:
        detail += f"; activation fails past {settings.max_skew:g} s"
        return failed(Reason.CLOCK_SKEW, detail, remedy, **evidence)
    detail += f"; the warning threshold is {settings.warn_skew:g} s"
    return warned(Reason.CLOCK_SKEW, detail, remedy, **evidence)


def _rejected(address: str, port: int, rejects: _Rejects) -> Outcome:
    count = rejects.count
    shown: dict[str, JSONValue] = {
        "rejected": count,
        "first_bytes": printable(rejects.first),
    }
    if rejects.not_ntp == 0:
        return failed(
            Reason.PROTOCOL_ERROR,
            f"{count} NTP replies from {address} did not carry our "
            "transmit timestamp as their origin: stale, forged, or a "
            "broken server",
            f"Use another NTP server, or look for a device on the way "
            f"that answers NTP for {address}.",
            **shown,
        )
    seen = printable(rejects.first, 32)
    what = (
        "our own request echoed back"
        if rejects.echo
        else f"{count} datagrams that are not NTP replies"
    )
    return failed(
        Reason.WRONG_PROTOCOL,
        f"{address} UDP {port} answered with {what}: {seen}",
        f"Point the gateway at an NTP server: what answers on {address} "
        f"UDP {port} is not one.",
        **shown,
    )


def _evidence(
    address: str, reply: Reply, offset: float, delay: float
) -> dict[str, JSONValue]:
    return {
        "server": address,
        "offset_s": round(offset, 3),
        "rtt_ms": round(delay * 1000, 2),
        "stratum": reply.stratum,
        "leap": reply.leap,
        "version": reply.version,
        "ref_id": ref_id_text(reply, ipv6=":" in address),
        "root_delay_ms": round(reply.root_delay * 1000, 2),
        "root_dispersion_ms": round(reply.root_dispersion * 1000, 2),
    }
