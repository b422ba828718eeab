"""Where a path breaks: a SYN probe, a trace on the service port, the MTU.

A failed rule says what the agent saw at its end of the path. These
diagnostics send crafted packets to say where the path breaks, and who
breaks it:

- the SYN probe (TCP rules) sends one SYN to the service port: a SYN-ACK
  means open, a reset closed, an ICMP destination-unreachable prohibited
  or unreachable (naming the router that sent it), and nothing filtered.
  UDP rules get the same direct probe, a datagram with the probe's
  payload; its answer counts like the SYN probe's;
- the trace sends the service's own packets (TCP SYNs, or UDP datagrams
  with the probe's payload) to the service port with rising TTLs, all at
  once. The routers on the way answer ICMP time-exceeded, until the
  destination answers, a router rejects, or the path goes silent: then
  the last router that answered is the last one the packets are known to
  have passed. The trace goes one hop past the device that answered the
  direct probe (its distance read from the TTL of that answer), or to
  ``max_hops`` when none did or the last hop was a router;
- the path MTU probe, once the destination has answered, sends packets
  with Don't Fragment set, from the route's interface MTU down to 576
  bytes, then narrows the gap between the largest that arrived and the
  smallest that did not. An ICMP fragmentation-needed names the router
  and its next-hop MTU (RFC 1191); large packets lost in silence while
  small ones pass is a black hole (RFC 2923 2.1).

Packets leave through an ``IPPROTO_RAW`` socket, so the kernel routes them
and resolves the next hop; answers arrive on raw ICMP and TCP or UDP
sockets, which get a copy of every such packet this host receives. These
sockets are read from the event loop, so no thread ever blocks waiting;
scapy builds and decodes the packets. Loading scapy takes most of a
second: it happens in a worker thread the first time diagnostics run,
never when this module is imported.

Answers are matched strictly, because every diagnosis running at the same
time sees every packet. Each probe leaves from its own source port, held
for the time of its stage by a socket bound to it (bound only: never
listening, never connected) so that no local connection takes the same
port, and not handed to another diagnosis of this process for a while
after. A reply counts only if it comes from the destination's service
port to that source port and, for TCP, acknowledges that probe's sequence
number. An ICMP error counts only if the packet it quotes (RFC 792: the
IP header and at least the first 8 bytes of the transport header) is that
probe: same addresses, protocol, ports and TCP sequence number.

The kernel's reset. When the destination answers a SYN with a SYN-ACK,
this host's kernel finds no socket owning the connection (the holding
socket is bound, not listening) and answers with a reset. That reset is
kept on purpose: it is valid (its sequence number is the SYN-ACK's
acknowledgement number), it tells the destination at once to drop its
half-open connection, and it is what a SYN scanner sends anyway. Dropping
it, with a firewall rule on this host, would leave the destination
retransmitting SYN-ACKs and holding the half-open connection for a minute.

Every wait is bounded by the one deadline. A diagnosis sends at most
``ASKS`` direct probes, ``ASKS_UNHEARD`` times ``max_hops`` trace probes
and ``len(LADDER) + 1 + MTU_EXTRA_PROBES`` MTU probes.

Limits:

- IPv4 only, on Linux (raw sockets with ``IP_HDRINCL`` semantics).
- Routers rate-limit the ICMP errors they send; Linux allows a burst of 6
  and then one a second towards each address (``net.ipv4.icmp_ratelimit``).
  That is why the trace stops one hop past the end the direct probe
  found, and why silent probes are asked again a second later. Many
  diagnoses through one router at the same time can still find a hop
  silent that would answer on its own; the verdict then rests on the
  direct probe. Port-unreachable errors from a UDP destination are
  limited the same way, so the UDP path MTU can come out lower than the
  truth; a black hole is only reported when a loss was seen twice.
- A firewall that resets in the destination's name is told apart from
  the destination only by the reset's TTL: the hop count it implies
  (assuming the sender started at 64, 128 or 255) is compared with the
  trace, which asymmetric routing can mislead.
- A UDP service that ignores a padded datagram looks like loss in the
  MTU probe.
- Answers dropped by this host's own input firewall are never seen, as
  raw sockets receive after it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import importlib.util
import ipaddress
import json
import os
import random
import socket
import struct
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog

from probes.base import Deadline, JSONValue, Transport
from probes.icmp import (
    ICMP_DEST_UNREACH,
    ICMP_TIME_EXCEEDED,
    IcmpReport,
    Origin,
    Unreach,
)

RAW_HELP = (
    "Path diagnostics craft their own packets through raw sockets, which "
    "need root or the CAP_NET_RAW capability. Run sgw-reach as root, or "
    "grant the capability to the Python interpreter that runs it with "
    "`setcap cap_net_raw+ep` on the real interpreter file (not a symlink), "
    "or start its container with `--cap-add NET_RAW`."
)

MAX_HOPS = 30
# Total IP lengths tried first, below the interface's MTU: Ethernet,
# common tunnel MTUs, the IPv6 minimum, and the IPv4 minimum a host must
# accept (RFC 791).
LADDER = (1500, 1400, 1280, 1024, 576)
# Probes beyond the first ladder to confirm losses and narrow the gap.
MTU_EXTRA_PROBES = 8
# New sizes tried in one round, and the gap at which the search stops.
MTU_SPLIT = 3
MTU_PRECISION = 8
# A round waits this long for its first answer; once round trips are
# known, it waits a few of them, at least MIN_SETTLE.
FIRST_WAIT = 1.5
MIN_SETTLE = 0.75
# The trace waits this long for the direct probe's answer, which tells how
# far the trace needs to go.
HEAD_START = 0.5
# Routers refill their ICMP budget once a second: a probe is asked again
# after that, and sent at most ASKS times.
REFILL = 1.0
ASKS = 3
# A trace that heard nothing at all keeps asking longer: it costs no
# router any budget, and a router out of it answers one more each second.
ASKS_UNHEARD = 5

IP_HEADER = 20
# A SYN carries the MSS option, as every real one does.
TCP_HEADER = 24
UDP_HEADER = 8
_SYN, _RST, _ACK = 0x02, 0x04, 0x10
_SEQ_SPACE = 1 << 32
# linux/in.h, linux/icmp.h: not in Python's socket module.
IP_MTU = getattr(socket, "IP_MTU", 14)
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_PROBE = getattr(socket, "IP_PMTUDISC_PROBE", 3)
SOL_RAW = 255
ICMP_FILTER = 1
# Packets read in one go before other work gets the event loop.
_READ_BATCH = 64
# A source port this process used is not handed out again for this long,
# so a late answer to one diagnosis cannot reach another one.
_QUARANTINE = 30.0
_recent_ports: dict[tuple[int, int], float] = {}
# The load of scapy, shared by every diagnosis in the process.
_scapy_lock = threading.Lock()
_scapy_load: concurrent.futures.Future[None] | None = None

_PROHIBITED = {
    Unreach.NET_PROHIBITED,
    Unreach.HOST_PROHIBITED,
    Unreach.ADMIN_PROHIBITED,
}


class Reply(StrEnum):
    """What came back for one probe."""

    TIME_EXCEEDED = "time-exceeded"
    SYN_ACK = "syn-ack"
    RST = "rst"
    ANSWER = "answer"
    PORT_UNREACHABLE = "port-unreachable"
    PROHIBITED = "prohibited"
    UNREACHABLE = "unreachable"
    FRAG_NEEDED = "frag-needed"


class SynState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    PROHIBITED = "prohibited"
    UNREACHABLE = "unreachable"
    FILTERED = "filtered"


class End(StrEnum):
    """How a trace ended."""

    REACHED = "reached"
    REFUSED = "refused"
    PROHIBITED = "prohibited"
    UNREACHABLE = "unreachable"
    DROPPED = "dropped"
    BEYOND = "beyond-max-hops"


class Fate(StrEnum):
    """What became of one size in the path MTU probe."""

    PASSED = "passed"
    FRAG_NEEDED = "frag-needed"
    REJECTED = "rejected"
    LOST = "lost"
    TOO_BIG_HERE = "too-big-here"


@dataclass(frozen=True)
class Flow:
    """The two ends of the probed path, as the packets name them."""

    source: str
    address: str
    port: int
    transport: Transport

    @property
    def proto(self) -> int:
        if self.transport is Transport.TCP:
            return socket.IPPROTO_TCP
        return socket.IPPROTO_UDP

    @property
    def packed(self) -> bytes:
        return ipaddress.IPv4Address(self.address).packed


@dataclass(frozen=True)
class Sent:
    """What identifies one probe: its source port, TCP sequence number and
    the length of the data it carries."""

    sport: int
    seq: int = 0
    data_len: int = 0


@dataclass(frozen=True)
class Answer:
    """One reply matched to a probe."""

    kind: Reply
    sender: str
    icmp_type: int | None = None
    icmp_code: int | None = None
    next_hop_mtu: int | None = None
    reply_ttl: int | None = None

    @property
    def icmp_name(self) -> str | None:
        """The ICMP error's name, e.g. ``admin-prohibited``."""
        if self.icmp_type is None:
            return None
        report = IcmpReport(
            0, Origin.ICMP, self.icmp_type, self.icmp_code or 0, self.sender
        )
        return report.name()


