"""Plain port probes, for rules that have no protocol exchange of their own.

``tcp`` proves that a TCP connection opens; it cannot tell which service
answered. ``udp-path`` serves the UDP rows where nothing answers by design
(SMB and NetBIOS session on UDP 139 and 445, the NetBIOS datagram service):
it sends one datagram of one zero byte and reads what the network says back. An ICMP
port-unreachable from the host proves the path is open to it; an ICMP
prohibited names a filter; silence proves nothing either way, so it is a
warning, not a failure.

Limit: a firewall on the host itself that rejects with port-unreachable
looks exactly like an open path; only a reject from another device (the
ICMP names its sender) is told apart.
"""

from __future__ import annotations

from probes.base import Outcome, ProbeRequest, Reason, Status, passed, warned
from probes.icmp import IcmpReport
from probes.net import (
    Datagram,
    address_of,
    connect,
    udp_exchange,
    unanswered,
)

# asyncio does not send an empty datagram at all, so the path probe sends
# one zero byte, which no service on these ports takes for a request.
PATH_PROBE = b"\x00"


async def probe_tcp(request: ProbeRequest) -> Outcome:
    """Open a TCP connection and close it again."""
    conn = await connect(request)
    if isinstance(conn, Outcome):
        return conn
    address = conn.address
    conn.close()
    request.log.debug("tcp.connected", connect_ms=conn.connect_ms)
    return passed(
        f"TCP {request.port} on {address} accepts connections",
        connect_ms=conn.connect_ms,
        local_address=conn.local,
    ).at(address)


async def probe_udp_path(request: ProbeRequest) -> Outcome:
    """Send one datagram and judge the path by the answer."""
    address = await address_of(request)
    if isinstance(address, Outcome):
        return address
    result = await udp_exchange(
        address, request.port, PATH_PROBE, request.deadline, resends=0
    )
    if isinstance(result, Datagram):
        return passed(
            f"UDP {request.port} on {address} answered",
            rtt_ms=result.rtt_ms,
            reply_bytes=len(result.data),
        ).at(address)
    if isinstance(result, IcmpReport) and result.is_port_unreachable:
        if result.offender in (None, address):
            return _path_open(result, address, request.port)
        return _rejected_on_the_way(result, address, request.port)
    if isinstance(result, IcmpReport):
        return unanswered(result, address, request.port)
    return warned(
        Reason.TIMEOUT,
        f"no answer from {address} UDP {request.port}, cannot tell: "
        "nothing answers on this port by design, and a firewall that "
        "drops the datagram looks the same",
        waited_s=result.waited_s,
    ).at(address)


def _rejected_on_the_way(report: IcmpReport, address: str, port: int) -> Outcome:
    detail = (
        f"UDP {port} to {address} was answered by {report.offender}, a "
        "device on the way, with ICMP port-unreachable: a filter rejects it"
    )
    return Outcome(
        Status.FAIL,
        Reason.PROHIBITED,
        detail,
        dict(report.evidence()),
        address=address,
    )


def _path_open(report: IcmpReport, address: str, port: int) -> Outcome:
    detail = (
        f"path open: {address} itself answered UDP {port} with "
        "ICMP port-unreachable, so no filter stops the datagram"
    )
    return Outcome(
        Status.PASS, Reason.OK, detail, dict(report.evidence()), address=address
    )
