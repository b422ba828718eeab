"""Values every probe shares: what it is asked, what it answers.

A probe is an async function that takes a :class:`ProbeRequest` and returns
an :class:`Outcome`. Expected network failures (a refused port, silence, a
wrong service, an untrusted certificate) are outcomes with a reason code and
evidence, never exceptions; an exception out of a probe is a bug, and the
runner turns it into an ``error`` result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeAlias

import structlog

JSONValue: TypeAlias = (
    str | int | float | bool | Sequence["JSONValue"] | Mapping[str, "JSONValue"] | None
)
Evidence: TypeAlias = dict[str, JSONValue]


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"
    ERROR = "error"


class Reason(StrEnum):
    """The closed set of reasons a result may give."""

    OK = "ok"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    PROHIBITED = "prohibited"
    DNS_FAILURE = "dns-failure"
    WRONG_PROTOCOL = "wrong-protocol"
    TLS_UNTRUSTED = "tls-untrusted"
    TLS_INTERCEPTED = "tls-intercepted"
    CLOCK_SKEW = "clock-skew"
    PROTOCOL_ERROR = "protocol-error"
    NOT_APPLICABLE = "not-applicable"
    NOT_CONFIGURED = "not-configured"
    INTERNAL_ERROR = "internal-error"


class Transport(StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True)
class Outcome:
    """What a probe found: a verdict, why, and the facts behind it."""

    status: Status
    reason: Reason
    detail: str
    evidence: Evidence = field(default_factory=dict)
    remedy: str = ""
    address: str | None = None

    def with_evidence(self, **extra: JSONValue) -> Outcome:
        """Return a copy with more evidence merged in."""
        merged: Evidence = {**extra, **self.evidence}
        return Outcome(
            self.status,
            self.reason,
            self.detail,
            merged,
            self.remedy,
            self.address,
        )

    def at(self, address: str | None) -> Outcome:
        """Return a copy that names the address it was measured at."""
        return Outcome(
            self.status,
            self.reason,
            self.detail,
            self.evidence,
            self.remedy,
            address,
        )


def passed(detail: str, **evidence: JSONValue) -> Outcome:
    return Outcome(Status.PASS, Reason.OK, detail, dict(evidence))


def failed(
    reason: Reason, detail: str, remedy: str = "", **evidence: JSONValue
) -> Outcome:
    return Outcome(Status.FAIL, reason, detail, dict(evidence), remedy)


def held_open(server: str, where: str) -> str:
    """The remedy when a TCP connection opens and then nothing comes: not
    a drop, since the handshake got through, but something that accepts
    and holds the connection (a tarpit, a proxy or IPS) or a server that
    hangs. ``server`` names what should have answered ("the SSH server")."""
    return (
        f"The TCP connection to {where} opens but {server} never answers: "
        "something accepts and holds it (a firewall, IPS or proxy), or the "
        "server hangs. Find what listens there, and let the protocol "
        "through or restart the server."
    )


def warned(
    reason: Reason, detail: str, remedy: str = "", **evidence: JSONValue
) -> Outcome:
    return Outcome(Status.WARN, reason, detail, dict(evidence), remedy)


@dataclass(frozen=True)
class Deadline:
    """One absolute point on the event loop's clock that a probe must meet.

    Every step of a probe takes its time from the same deadline, so a probe
    of several steps never runs longer than its budget.
    """

    when: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(asyncio.get_running_loop().time() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.when - asyncio.get_running_loop().time())

    def expired(self) -> bool:
        return self.remaining() <= 0.0


@dataclass(frozen=True)
class ProbeSettings:
    """Run-wide settings a probe may need beyond its own host and port."""

    region: str = "us-east-1"
    resolvers: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ca_bundle: Path | None = None
    max_skew: float = 60.0
    warn_skew: float = 1.0
    connect_host: str = ""
    connect_port: int = 443


@dataclass(frozen=True)
class ProbeRequest:
    """One probe's task: prove that ``host:port`` over ``transport`` works.

    ``address`` is set when the agent already resolved the host (names the
    user typed); otherwise the probe resolves ``host`` itself with the
    configured resolvers, as the gateway would.
    """

    host: str
    port: int
    transport: Transport
    deadline: Deadline
    settings: ProbeSettings
    address: str | None = None
    log: structlog.typing.FilteringBoundLogger = field(
        default_factory=lambda: structlog.get_logger("sgw_reach.probe")
    )


Probe: TypeAlias = Callable[[ProbeRequest], Awaitable[Outcome]]


def printable(data: bytes, limit: int = 64) -> str:
    """The first ``limit`` bytes as text fit for evidence and logs.

    Printable ASCII stays as it is; CR, LF and tab read as ``\\r``,
    ``\\n``, ``\\t``; every other byte (and the backslash) is escaped, so
    a binary answer or a hostile one cannot break a report's lines.
    """
    return "".join(_PRINTABLE[byte] for byte in data[:limit])


_PRINTABLE = tuple(
    {9: "\\t", 10: "\\n", 13: "\\r", 92: "\\\\"}.get(
        byte, chr(byte) if 32 <= byte < 127 else f"\\x{byte:02x}"
    )
    for byte in range(256)
)