@dataclass(frozen=True)
class Heard:
    """An answer and its round trip."""

    answer: Answer
    rtt_ms: float


# Raw bytes in, matched answers out.


def inet() -> Any:
    """scapy's IPv4 layers, loaded on first use (most of a second)."""
    import scapy.layers.inet as layers  # noqa: PLC0415 - loaded only when used

    return layers


def wanted(data: bytes, flow: Flow) -> bool:
    """Whether a received packet may answer a probe of ``flow``: a cheap
    look at the bytes, so unrelated traffic is never decoded."""
    if len(data) < 28 or data[0] >> 4 != 4:
        return False
    head = (data[0] & 0x0F) * 4
    if data[9] == socket.IPPROTO_ICMP:
        # RFC 792: type, code, checksum, 4 more bytes, then the quote.
        quoted = data[head + 8 :]
        if len(quoted) < 24:
            return False
        inner = (quoted[0] & 0x0F) * 4
        return (
            quoted[9] == flow.proto
            and quoted[16:20] == flow.packed
            and quoted[inner + 2 : inner + 4] == flow.port.to_bytes(2, "big")
        )
    return (
        data[9] == flow.proto
        and data[12:16] == flow.packed
        and data[head : head + 2] == flow.port.to_bytes(2, "big")
    )


def decode(data: bytes) -> Any | None:
    """The packet as scapy layers, or None when scapy cannot dissect it."""
    layers = inet()
    from scapy.error import Scapy_Exception  # noqa: PLC0415 - with inet()

    try:
        return layers.IP(data)
    except (struct.error, ValueError, Scapy_Exception):
        # scapy raises ValueError or struct.error on a truncated header,
        # and its own error on a packet past its dissection limits (too
        # many list items); a stray packet on the raw socket must not stop
        # a diagnosis.
        return None


def classify(
    packet: Any, flow: Flow, sent: Mapping[int, Sent]
) -> tuple[int, Answer] | None:
    """Which probe ``packet`` answers (by source port), and how.

    scapy's own ``answers()`` is not used: for a quoted TCP header it
    skips the sequence number unless ``conf.check_TCPerror_seqack`` is
    set, and for a UDP reply it leaves the decision to the payload's
    dissector (DNS, NTP) rather than the ports.
    """
    layers = inet()
    if not isinstance(packet, layers.IP) or packet.dst != flow.source:
        return None
    body = packet.payload
    if packet.proto == socket.IPPROTO_ICMP and isinstance(body, layers.ICMP):
        return _classify_icmp(packet, flow, sent)
    if packet.src != flow.address or packet.proto != flow.proto:
        return None
    if isinstance(body, layers.TCP):
        return _classify_tcp(packet, flow, sent)
    if isinstance(body, layers.UDP):
        return _classify_udp(packet, flow, sent)
    return None


def _classify_udp(
    packet: Any, flow: Flow, sent: Mapping[int, Sent]
) -> tuple[int, Answer] | None:
    datagram = packet.payload
    probe = sent.get(datagram.dport)
    if probe is None or datagram.sport != flow.port:
        return None
    return probe.sport, Answer(Reply.ANSWER, packet.src, reply_ttl=packet.ttl)


