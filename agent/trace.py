"""``sgw-reach trace HOST PORT``: the path diagnostics, by hand.

The same raw-packet diagnostics that ``check --diagnose`` runs for failed
rules (a SYN probe, a trace on the service port, the path MTU), for one
host and port. With ``--udp``, the trace sends the datagram the matrix's
probe on that port sends (a DNS query on 53, an NTP request on 123, an
RPC call on 111...), else one zero byte. Exit code 0 when the
destination was reached, 1 when the path breaks, 2 for bad input or when
raw sockets are not available.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from agent import inputs
from agent.errors import UsageError
from probes.base import Deadline, Transport
from probes.registry import PROBES, udp_request
from rules import load_matrix

SCHEMA_ID = "sgw-reach/trace/v1"


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    trace = commands.add_parser(
        "trace",
        help="find where the path to HOST PORT breaks (raw packets)",
        parents=[common],
    )
    trace.add_argument("host", metavar="HOST", type=inputs.host)
    trace.add_argument("port", metavar="PORT", type=inputs.port)
    trace.add_argument("--udp", action="store_true", help="trace UDP, not TCP")
    trace.add_argument("--format", choices=("table", "json"), default="table")
    trace.add_argument(
        "--timeout", metavar="SECONDS", type=inputs.seconds, default=10.0
    )


def run(args: argparse.Namespace) -> int:
    address = inputs.resolve_all({args.host: "HOST"}, 5.0)[args.host]
    from probes import pathdiag

    missing = pathdiag.raw_capability()
    if missing is not None:
        raise UsageError(f"trace: {missing}")
    transport = Transport.UDP if args.udp else Transport.TCP
    found = asyncio.run(_diagnose(address, args.port, transport, args.timeout))
    report = {
        "schema": SCHEMA_ID,
        "host": args.host,
        "address": address,
        "port": args.port,
        "transport": str(transport),
        "diagnosis": found,
    }
    if args.format == "json":
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(render(report))
    trace = found.get("trace") or {}
    return 0 if trace.get("reached") else 1


async def _diagnose(
    address: str, port: int, transport: Transport, timeout: float
) -> dict[str, Any]:
    from probes import pathdiag

    payload = udp_payload(port) if transport is Transport.UDP else None
    found = await pathdiag.diagnose(
        address, port, transport, Deadline.after(timeout), payload=payload
    )
    return dict(found.as_json())


def udp_payload(port: int) -> bytes | None:
    """The first datagram of the matrix's UDP probe on ``port`` (a DNS
    query on 53, an NTP request on 123...); None where no probe of the
    matrix sends one of its own there."""
    matrix = load_matrix(None, PROBES.keys())
    for rule in matrix.rules:
        if rule.transport == "udp" and rule.port == port:
            payload = udp_request(rule.probe)
            if payload is not None:
                return payload
    return None


def render(report: dict[str, Any]) -> str:
    """The trace for people: summary, SYN probe, hops, path MTU."""
    found = report["diagnosis"]
    where = f"{report['host']} ({report['address']})"
    if report["host"] == report["address"]:
        where = report["address"]
    lines = [
        f"trace to {where} {report['transport'].upper()} {report['port']}: "
        f"{found['summary']}"
    ]
    syn = found.get("syn")
    if syn:
        sender = f" from {syn['from']}" if syn.get("from") else ""
        lines.append(f"  SYN probe: {syn['state']}{sender}")
    lines += _hops(found.get("trace"))
    mtu = found.get("mtu")
    if mtu:
        hole = ", black hole above it" if mtu.get("black_hole") else ""
        lines.append(f"  path MTU: {mtu.get('largest') or 'unknown'}{hole}")
    if found.get("error"):
        lines.append(f"  error: {found['error']}")
    return "\n".join(lines) + "\n"


def _hops(trace: dict[str, Any] | None) -> list[str]:
    if not trace:
        return []
    lines = ["  hops:"]
    for hop in trace.get("hops", []):
        rtt = f"{hop['rtt_ms']} ms" if hop.get("rtt_ms") is not None else "*"
        lines.append(
            f"    {hop['ttl']:>2}  {hop.get('address') or '*':<15}  "
            f"{rtt:>9}  {hop.get('reply') or 'no answer'}"
        )
    return lines
