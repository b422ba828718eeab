"""The CONNECT proxy probe against an in-process proxy and TLS servers."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

import pytest

from probes import http, proxy
from probes.base import (
    Deadline,
    Outcome,
    ProbeRequest,
    ProbeSettings,
    Reason,
    Status,
    Transport,
)
from tests.test_tls import (
    HOST,
    INSPECT_CA,
    Handler,
    Pki,
    make_pki,
    server_context,
    serving,
    silent,
)

ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
HOP = proxy.Hop("proxy.test:8080", f"{HOST}:443")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    writer.close()


def connect_proxy(
    upstream: int | None, answer: bytes = ESTABLISHED, heads: list[bytes] | None = None
) -> Handler:
    """A proxy that answers CONNECT with ``answer`` and, for a 200,
    relays to 127.0.0.1:``upstream`` whatever target was asked for."""

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if heads is not None:
            heads.append(head)
        writer.write(answer)
        await writer.drain()
        if upstream is None or b" 200 " not in answer:
            writer.close()
            return
        far_reader, far_writer = await asyncio.open_connection("127.0.0.1", upstream)
        await asyncio.gather(_pipe(reader, far_writer), _pipe(far_reader, writer))

    return handle


def request_for(
    port: int, ca_bundle: Path | None = None, budget: float = 2.0
) -> ProbeRequest:
    return ProbeRequest(
        host="proxy.test",
        port=port,
        transport=Transport.TCP,
        deadline=Deadline.after(budget),
        settings=ProbeSettings(
            ca_bundle=ca_bundle, connect_host=HOST, connect_port=443
        ),
        address="127.0.0.1",
    )


def through_proxy(
    answer: bytes = ESTABLISHED,
    tls_context: ssl.SSLContext | None = None,
    *,
    ca_bundle: Path | None = None,
    heads: list[bytes] | None = None,
    proxy_handler: Handler | None = None,
    budget: float = 2.0,
) -> Outcome:
    async def go() -> Outcome:
        async with serving(context=tls_context) as upstream:
            handler = proxy_handler or connect_proxy(upstream, answer, heads)
            async with serving(handler) as port:
                return await proxy.probe(request_for(port, ca_bundle, budget))

    return asyncio.run(go())


# The probe.


def test_clean_tunnel_passes(pki: Pki) -> None:
    heads: list[bytes] = []
    outcome = through_proxy(
        tls_context=server_context(pki.good), ca_bundle=pki.ca_bundle, heads=heads
    )
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.address == "127.0.0.1"
    assert outcome.detail.startswith("through the proxy proxy.test:")
    assert heads == [
        f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n".encode()
    ]
    evidence = outcome.evidence
    assert evidence["status_line"] == "HTTP/1.1 200 Connection established"
    assert evidence["connect_target"] == f"{HOST}:443"
    assert str(evidence["proxy"]).startswith("proxy.test:")
    assert evidence["sni"] == HOST
    assert evidence["subject"] == HOST
    assert evidence["tls_version"] in ("TLSv1.2", "TLSv1.3")


def test_inspecting_proxy_is_named(pki: Pki) -> None:
    outcome = through_proxy(
        tls_context=server_context(pki.inspected), ca_bundle=pki.ca_bundle
    )
    assert outcome.reason is Reason.TLS_INTERCEPTED
    assert "inspects TLS" in outcome.detail
    assert INSPECT_CA in outcome.detail
    assert "on the proxy" in outcome.remedy
    assert outcome.evidence["issuer"] == INSPECT_CA


def test_expired_certificate_through_the_proxy(pki: Pki) -> None:
    outcome = through_proxy(
        tls_context=server_context(pki.expired), ca_bundle=pki.ca_bundle
    )
    assert outcome.reason is Reason.TLS_UNTRUSTED
    assert outcome.detail.startswith("through the proxy")


def test_bytes_after_the_answer_belong_to_the_tunnel() -> None:
    outcome = through_proxy(answer=ESTABLISHED + b"SSH-2.0-OpenSSH_9.2\r\n")
    assert outcome.reason is Reason.WRONG_PROTOCOL
    assert str(outcome.evidence["first_bytes"]).startswith("SSH-2.0")


@pytest.mark.parametrize(
    ("answer", "status", "reason", "words"),
    [
        (
            b"HTTP/1.1 407 Proxy Authentication Required\r\n"
            b'Proxy-Authenticate: Basic realm="corp"\r\n\r\n',
            Status.FAIL,
            Reason.PROHIBITED,
            "requires authentication",
        ),
        (
            b"HTTP/1.1 403 Forbidden\r\n\r\n",
            Status.FAIL,
            Reason.PROHIBITED,
            f"forbids CONNECT to {HOST}:443",
        ),
        (
            b"HTTP/1.1 502 Bad Gateway\r\n\r\n",
            Status.FAIL,
            Reason.UNREACHABLE,
            "could not reach",
        ),
        (
            b"HTTP/1.0 504 Gateway Timeout\r\n\r\n",
            Status.FAIL,
            Reason.TIMEOUT,
            "in time",
        ),
        (
            b"HTTP/1.1 405 Method Not Allowed\r\n\r\n",
            Status.FAIL,
            Reason.PROTOCOL_ERROR,
            "405 Method Not Allowed",
        ),
        (
            b"SSH-2.0-OpenSSH_9.2\r\n",
            Status.FAIL,
            Reason.WRONG_PROTOCOL,
            "not an HTTP proxy",
        ),
        (b"", Status.FAIL, Reason.PROTOCOL_ERROR, "without answering"),
        (
            b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n",
            Status.FAIL,
            Reason.PROTOCOL_ERROR,
            "broken HTTP answer",
        ),
    ],
)
def test_proxy_answers(
    answer: bytes, status: Status, reason: Reason, words: str
) -> None:
    outcome = through_proxy(answer)
    assert (outcome.status, outcome.reason) == (status, reason), outcome.detail
    assert words in outcome.detail
    assert outcome.remedy
    assert str(outcome.evidence["proxy"]).startswith("proxy.test:")
    if answer.startswith(b"HTTP/") and b"broken" not in answer:
        assert outcome.evidence["status_line"] == answer.split(b"\r\n")[0].decode()


def test_407_names_the_scheme() -> None:
    outcome = through_proxy(
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b'Proxy-Authenticate: Basic realm="corp"\r\n\r\n'
    )
    assert outcome.evidence["proxy_authenticate"] == 'Basic realm="corp"'


def test_silent_proxy_times_out() -> None:
    outcome = through_proxy(proxy_handler=silent, budget=0.3)
    assert outcome.reason is Reason.TIMEOUT
    assert "did not answer CONNECT" in outcome.detail


# The pure part.


def test_build_connect() -> None:
    assert proxy.build_connect("h.example", 443) == (
        b"CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443\r\n\r\n"
    )
    assert proxy.build_connect("2001:db8::1", 443).startswith(
        b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n"
    )


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (200, None),
        (204, None),
        (407, Reason.PROHIBITED),
        (403, Reason.PROHIBITED),
        (500, Reason.UNREACHABLE),
        (502, Reason.UNREACHABLE),
        (503, Reason.UNREACHABLE),
        (504, Reason.TIMEOUT),
        (301, Reason.PROTOCOL_ERROR),
        (400, Reason.PROTOCOL_ERROR),
        (501, Reason.PROTOCOL_ERROR),
    ],
)
def test_judge(status: int, reason: Reason | None) -> None:
    response = http.parse_head(f"HTTP/1.1 {status} X\r\n\r\n".encode())
    outcome = proxy.judge(response, HOP)
    if reason is None:
        assert outcome is None
    else:
        assert outcome is not None
        assert outcome.reason is reason
        assert outcome.evidence["status_line"] == f"HTTP/1.1 {status} X"