def _classify_tcp(
    packet: Any, flow: Flow, sent: Mapping[int, Sent]
) -> tuple[int, Answer] | None:
    segment = packet.payload
    probe = sent.get(segment.dport)
    if probe is None or segment.sport != flow.port:
        return None
    flags = int(segment.flags)
    # The answer to a SYN acknowledges it (RFC 9293 3.10.7.2); a reset
    # may acknowledge the data the SYN carried as well.
    acked = (segment.ack - probe.seq - 1) % _SEQ_SPACE
    if not flags & _ACK or acked not in (0, probe.data_len):
        return None
    if flags & _RST:
        kind = Reply.RST
    elif flags & _SYN:
        kind = Reply.SYN_ACK
    else:
        return None
    return probe.sport, Answer(kind, packet.src, reply_ttl=packet.ttl)


def _classify_icmp(
    packet: Any, flow: Flow, sent: Mapping[int, Sent]
) -> tuple[int, Answer] | None:
    layers = inet()
    icmp = packet.payload
    kind = icmp_kind(icmp.type, icmp.code)
    quoted = icmp.payload
    if kind is None or not isinstance(quoted, layers.IPerror):
        return None
    if (quoted.src, quoted.dst, quoted.proto) != (
        flow.source,
        flow.address,
        flow.proto,
    ):
        return None
    inner = quoted.payload
    tcp = flow.transport is Transport.TCP
    expected = layers.TCPerror if tcp else layers.UDPerror
    if not isinstance(inner, expected) or inner.dport != flow.port:
        return None
    probe = sent.get(inner.sport)
    if probe is None:
        return None
    if tcp and inner.seq != probe.seq:
        return None
    mtu = icmp.nexthopmtu if kind is Reply.FRAG_NEEDED else None
    answer = Answer(kind, packet.src, icmp.type, icmp.code, mtu, reply_ttl=packet.ttl)
    return probe.sport, answer


def icmp_kind(icmp_type: int, code: int) -> Reply | None:
    """The reply an ICMPv4 error stands for (RFC 792, RFC 1812 5.2.7.1)."""
    if icmp_type == ICMP_TIME_EXCEEDED:
        return Reply.TIME_EXCEEDED
    if icmp_type != ICMP_DEST_UNREACH:
        return None
    if code == Unreach.PORT:
        return Reply.PORT_UNREACHABLE
    if code == Unreach.FRAG_NEEDED:
        return Reply.FRAG_NEEDED
    if code in _PROHIBITED:
        return Reply.PROHIBITED
    return Reply.UNREACHABLE


def hops_away(ttl: int) -> int:
    """How many hops away a reply was sent, from the TTL it arrived with,
    assuming the sender started from a usual initial TTL."""
    for initial in (64, 128, 255):
        if ttl <= initial:
            return initial - ttl + 1
    return 1


def is_from_destination(answer: Answer, flow: Flow) -> bool:
    """Whether the answer proves the packet reached the service's host."""
    if answer.kind in (Reply.SYN_ACK, Reply.RST, Reply.ANSWER):
        return True
    return (
        answer.kind is Reply.PORT_UNREACHABLE
        and flow.transport is Transport.UDP
        and answer.sender == flow.address
    )


# Building probes.


def probe_packet(
    flow: Flow, probe: Sent, *, ttl: int, payload: bytes, mss: int = 1460
) -> bytes:
    """A probe as bytes: a SYN (carrying ``payload`` as data, if any) or a
    UDP datagram, with Don't Fragment set."""
    layers = inet()
    ip = layers.IP(
        src=flow.source,
        dst=flow.address,
        ttl=ttl,
        id=random.getrandbits(16),
        flags="DF",
    )
    if flow.transport is Transport.TCP:
        l4 = layers.TCP(
            sport=probe.sport,
            dport=flow.port,
            seq=probe.seq,
            flags="S",
            window=64240,
            options=[("MSS", mss)],
        )
    else:
        l4 = layers.UDP(sport=probe.sport, dport=flow.port)
    return bytes(ip / l4 / payload) if payload else bytes(ip / l4)


def fill(payload: bytes, size: int, transport: Transport) -> bytes:
    """Data that makes a probe exactly ``size`` bytes long (the total IP
    length): zeros for a SYN, the payload padded with zeros for UDP."""
    header = TCP_HEADER if transport is Transport.TCP else UDP_HEADER
    room = max(0, size - IP_HEADER - header)
    if transport is Transport.TCP:
        return bytes(room)
    return (payload + bytes(room))[:room]


# The SYN probe.


@dataclass(frozen=True)
class SynFinding:
    state: SynState
    heard: Heard | None

    def as_json(self) -> dict[str, JSONValue]:
        answer = self.heard.answer if self.heard else None
        ttl = answer.reply_ttl if answer else None
        return {
            "state": str(self.state),
            "from": answer.sender if answer else None,
            "icmp_type": answer.icmp_type if answer else None,
            "icmp_code": answer.icmp_code if answer else None,
            "icmp": answer.icmp_name if answer else None,
            "rtt_ms": self.heard.rtt_ms if self.heard else None,
            "reply_ttl": ttl,
            "hops_away": hops_away(ttl) if ttl is not None else None,
        }


_SYN_STATES = {
    Reply.SYN_ACK: SynState.OPEN,
    Reply.RST: SynState.CLOSED,
    Reply.PROHIBITED: SynState.PROHIBITED,
    # TCP never answers a closed port with port-unreachable: it is a
    # filter rejecting (the default of iptables' and nftables' reject).
    Reply.PORT_UNREACHABLE: SynState.PROHIBITED,
}


def syn_finding(heard: Heard | None) -> SynFinding:
    """The SYN probe's verdict from its answer, if any."""
    if heard is None:
        return SynFinding(SynState.FILTERED, None)
    state = _SYN_STATES.get(heard.answer.kind, SynState.UNREACHABLE)
    return SynFinding(state, heard)


# The trace.


@dataclass(frozen=True)
class Hop:
    ttl: int
    heard: Heard | None

    @property
    def address(self) -> str | None:
        return self.heard.answer.sender if self.heard else None

    def as_json(self) -> dict[str, JSONValue]:
        hop: dict[str, JSONValue] = {
            "ttl": self.ttl,
            "address": self.address,
            "rtt_ms": self.heard.rtt_ms if self.heard else None,
            "reply": str(self.heard.answer.kind) if self.heard else None,
        }
        if self.heard and self.heard.answer.icmp_type == ICMP_DEST_UNREACH:
            hop["icmp"] = self.heard.answer.icmp_name
        return hop


