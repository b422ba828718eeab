"""The hardware appliance's HTTP proxy: a clean CONNECT tunnel to AWS?

The appliance reaches the activation endpoint through an HTTP proxy
(TCP 8080 by default) with ``CONNECT host:443`` (RFC 9110 9.3.6). This
probe asks the proxy for that tunnel and, once it is open, runs the
same verified TLS handshake as :mod:`probes.tls` through it, so a proxy
that refuses, wants credentials, cannot reach AWS or inspects TLS is
named as such.

Proxy answers, by status: 2xx opens the tunnel; 407 and 403 are
policy (prohibited); 504 means the proxy timed out reaching the target
(timeout); 500, 502 and 503 mean it could not reach it at all, or not
resolve it (unreachable); anything else is a protocol error.

Limits: no proxy authentication is attempted, so a proxy that requires
it fails even when the appliance has credentials; the proxy's own name
is resolved with the configured resolvers, and the target name is left
to the proxy to resolve.
"""

from __future__ import annotations

import asyncio
import dataclasses

from probes import http, net, tls
from probes.base import (
    Deadline,
    Evidence,
    Outcome,
    ProbeRequest,
    ProbeSettings,
    Reason,
    failed,
)

Logger = tls.Logger


@dataclasses.dataclass(frozen=True)
class Hop:
    """The proxy asked and the tunnel's far end, as people read them."""

    proxy: str
    target: str


def build_connect(host: str, port: int) -> bytes:
    """A CONNECT request in authority form (RFC 9110 9.3.6)."""
    target = http.authority(host, port)
    return http.build_request("CONNECT", target, target)


def judge(response: http.Response, hop: Hop) -> Outcome | None:
    """The verdict of the proxy's answer; None when the tunnel is open."""
    status = response.status
    if 200 <= status < 300:
        return None
    evidence = {"status_line": response.status_line}
    if status == 407:
        scheme = response.get("Proxy-Authenticate")
        what = f"proxy {hop.proxy} requires authentication"
        outcome = failed(Reason.PROHIBITED, what, _ALLOW, proxy_authenticate=scheme)
    elif status == 403:
        what = f"proxy {hop.proxy} forbids CONNECT to {hop.target}"
        outcome = failed(Reason.PROHIBITED, what, _ALLOW)
    elif status in (500, 502, 503, 504):
        outcome = _upstream_failed(response, hop)
    else:
        what = (
            f"proxy {hop.proxy} answered CONNECT to {hop.target} with "
            f"'{response.status_line}'"
        )
        outcome = failed(Reason.PROTOCOL_ERROR, what, _ALLOW)
    return outcome.with_evidence(**evidence)


_ALLOW = (
    "Allow CONNECT from the appliance to the AWS endpoints on TCP 443 on "
    "the proxy, without authentication or with the appliance's proxy "
    "credentials configured."
)


def _upstream_failed(response: http.Response, hop: Hop) -> Outcome:
    # 504 is the proxy's own timeout (RFC 9110 15.6.5); 502 and 503, and
    # the 500 some proxies send, mean it got no connection at all.
    timed_out = response.status == 504
    how = "in time" if timed_out else "at all"
    return failed(
        Reason.TIMEOUT if timed_out else Reason.UNREACHABLE,
        f"proxy {hop.proxy} could not reach {hop.target} {how} "
        f"('{response.status_line}')",
        f"Let the proxy itself reach {hop.target} and the other AWS "
        "endpoints: check its firewall, its DNS servers and any upstream "
        "proxy.",
    )


async def probe(request: ProbeRequest) -> Outcome:
    """Open a CONNECT tunnel through the proxy and prove TLS over it."""
    address = await net.address_of(request)
    if isinstance(address, Outcome):
        return address
    settings = request.settings
    hop = Hop(
        http.authority(request.host, request.port),
        http.authority(settings.connect_host, settings.connect_port),
    )

    async def reopen() -> tls.Channel | Outcome:
        return await open_tunnel(
            address,
            request.port,
            hop,
            settings=settings,
            deadline=request.deadline,
            log=request.log,
        )

    channel = await reopen()
    if isinstance(channel, Outcome):
        return channel.with_evidence(proxy=hop.proxy).at(address)
    outcome = await tls.handshake(
        channel,
        settings.connect_host,
        settings.connect_port,
        settings=settings,
        deadline=request.deadline,
        log=request.log,
        reopen=reopen,
    )
    return _through(outcome, hop).at(address)