@dataclass(frozen=True)
class TraceFinding:
    hops: tuple[Hop, ...]
    end: End
    max_hops: int

    @property
    def reached(self) -> bool:
        return self.end in (End.REACHED, End.REFUSED)

    @property
    def last(self) -> Hop | None:
        """The hop the trace ends at, or the last one that answered."""
        answered = [hop for hop in self.hops if hop.heard]
        return answered[-1] if answered else None

    @property
    def complete(self) -> bool:
        """Ended by an answer, with every hop before it answering."""
        return self.end not in (End.DROPPED, End.BEYOND) and all(
            hop.heard for hop in self.hops
        )

    def as_json(self) -> dict[str, JSONValue]:
        last = self.last
        return {
            "hops": [hop.as_json() for hop in self.hops],
            "reached": self.reached,
            "last_hop": last.address if last else None,
            "last_ttl": last.ttl if last else None,
            "end": str(self.end),
            "max_hops": self.max_hops,
        }


def trace_end(answer: Answer, flow: Flow) -> End | None:
    """How a trace ends at this answer; None when it goes on."""
    if answer.kind is Reply.TIME_EXCEEDED:
        return None
    if answer.kind in (Reply.SYN_ACK, Reply.ANSWER):
        return End.REACHED
    if answer.kind is Reply.RST or is_from_destination(answer, flow):
        return End.REFUSED
    if answer.kind in (Reply.PROHIBITED, Reply.PORT_UNREACHABLE):
        return End.PROHIBITED
    return End.UNREACHABLE


def assemble_trace(
    heard: Iterable[tuple[int, Heard]], flow: Flow, max_hops: int
) -> TraceFinding:
    """The trace from the answers to each TTL, in any order."""
    by_ttl: dict[int, Heard] = {}
    for ttl, one in heard:
        by_ttl.setdefault(ttl, one)
    ends = {
        ttl: end
        for ttl, one in by_ttl.items()
        if (end := trace_end(one.answer, flow)) is not None
    }
    if ends:
        last = min(ends)
        end = ends[last]
    else:
        answered = max(by_ttl, default=0)
        end = End.BEYOND if answered >= max_hops else End.DROPPED
        last = min(answered + 1, max_hops)
    hops = tuple(Hop(ttl, by_ttl.get(ttl)) for ttl in range(1, last + 1))
    return TraceFinding(hops, end, max_hops)


def trace_reach(answer: Answer | None, max_hops: int) -> int:
    """How many TTLs the trace sends at first: one past the hop that
    answered the direct probe, by the TTL its answer arrived with; all of
    them when none came.

    Every TTL past the hop that ends the path would only make that hop
    answer again, out of the ICMP budget every diagnosis running at the
    same time needs from it.
    """
    if answer is None or answer.reply_ttl is None:
        return max_hops
    return min(max_hops, hops_away(answer.reply_ttl) + 1)


def deeper_ttls(trace: TraceFinding, deepest: int) -> list[int]:
    """The TTLs past ``deepest``, when a router answered that one."""
    if trace.end not in (End.DROPPED, End.BEYOND):
        return []
    answered = {hop.ttl for hop in trace.hops if hop.heard}
    if deepest not in answered or deepest >= trace.max_hops:
        return []
    return list(range(deepest + 1, trace.max_hops + 1))


def silent_ttls(trace: TraceFinding, sent: Collection[int], retries: int) -> list[int]:
    """The TTLs to ask again: silent, and before the end if there is one.

    They are asked once more, as a router may have been out of ICMP
    budget; up to ASKS times in all while a hop in the middle is silent,
    and ASKS_UNHEARD times while no hop answered at all.
    """
    answered = {hop.ttl for hop in trace.hops if hop.heard}
    asks = ASKS if answered else ASKS_UNHEARD
    if trace.complete or retries >= asks - 1:
        return []
    ended = trace.end not in (End.DROPPED, End.BEYOND)
    silent = [
        ttl
        for ttl in sorted(sent)
        if ttl not in answered and (not ended or ttl < len(trace.hops))
    ]
    deepest = max(answered, default=0)
    gaps = any(ttl < deepest for ttl in silent)
    if retries and answered and not gaps:
        return []
    return silent


# The path MTU.


@dataclass(frozen=True)
class SizeTry:
    """One size tried, how often, and what became of it."""

    size: int
    fate: Fate
    sends: int = 1
    sender: str | None = None
    next_hop_mtu: int | None = None

    @property
    def settled(self) -> bool:
        """Failed for certain: an error came back, or it was lost twice."""
        return self.fate is not Fate.LOST or self.sends >= 2

    def as_json(self) -> dict[str, JSONValue]:
        found: dict[str, JSONValue] = {
            "size": self.size,
            "result": str(self.fate),
            "sends": self.sends,
        }
        if self.fate is Fate.FRAG_NEEDED:
            found["from"] = self.sender
            found["next_hop_mtu"] = self.next_hop_mtu
        return found


@dataclass(frozen=True)
class MtuFinding:
    largest: int
    black_hole: bool
    frag_needed_from: str | None
    next_hop_mtu: int | None
    tried: tuple[SizeTry, ...]
    interface_mtu: int

    def as_json(self) -> dict[str, JSONValue]:
        return {
            "largest": self.largest,
            "black_hole": self.black_hole,
            "frag_needed_from": self.frag_needed_from,
            "next_hop_mtu": self.next_hop_mtu,
            "tried": [one.as_json() for one in self.tried],
            "interface_mtu": self.interface_mtu,
        }


def mtu_ladder(interface_mtu: int) -> list[int]:
    """The sizes tried first: the interface's MTU, then the usual ones
    below it."""
    top = min(interface_mtu, 65535)
    return [top, *(size for size in LADDER if size < top)]


def fate_of(answer: Answer | None, flow: Flow) -> Fate:
    if answer is None:
        return Fate.LOST
    if is_from_destination(answer, flow):
        return Fate.PASSED
    if answer.kind is Reply.FRAG_NEEDED:
        return Fate.FRAG_NEEDED
    return Fate.REJECTED


def _largest(tries: Sequence[SizeTry], floor: int) -> int:
    passed = [one.size for one in tries if one.fate is Fate.PASSED]
    return max([floor, *passed])


def _smallest_failing(tries: Sequence[SizeTry], largest: int) -> SizeTry | None:
    """The smallest size above ``largest`` that failed or must fail.

    A router's next-hop MTU says every size above it fails there too, so
    it stands for a failed size one byte larger.
    """
    failing = [
        one for one in tries if one.fate is not Fate.PASSED and one.size > largest
    ]
    failing += [
        SizeTry(one.next_hop_mtu + 1, Fate.FRAG_NEEDED, 0, one.sender, one.next_hop_mtu)
        for one in tries
        if one.fate is Fate.FRAG_NEEDED
        and one.next_hop_mtu
        and largest <= one.next_hop_mtu < one.size
    ]
    return min(failing, key=lambda one: one.size, default=None)


def next_mtu_sizes(tries: Sequence[SizeTry], floor: int, budget: int) -> list[int]:
    """The sizes to send next, largest first; none when the search is done.

    A loss seen once is asked again (a router may have been out of ICMP
    budget, or the packet unlucky); a next-hop MTU is tried as it is; the
    rest of the round splits the gap between the largest size that passed
    (``floor`` passed before the search began) and the smallest failing.
    """
    largest = _largest(tries, floor)
    failing = _smallest_failing(tries, largest)
    if failing is None or budget <= 0:
        return []
    tried = {one.size for one in tries}
    sizes = [] if failing.settled else [failing.size]
    hints = {
        one.next_hop_mtu
        for one in tries
        if one.next_hop_mtu and largest < one.next_hop_mtu < failing.size
    }
    sizes += sorted(hints - tried)
    gap = failing.size - largest
    room = min(MTU_SPLIT, budget) - len(sizes)
    if gap > MTU_PRECISION and room > 0:
        step = gap / (room + 1)
        splits = {largest + round(step * i) for i in range(1, room + 1)}
        sizes += sorted(splits - tried - set(sizes))
    return sorted(set(sizes), reverse=True)[:budget]


def mtu_finding(tries: Sequence[SizeTry], floor: int, interface_mtu: int) -> MtuFinding:
    """The path MTU verdict from the sizes tried.

    A black hole: the smallest failing size was lost in silence, a loss
    was seen twice, and something smaller passed.
    """
    largest = _largest(tries, floor)
    failing = _smallest_failing(tries, largest)
    confirmed = any(
        one.fate is Fate.LOST and one.sends >= 2 and one.size > largest for one in tries
    )
    black_hole = failing is not None and failing.fate is Fate.LOST and confirmed
    frag = failing if failing and failing.fate is Fate.FRAG_NEEDED else None
    return MtuFinding(
        largest=largest,
        black_hole=black_hole,
        frag_needed_from=frag.sender if frag else None,
        next_hop_mtu=frag.next_hop_mtu if frag else None,
        tried=tuple(sorted(tries, key=lambda one: -one.size)),
        interface_mtu=interface_mtu,
    )


# The one line for the table.


def summarize(
    flow: Flow,
    direct: Heard | None,
    trace: TraceFinding | None,
    mtu: MtuFinding | None,
) -> str:
    """Where the path breaks, in one line, from the direct probe's answer
    (the SYN probe's for TCP), the trace and the path MTU."""
    heard = _decisive(direct, trace)
    if heard is None:
        return _silence(flow, trace)
    answer = heard.answer
    kind = answer.kind
    if kind in (Reply.SYN_ACK, Reply.ANSWER):
        return _reached(flow, mtu)
    if kind is Reply.RST:
        return _reset(answer, trace, mtu)
    if is_from_destination(answer, flow):
        found = f"closed: ICMP port-unreachable from {answer.sender}"
        return found + _mtu_note(mtu)
    if kind in (Reply.PROHIBITED, Reply.PORT_UNREACHABLE):
        return f"prohibited by {answer.sender} (ICMP {answer.icmp_name})"
    return f"unreachable: ICMP {answer.icmp_name} from {answer.sender}"


def _decisive(direct: Heard | None, trace: TraceFinding | None) -> Heard | None:
    """The answer that decides: the direct probe's, else the trace's end."""
    if direct is not None:
        return direct
    if trace is not None and trace.end not in (End.DROPPED, End.BEYOND):
        return trace.hops[-1].heard
    return None


def _silence(flow: Flow, trace: TraceFinding | None) -> str:
    """Silence, said as what it proves: for TCP a drop, since a host that
    is reached answers a SYN; for UDP it may also be a service that gets
    the datagram and does not answer, which no packet can tell apart."""
    last = None if trace is None else trace.last
    if trace is not None and last is not None and trace.end is End.BEYOND:
        return f"not reached within {trace.max_hops} hops (last {last.address})"
    if trace is None:
        where = "no answer"
    elif last is None:
        where = "dropped before the first hop"
    else:
        where = f"dropped after {last.address} (hop {last.ttl})"
    if flow.transport is Transport.UDP:
        return f"{where}, or a UDP service that does not answer"
    return "filtered: no answer" if trace is None else where


def _reached(flow: Flow, mtu: MtuFinding | None) -> str:
    if mtu is not None and mtu.black_hole:
        return f"path MTU {mtu.largest}, black hole above it"
    if flow.transport is Transport.TCP:
        return f"open: SYN-ACK from {flow.address}" + _mtu_note(mtu)
    return f"answered by {flow.address}" + _mtu_note(mtu)


def _mtu_note(mtu: MtuFinding | None) -> str:
    """What the path MTU adds to a verdict, if anything."""
    if mtu is None:
        return ""
    if mtu.black_hole:
        return f"; path MTU {mtu.largest}, black hole above it"
    if mtu.frag_needed_from is not None:
        return (
            f"; path MTU {mtu.largest} (fragmentation needed at {mtu.frag_needed_from})"
        )
    return ""


def _reset(answer: Answer, trace: TraceFinding | None, mtu: MtuFinding | None) -> str:
    """A reset, and whether a device before the destination sent it.

    A filter that resets in the destination's name sends from nearer: the
    reset's TTL says fewer hops than the trace took to reach it (and the
    path MTU then only measured the way to that filter).
    """
    found = f"closed: RST from {answer.sender}" + _mtu_note(mtu)
    if trace is None or answer.reply_ttl is None or trace.end is not End.REFUSED:
        return found
    distance = hops_away(answer.reply_ttl)
    if distance >= len(trace.hops):
        return found
    hop = trace.hops[distance - 1].address
    where = f"hop {distance} ({hop})" if hop else f"hop {distance}"
    return f"reset by {where} in the name of {answer.sender}: a filter on the path"