async def open_tunnel(
    address: str,
    port: int,
    hop: Hop,
    *,
    settings: ProbeSettings,
    deadline: Deadline,
    log: Logger,
) -> tls.Channel | Outcome:
    """Connect to the proxy and ask for a tunnel; a channel once open."""
    connection = await net.open_tcp(address, port, deadline)
    if isinstance(connection, Outcome):
        return connection
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await connection.streams()
    request = build_connect(settings.connect_host, settings.connect_port)
    try:
        async with asyncio.timeout_at(deadline.when):
            writer.write(request)
            await writer.drain()
        response, rest = await http.read_head(reader, deadline)
    except (TimeoutError, OSError, http.HttpError) as exc:
        await http.close(writer)
        waited = round(loop.time() - started, 1)
        log.debug("proxy.unanswered", error=type(exc).__name__)
        return _unanswered(exc, hop, waited)
    log.debug("proxy.answer", status_line=response.status_line)
    refused = judge(response, hop)
    if refused is not None:
        await http.close(writer)
        return refused
    evidence: Evidence = {
        "connect_ms": connection.connect_ms,
        "status_line": response.status_line,
        "proxy": hop.proxy,
        "connect_target": hop.target,
    }
    return tls.Channel(reader, writer, rest, evidence)


def _unanswered(exc: Exception, hop: Hop, waited: float) -> Outcome:
    if isinstance(exc, TimeoutError):
        return failed(
            Reason.TIMEOUT,
            f"proxy {hop.proxy} accepted TCP but did not answer CONNECT "
            f"to {hop.target} in {waited} s",
            f"Check that {hop.proxy} is an HTTP proxy; some proxies hold a "
            "CONNECT they do not permit without answering.",
            waited_s=waited,
        )
    if isinstance(exc, http.HttpError):
        return _not_http(exc, hop)
    return failed(
        Reason.REFUSED,
        f"proxy {hop.proxy} reset the connection after CONNECT to {hop.target}",
        _ALLOW,
    )


def _not_http(exc: http.HttpError, hop: Hop) -> Outcome:
    first = http.preview(exc.data)
    if isinstance(exc, http.EarlyClose) and not exc.data:
        return failed(
            Reason.PROTOCOL_ERROR,
            f"proxy {hop.proxy} closed the connection without answering "
            f"CONNECT to {hop.target}",
            _ALLOW,
            first_bytes="",
        )
    if exc.data.startswith(b"HTTP/"):
        return failed(
            Reason.PROTOCOL_ERROR,
            f"proxy {hop.proxy} sent a broken HTTP answer: {exc}",
            f"Check that {hop.proxy} is an HTTP proxy that supports CONNECT.",
            first_bytes=first,
        )
    return failed(
        Reason.WRONG_PROTOCOL,
        f"{hop.proxy} is not an HTTP proxy: it answered CONNECT with '{first}'",
        f"Point the appliance at its HTTP proxy; {hop.proxy} runs another service.",
        first_bytes=first,
    )


def _through(outcome: Outcome, hop: Hop) -> Outcome:
    """Say that a TLS verdict was reached through the proxy."""
    if outcome.reason is Reason.TLS_INTERCEPTED:
        return dataclasses.replace(
            outcome,
            detail=f"the proxy {hop.proxy} inspects TLS: {outcome.detail}",
            remedy=(
                f"Exempt the appliance's CONNECT traffic to the AWS "
                f"endpoints from TLS inspection on the proxy {hop.proxy}: "
                "the appliance trusts only Amazon's roots."
            ),
        )
    return dataclasses.replace(
        outcome, detail=f"through the proxy {hop.proxy}, {outcome.detail}"
    )