# The diagnosis.


@dataclass(frozen=True)
class Diagnosis:
    """Where the path to a service breaks, and the evidence."""

    summary: str
    syn: dict[str, JSONValue] | None = None
    trace: dict[str, JSONValue] | None = None
    mtu: dict[str, JSONValue] | None = None
    error: str | None = None

    @classmethod
    def failed(cls, error: str) -> Diagnosis:
        return cls(f"not diagnosed: {error}", error=error)

    def as_json(self) -> dict[str, JSONValue]:
        return {
            "summary": self.summary,
            "syn": self.syn,
            "trace": self.trace,
            "mtu": self.mtu,
            "error": self.error,
        }


def raw_capability() -> str | None:
    """None when raw sockets can be opened here, else why not and how to
    allow them."""
    if importlib.util.find_spec("scapy") is None:
        return "path diagnostics need scapy, which is not installed"
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()
    except PermissionError:
        interpreter = os.path.realpath(sys.executable)
        return (
            "raw sockets need root or CAP_NET_RAW: run as root, "
            f"`setcap cap_net_raw+ep {interpreter}`, or give the "
            "container `--cap-add NET_RAW`"
        )
    except OSError as exc:
        return f"raw sockets are not available here: {exc.strerror}"
    return None


async def diagnose(
    address: str,
    port: int,
    transport: Transport,
    deadline: Deadline,
    *,
    payload: bytes | None = None,
    max_hops: int = 16,
) -> Diagnosis:
    """Find where the path to ``address:port`` breaks, by the deadline."""
    if not 1 <= max_hops <= MAX_HOPS:
        raise ValueError(f"max_hops must be 1 to {MAX_HOPS}, not {max_hops}")
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    if ipaddress.ip_address(address).version != 4:
        # TODO: IPv6 needs its own raw sockets and ICMPv6 matching; until
        # then IPv6 rules get no diagnosis.
        return Diagnosis.failed("IPv6 paths are not diagnosed")
    missing = raw_capability()
    if missing is not None:
        return Diagnosis.failed(missing)
    route = await find_route(address, deadline)
    if isinstance(route, str):
        return Diagnosis.failed(route)
    if not await _load_scapy(deadline):
        return Diagnosis.failed("no time left to run diagnostics")
    flow = Flow(route.source, address, port, transport)
    data = b"\x00" if payload is None else payload
    return await _diagnose(flow, route, data, max_hops, deadline)


async def _load_scapy(deadline: Deadline) -> bool:
    """Load scapy in a worker thread, so the event loop never waits on it;
    False when the deadline passed first."""
    if deadline.expired():
        return False
    try:
        async with asyncio.timeout_at(deadline.when):
            await asyncio.wrap_future(_scapy_loading())
    except TimeoutError:
        return False
    return True


def _scapy_loading() -> concurrent.futures.Future[None]:
    """The one load of scapy, started by the first caller in any thread or
    event loop, and awaited by every other.

    A module is in ``sys.modules`` as soon as its import begins, so that
    cannot say the load is over: a caller that believed it would go on to
    wait for the import lock in the event loop.
    """
    global _scapy_load  # noqa: PLW0603 - one load for the whole process
    with _scapy_lock:
        if _scapy_load is None:
            _scapy_load = concurrent.futures.Future()
            # Running from the start, it cannot be cancelled: a caller
            # whose deadline passes stops waiting, the load goes on.
            _scapy_load.set_running_or_notify_cancel()
            threading.Thread(
                target=_load_into, args=(_scapy_load,), name="load-scapy"
            ).start()
        return _scapy_load


def _load_into(done: concurrent.futures.Future[None]) -> None:
    try:
        inet()
    except BaseException as exc:
        # Whatever stopped the import is raised to every waiter, so none
        # waits for ever.
        done.set_exception(exc)
    else:
        done.set_result(None)


async def _diagnose(
    flow: Flow, route: Route, payload: bytes, max_hops: int, deadline: Deadline
) -> Diagnosis:
    log = structlog.get_logger("sgw_reach.pathdiag").bind(
        address=flow.address, port=flow.port, transport=str(flow.transport)
    )
    try:
        wire = Wire(flow, route, deadline)
    except OSError as exc:
        return Diagnosis.failed(f"cannot open raw sockets: {exc.strerror}")
    try:
        direct, trace = await _first_stage(wire, payload, max_hops)
        log.debug("pathdiag.path", direct=direct and direct.answer.kind, end=trace.end)
        mtu = None
        reached = trace.reached or (
            direct is not None and is_from_destination(direct.answer, flow)
        )
        if reached and not deadline.expired():
            mtu = await path_mtu(wire, payload, _floor(flow, payload))
            log.debug("pathdiag.mtu", largest=mtu.largest, hole=mtu.black_hole)
    finally:
        wire.close()
    if wire.failure is not None:
        return Diagnosis.failed(wire.failure)
    syn = syn_finding(direct) if flow.transport is Transport.TCP else None
    return Diagnosis(
        summarize(flow, direct, trace, mtu),
        syn.as_json() if syn else None,
        trace.as_json(),
        mtu.as_json() if mtu else None,
    )


async def _first_stage(
    wire: Wire, payload: bytes, max_hops: int
) -> tuple[Heard | None, TraceFinding]:
    """The direct probe, then the trace as far as its answer says the path
    goes, while the direct probe waits on."""
    probe, packet = _direct_probe(wire, payload)
    started = asyncio.get_running_loop().time()
    wire.send(probe, packet)
    head_start = min(HEAD_START, wire.deadline.remaining() / 4)
    await wire.settle([probe], started, until=started + head_start)
    first = wire.heard.get(probe.sport)
    reach = trace_reach(first.answer if first else None, max_hops)
    async with asyncio.TaskGroup() as group:
        asking = group.create_task(_ask_again(wire, probe, packet, started))
        tracing = group.create_task(trace_path(wire, payload, max_hops, reach))
    return asking.result(), tracing.result()


def _floor(flow: Flow, payload: bytes) -> int:
    """The size of the first stage's probes, known to have arrived."""
    if flow.transport is Transport.TCP:
        return IP_HEADER + TCP_HEADER
    return IP_HEADER + UDP_HEADER + len(payload)


# Routes and ports.


@dataclass(frozen=True)
class Route:
    source: str
    mtu: int


async def find_route(address: str, deadline: Deadline) -> Route | str:
    """This host's source address towards ``address`` and the MTU of the
    interface it leaves by, or why there is none."""
    try:
        source, path_mtu = _connect_udp(address)
    except OSError as exc:
        return f"no route to {address} from this host ({exc.strerror})"
    device = await _route_device(address, deadline)
    mtu = _device_mtu(device) if device else None
    # The path MTU the kernel remembers may be lower than the interface's
    # after an earlier fragmentation-needed; the interface's is the start.
    return Route(source, mtu or path_mtu)


def _connect_udp(address: str) -> tuple[str, int]:
    # Connecting a UDP socket routes it and sends nothing.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((address, 9))
        source = sock.getsockname()[0]
        mtu = sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
    return str(source), int(mtu)


async def _route_device(address: str, deadline: Deadline) -> str | None:
    try:
        process = await asyncio.create_subprocess_exec(
            "ip",
            "-j",
            "route",
            "get",
            address,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        async with asyncio.timeout_at(deadline.when):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
    return route_device(output)


def route_device(output: bytes) -> str | None:
    """The device in the output of ``ip -j route get``."""
    try:
        routes = json.loads(output)
    except ValueError:
        return None
    if not isinstance(routes, list) or not routes:
        return None
    first = routes[0]
    device = first.get("dev") if isinstance(first, dict) else None
    if not isinstance(device, str) or not device or "/" in device:
        return None
    return device


def _device_mtu(device: str) -> int | None:
    try:
        return int(Path("/sys/class/net", device, "mtu").read_text())
    except (OSError, ValueError):
        return None


def hold_port(transport: Transport) -> socket.socket:
    """A socket bound to a free port that no probe of this process used
    lately (bound only, so the port's SYN-ACKs still get the kernel's
    reset)."""
    kind = socket.SOCK_STREAM if transport is Transport.TCP else socket.SOCK_DGRAM
    now = asyncio.get_running_loop().time()
    for stale in [key for key, at in _recent_ports.items() if at < now]:
        del _recent_ports[stale]
    spare: list[socket.socket] = []
    try:
        for _ in range(16):
            sock = socket.socket(socket.AF_INET, kind)
            sock.bind(("0.0.0.0", 0))
            key = (kind, sock.getsockname()[1])
            if key not in _recent_ports:
                _recent_ports[key] = now + _QUARANTINE
                return sock
            spare.append(sock)
        raise OSError(errno.EADDRINUSE, "no fresh source port")
    finally:
        for sock in spare:
            sock.close()


# Packets out and in.


class Wire:
    """The raw sockets of one diagnosis: probes out, matched answers in."""

    def __init__(self, flow: Flow, route: Route, deadline: Deadline) -> None:
        self.flow = flow
        self.route = route
        self.deadline = deadline
        self.sent: dict[int, Sent] = {}
        self.heard: dict[int, Heard] = {}
        self.rtts: list[float] = []
        self.failure: str | None = None
        self._sent_at: dict[int, float] = {}
        self._holds: dict[int, socket.socket] = {}
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._sockets: list[socket.socket] = []
        try:
            self._open()
        except OSError:
            self.close()
            raise

    def _open(self) -> None:
        out = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self._sockets.append(out)
        self._out = out
        # Send up to the interface's MTU even when the kernel remembers a
        # smaller path MTU for the destination (from an earlier
        # fragmentation-needed): that is what the MTU probe measures.
        out.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        for proto in (socket.IPPROTO_ICMP, self.flow.proto):
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
            self._sockets.append(sock)
            sock.setblocking(False)
            if proto == socket.IPPROTO_ICMP:
                # Only destination-unreachable and time-exceeded concern us.
                allowed = 1 << ICMP_DEST_UNREACH | 1 << ICMP_TIME_EXCEEDED
                mask = ~allowed & 0xFFFFFFFF
                sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", mask))
            self._loop.add_reader(sock.fileno(), self._read, sock)
        out.setblocking(False)

    def close(self) -> None:
        for sock in self._sockets[1:]:
            self._loop.remove_reader(sock.fileno())
        for sock in [*self._sockets, *self._holds.values()]:
            sock.close()
        self._sockets.clear()
        self._holds.clear()

    def probe(self, *, seq: bool = True, data_len: int = 0) -> Sent:
        """A new probe from a freshly held source port."""
        sock = hold_port(self.flow.transport)
        sport = int(sock.getsockname()[1])
        self._holds[sport] = sock
        number = random.getrandbits(32) if seq else 0
        self.sent[sport] = Sent(sport, number, data_len)
        return self.sent[sport]

    def release(self, probes: Iterable[Sent]) -> None:
        """Forget finished probes and let their ports go."""
        for probe in probes:
            self.sent.pop(probe.sport, None)
            sock = self._holds.pop(probe.sport, None)
            if sock is not None:
                sock.close()

    def send(self, probe: Sent, packet: bytes) -> int | None:
        """Send one probe; the errno when this host refused to send it.

        A packet too big for the interface is the MTU probe's business;
        any other error means no probe can go out, and is kept.
        """
        try:
            self._out.sendto(packet, (self.flow.address, 0))
        except OSError as exc:
            code = exc.errno or 0
            if code != errno.EMSGSIZE and self.failure is None:
                self.failure = _send_failure(exc)
            return code
        self._sent_at[probe.sport] = self._loop.time()
        return None

    def _read(self, sock: socket.socket) -> None:
        for _ in range(_READ_BATCH):
            try:
                data = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._take(data, self._loop.time())

    def _take(self, data: bytes, at: float) -> None:
        if not self.sent or not wanted(data, self.flow):
            return
        packet = decode(data)
        found = classify(packet, self.flow, self.sent) if packet else None
        if found is None:
            return
        sport, answer = found
        sent_at = self._sent_at.get(sport)
        if sport in self.heard or sent_at is None:
            return
        rtt = at - sent_at
        self.heard[sport] = Heard(answer, round(rtt * 1000, 1))
        self.rtts.append(rtt)
        self._changed.set()

    def round_end(self, sent_at: float) -> float:
        """When to stop waiting for the answers to probes sent at
        ``sent_at``: a few round trips once they are known."""
        if not self.rtts:
            return min(sent_at + FIRST_WAIT, self.deadline.when)
        settle = max(MIN_SETTLE, 3 * max(self.rtts))
        return min(sent_at + min(settle, FIRST_WAIT), self.deadline.when)

    async def settle(
        self,
        probes: Collection[Sent],
        sent_at: float,
        done: Callable[[], bool] | None = None,
        *,
        until: float | None = None,
    ) -> None:
        """Wait until every probe is answered, ``done`` says so, or the
        round (or ``until``) is over."""
        while not all(probe.sport in self.heard for probe in probes):
            if done is not None and done():
                return
            end = self.round_end(sent_at)
            if until is not None:
                end = min(end, until)
            left = end - self._loop.time()
            if left <= 0:
                return
            self._changed.clear()
            try:
                async with asyncio.timeout(left):
                    await self._changed.wait()
            except TimeoutError:
                return

    async def pause_until(self, when: float) -> None:
        """Sleep until ``when``, never past the deadline."""
        left = min(when, self.deadline.when) - self._loop.time()
        if left > 0:
            await asyncio.sleep(left)


def _send_failure(exc: OSError) -> str:
    if exc.errno in (errno.EPERM, errno.EACCES):
        return "this host's own firewall stops the probes (sendto: EPERM)"
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"no route from this host ({exc.strerror})"
    return f"sending probes failed: {exc.strerror}"


# The three stages.


def _direct_probe(wire: Wire, payload: bytes) -> tuple[Sent, bytes]:
    """The SYN probe for TCP; for UDP, a datagram with the probe's payload
    whose answer only tells how far the trace must go."""
    tcp = wire.flow.transport is Transport.TCP
    probe = wire.probe(seq=tcp)
    data = b"" if tcp else payload
    packet = probe_packet(wire.flow, probe, ttl=64, payload=data, mss=_mss(wire.route))
    return probe, packet


async def _ask_again(
    wire: Wire, probe: Sent, packet: bytes, sent_at: float
) -> Heard | None:
    """Wait for the answer to a probe sent at ``sent_at``; send it again
    after each REFILL, ASKS times in all."""
    loop = asyncio.get_running_loop()
    try:
        for asked in range(1, ASKS + 1):
            await wire.settle([probe], sent_at)
            if probe.sport in wire.heard or asked == ASKS:
                break
            await wire.pause_until(sent_at + REFILL)
            if wire.deadline.expired():
                break
            sent_at = loop.time()
            wire.send(probe, packet)
        return wire.heard.get(probe.sport)
    finally:
        wire.release([probe])


async def trace_path(
    wire: Wire, payload: bytes, max_hops: int, reach: int
) -> TraceFinding:
    """TTLs 1 to ``reach`` at once, deeper if the last one was answered by
    a router, and the silent ones again after a pause."""
    flow = wire.flow
    tcp = flow.transport is Transport.TCP
    data = b"" if tcp else payload
    probes: dict[int, Sent] = {}

    def send(ttls: Iterable[int]) -> None:
        for ttl in ttls:
            if ttl not in probes:
                probes[ttl] = wire.probe(seq=tcp)
            packet = probe_packet(
                flow, probes[ttl], ttl=ttl, payload=data, mss=_mss(wire.route)
            )
            wire.send(probes[ttl], packet)

    def finding() -> TraceFinding:
        heard = (
            (ttl, wire.heard[probe.sport])
            for ttl, probe in probes.items()
            if probe.sport in wire.heard
        )
        return assemble_trace(heard, flow, max_hops)

    loop = asyncio.get_running_loop()
    pending = list(range(1, reach + 1))
    retries = 0
    try:
        while pending and not wire.deadline.expired():
            started = loop.time()
            send(pending)
            await wire.settle(probes.values(), started, lambda: finding().complete)
            pending = deeper_ttls(finding(), max(probes))
            if not pending:
                pending = silent_ttls(finding(), probes, retries)
                retries += 1
                if pending:
                    await wire.pause_until(started + REFILL)
        return finding()
    finally:
        wire.release(probes.values())


async def path_mtu(wire: Wire, payload: bytes, floor: int) -> MtuFinding:
    """Sizes down from the interface's MTU, then narrowed, all with DF."""
    flow = wire.flow
    probes: dict[int, Sent] = {}
    sends: dict[int, int] = {}
    local: set[int] = set()
    # ICMP port-unreachable, a UDP size's proof of arrival, is rate
    # limited like any ICMP error: later rounds wait for the refill.
    pause = REFILL if flow.transport is Transport.UDP else 0.0
    loop = asyncio.get_running_loop()
    sizes = mtu_ladder(wire.route.mtu)
    budget = MTU_EXTRA_PROBES
    try:
        while sizes and not wire.deadline.expired():
            started = loop.time()
            for size in sizes:
                if _send_size(wire, size, payload, probes) == errno.EMSGSIZE:
                    local.add(size)
                sends[size] = sends.get(size, 0) + 1
            out = [probes[size] for size in sizes if size not in local]
            await wire.settle(out, started)
            tries = _size_tries(wire, probes, sends, local)
            sizes = next_mtu_sizes(tries, floor, budget)
            budget -= len(sizes)
            if sizes:
                await wire.pause_until(started + pause)
        tries = _size_tries(wire, probes, sends, local)
        return mtu_finding(tries, floor, wire.route.mtu)
    finally:
        wire.release(probes.values())


def _send_size(
    wire: Wire, size: int, payload: bytes, probes: dict[int, Sent]
) -> int | None:
    flow = wire.flow
    data = fill(payload, size, flow.transport)
    tcp = flow.transport is Transport.TCP
    if size not in probes:
        probes[size] = wire.probe(seq=tcp, data_len=len(data) if tcp else 0)
    packet = probe_packet(
        flow, probes[size], ttl=64, payload=data, mss=_mss(wire.route)
    )
    return wire.send(probes[size], packet)


def _size_tries(
    wire: Wire, probes: Mapping[int, Sent], sends: Mapping[int, int], local: set[int]
) -> list[SizeTry]:
    tries = []
    for size, probe in probes.items():
        heard = wire.heard.get(probe.sport)
        answer = heard.answer if heard else None
        fate = Fate.TOO_BIG_HERE if size in local else fate_of(answer, wire.flow)
        tries.append(
            SizeTry(
                size,
                fate,
                sends[size],
                answer.sender if answer else None,
                answer.next_hop_mtu if answer else None,
            )
        )
    return tries


def _mss(route: Route) -> int:
    return max(536, min(route.mtu - IP_HEADER - 20, 65495))
