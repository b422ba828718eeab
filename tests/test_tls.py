"""The TLS probe against in-process TLS servers with certificates made here.

The helpers at the top (a small PKI, TLS and raw servers) are shared with
the proxy tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from probes import tls
from probes.base import (
    Deadline,
    Outcome,
    ProbeRequest,
    ProbeSettings,
    Reason,
    Status,
    Transport,
)

HOST = "anon-cp.storagegateway.us-east-1.amazonaws.com"
GOOD_CA = "Test Root CA"
INSPECT_CA = "Corp Inspection CA"
_DAY = datetime.timedelta(days=1)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path
    der: bytes


@dataclass(frozen=True)
class Pki:
    """Files of two CAs and the leaves each case of the tests serves."""

    ca_bundle: Path
    good: Leaf
    inspected: Leaf
    amazon_untrusted: Leaf
    expired: Leaf
    wrong_name: Leaf
    self_signed: Leaf


@dataclass(frozen=True)
class _Ca:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(common_name: str, org: str = "sgw-reach tests") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca(common_name: str, org: str, now: datetime.datetime) -> _Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name, org)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 365 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False
        )
        .sign(key, hashes.SHA256())
    )
    return _Ca(name, key, cert)


def _leaf(
    directory: Path,
    stem: str,
    issuer: _Ca | None,
    names: tuple[str, ...],
    validity: tuple[datetime.datetime, datetime.datetime],
) -> Leaf:
    """A server certificate; self-signed when ``issuer`` is None."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(names[0])
    signer_name, signer_key = (issuer.name, issuer.key) if issuer else (subject, key)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.SubjectAlternativeName(sans), False)
        .sign(signer_key, hashes.SHA256())
    )
    leaf = Leaf(directory / f"{stem}.crt", directory / f"{stem}.key", b"")
    leaf.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    leaf.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Leaf(leaf.cert, leaf.key, cert.public_bytes(serialization.Encoding.DER))


def make_pki(directory: Path, host: str = HOST) -> Pki:
    now = datetime.datetime.now(datetime.UTC)
    good = _ca(GOOD_CA, "sgw-reach tests", now)
    inspect = _ca(INSPECT_CA, "Corp", now)
    amazon = _ca("Amazon RSA 2048 M01", "Amazon", now)
    valid = (now - _DAY, now + 90 * _DAY)
    bundle = directory / "ca.pem"
    bundle.write_bytes(good.cert.public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca_bundle=bundle,
        good=_leaf(directory, "good", good, (host,), valid),
        inspected=_leaf(directory, "inspected", inspect, (host,), valid),
        amazon_untrusted=_leaf(directory, "amazon", amazon, (host,), valid),
        expired=_leaf(
            directory, "expired", good, (host,), (now - 90 * _DAY, now - _DAY)
        ),
        wrong_name=_leaf(directory, "wrong", good, ("other.test",), valid),
        self_signed=_leaf(directory, "self", None, (host,), valid),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class Seen:
    """What a test server saw: the SNI names of its handshakes."""

    sni: list[str | None] = field(default_factory=list)


def server_context(leaf: Leaf, seen: Seen | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(leaf.cert, leaf.key)
    if seen is not None:

        def note(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            seen.sni.append(name)

        context.sni_callback = note
    return context


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        await reader.read(1024)
    writer.close()


@contextlib.asynccontextmanager
async def serving(
    handler: Handler = _linger, context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """Run a server on 127.0.0.1 and yield its port."""

    async def guarded(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # A handler still running when the test's loop ends is cancelled,
        # which Python 3.11's stream server reports as an error.
        with contextlib.suppress(asyncio.CancelledError):
            await handler(reader, writer)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0, ssl=context)
    async with server:
        yield int(server.sockets[0].getsockname()[1])
    # Let handlers that saw the client go away finish on their own.
    handlers = asyncio.all_tasks() - {asyncio.current_task()}
    if handlers:
        await asyncio.wait(handlers, timeout=0.2)


def answer_with(data: bytes) -> Handler:
    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.read(4096)
        writer.write(data)
        await writer.drain()
        writer.close()

    return handle


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read and never answer, until the client goes away."""
    with contextlib.suppress(OSError):
        while await reader.read(4096):
            pass
    writer.close()


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def close_at_once(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await reader.read(4096)
    writer.close()


def request_for(
    port: int,
    *,
    host: str = HOST,
    ca_bundle: Path | None = None,
    budget: float = 2.0,
) -> ProbeRequest:
    return ProbeRequest(
        host=host,
        port=port,
        transport=Transport.TCP,
        deadline=Deadline.after(budget),
        settings=ProbeSettings(ca_bundle=ca_bundle),
        address="127.0.0.1",
    )


def run_probe(
    handler: Handler = _linger,
    context: ssl.SSLContext | None = None,
    *,
    host: str = HOST,
    ca_bundle: Path | None = None,
    budget: float = 2.0,
) -> Outcome:
    async def go() -> Outcome:
        async with serving(handler, context) as port:
            request = request_for(port, host=host, ca_bundle=ca_bundle, budget=budget)
            return await tls.probe(request)

    return asyncio.run(go())


# The probe against TLS servers.


def test_verified_handshake_passes(pki: Pki) -> None:
    seen = Seen()
    outcome = run_probe(context=server_context(pki.good, seen), ca_bundle=pki.ca_bundle)
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.address == "127.0.0.1"
    evidence = outcome.evidence
    assert evidence["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert evidence["cipher"]
    assert evidence["subject"] == HOST
    assert evidence["issuer"] == GOOD_CA
    assert evidence["sans"] == [HOST, "127.0.0.1"]
    assert evidence["days_left"] in (88, 89)
    assert str(evidence["not_after"]).endswith("Z")
    assert isinstance(evidence["connect_ms"], float)
    assert isinstance(evidence["handshake_ms"], float)
    assert evidence["sni"] == HOST
    assert seen.sni == [HOST]
    assert HOST in outcome.detail


def test_ip_host_sends_no_sni_and_checks_the_ip(pki: Pki) -> None:
    seen = Seen()
    outcome = run_probe(
        context=server_context(pki.good, seen),
        host="127.0.0.1",
        ca_bundle=pki.ca_bundle,
    )
    assert outcome.status is Status.PASS, outcome.detail
    assert seen.sni == [None]
    assert outcome.evidence["sni"] is None


def test_unknown_issuer_is_interception(pki: Pki) -> None:
    outcome = run_probe(context=server_context(pki.inspected), ca_bundle=pki.ca_bundle)
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.TLS_INTERCEPTED,
    )
    assert INSPECT_CA in outcome.detail
    assert "bypassed" in outcome.detail
    assert "Exempt" in outcome.remedy
    assert "does not help" in outcome.remedy
    assert outcome.evidence["issuer"] == INSPECT_CA
    assert outcome.evidence["verify_code"] == 20
    assert outcome.evidence["subject"] == HOST


def test_the_system_store_does_not_trust_a_private_ca(pki: Pki) -> None:
    outcome = run_probe(context=server_context(pki.good))
    assert outcome.reason is Reason.TLS_INTERCEPTED
    assert GOOD_CA in outcome.detail
    assert "this host does not trust" in outcome.detail


def test_private_endpoint_name_may_add_its_ca(pki: Pki) -> None:
    outcome = run_probe(context=server_context(pki.inspected), host="127.0.0.1")
    assert outcome.reason is Reason.TLS_INTERCEPTED
    assert "private endpoint" in outcome.remedy


def test_untrusted_amazon_issuer_points_at_the_trust_store(pki: Pki) -> None:
    outcome = run_probe(
        context=server_context(pki.amazon_untrusted), ca_bundle=pki.ca_bundle
    )
    assert outcome.reason is Reason.TLS_INTERCEPTED
    assert "lacks its roots" in outcome.remedy
    assert str(pki.ca_bundle) in outcome.remedy


def test_self_signed_leaf_is_interception(pki: Pki) -> None:
    outcome = run_probe(
        context=server_context(pki.self_signed), ca_bundle=pki.ca_bundle
    )
    assert outcome.reason is Reason.TLS_INTERCEPTED
    assert outcome.evidence["verify_code"] == 18


def test_expired_certificate_is_untrusted(pki: Pki) -> None:
    outcome = run_probe(context=server_context(pki.expired), ca_bundle=pki.ca_bundle)
    assert outcome.reason is Reason.TLS_UNTRUSTED
    assert "expired on" in outcome.detail
    assert "clock" in outcome.remedy
    assert outcome.evidence["verify_code"] == 10
    # Expired a day and a moment ago: in its second day past expiry.
    assert outcome.evidence["days_left"] == -2


def test_wrong_name_is_untrusted(pki: Pki) -> None:
    outcome = run_probe(context=server_context(pki.wrong_name), ca_bundle=pki.ca_bundle)
    assert outcome.reason is Reason.TLS_UNTRUSTED
    assert "other.test" in outcome.detail
    assert outcome.evidence["verify_code"] == 62
    assert outcome.evidence["sans"] == ["other.test", "127.0.0.1"]


def test_plain_http_is_the_wrong_protocol() -> None:
    answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    outcome = run_probe(answer_with(answer))
    assert outcome.reason is Reason.WRONG_PROTOCOL
    assert "plain HTTP" in outcome.detail
    assert str(outcome.evidence["first_bytes"]).startswith("HTTP/1.1 400")


def test_tls_alert_is_a_protocol_error() -> None:
    # RFC 8446 6: a fatal (2) handshake_failure (40) alert record.
    outcome = run_probe(answer_with(b"\x15\x03\x03\x00\x02\x02\x28"))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "HANDSHAKE_FAILURE" in outcome.detail
    assert outcome.remedy


def test_old_tls_only_server_is_a_protocol_error() -> None:
    # A fatal protocol_version (70) alert: the answer of a server that
    # speaks nothing newer than TLS 1.1 to a TLS 1.2+ ClientHello.
    outcome = run_probe(answer_with(b"\x15\x03\x01\x00\x02\x02\x46"))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert "TLS 1.2 or later" in outcome.detail


def test_silence_after_connect_is_a_held_handshake() -> None:
    outcome = run_probe(silent, budget=0.3)
    assert outcome.reason is Reason.TIMEOUT
    assert "TCP to" in outcome.detail
    assert "no TLS answer" in outcome.detail
    assert outcome.evidence["received_bytes"] == 0


def test_reset_during_handshake_suggests_sni_filtering() -> None:
    outcome = run_probe(reset)
    assert outcome.reason is Reason.REFUSED
    assert "reset" in outcome.detail
    assert f"SNI {HOST}" in outcome.detail


def test_close_during_handshake_is_refused() -> None:
    outcome = run_probe(close_at_once)
    assert outcome.reason is Reason.REFUSED
    assert "closed" in outcome.detail


def test_closed_port_is_a_transport_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def go() -> Outcome:
        return await tls.probe(request_for(port))

    outcome = asyncio.run(go())
    assert outcome.reason is Reason.REFUSED
    assert outcome.remedy == ""


def test_unreadable_ca_bundle_is_a_setting_error(tmp_path: Path) -> None:
    outcome = run_probe(ca_bundle=tmp_path / "missing.pem")
    assert (outcome.status, outcome.reason) == (
        Status.ERROR,
        Reason.NOT_CONFIGURED,
    )


def test_handshake_without_reopen_still_judges(pki: Pki) -> None:
    async def go() -> Outcome:
        async with serving(context=server_context(pki.inspected)) as port:
            channel = await tls.connect("127.0.0.1", port, Deadline.after(2))
            assert isinstance(channel, tls.Channel)
            return await tls.handshake(
                channel,
                HOST,
                port,
                settings=ProbeSettings(ca_bundle=pki.ca_bundle),
                deadline=Deadline.after(2),
                log=request_for(port).log,
            )

    outcome = asyncio.run(go())
    assert outcome.reason is Reason.TLS_INTERCEPTED
    assert "an issuer" in outcome.detail
    assert "issuer" not in outcome.evidence


# The pure part.


def test_read_certificate(pki: Pki) -> None:
    cert = tls.read_certificate(pki.good.der)
    assert cert.subject == HOST
    assert cert.issuer == GOOD_CA
    assert cert.issuer_org == "sgw-reach tests"
    assert cert.sans == (HOST, "127.0.0.1")
    assert len(cert.sha256) == 64
    later = cert.not_after + datetime.timedelta(hours=1)
    assert cert.days_left(later) == -1


def test_name_without_common_name_is_rfc4514() -> None:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corp")])
    assert tls.name_of(name) == "O=Corp"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (2, Reason.TLS_INTERCEPTED),
        (18, Reason.TLS_INTERCEPTED),
        (19, Reason.TLS_INTERCEPTED),
        (20, Reason.TLS_INTERCEPTED),
        (21, Reason.TLS_INTERCEPTED),
        (9, Reason.TLS_UNTRUSTED),
        (10, Reason.TLS_UNTRUSTED),
        (62, Reason.TLS_UNTRUSTED),
        (64, Reason.TLS_UNTRUSTED),
        (7, Reason.TLS_UNTRUSTED),
    ],
)
def test_verdict_for(code: int, reason: Reason) -> None:
    assert tls.verdict_for(code) is reason


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x16\x03\x03\x00\x7a\x02", True),
        (b"\x15\x03\x01", True),
        (b"\x16", True),
        (b"HTTP/1.1 400", False),
        (b"SSH-2.0", False),
        (b"\x16\x01\x00", False),
        (b"", False),
    ],
)
def test_looks_like_tls(data: bytes, expected: bool) -> None:
    assert tls.looks_like_tls(data) is expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (HOST, True),
        ("s3.amazonaws.com", True),
        ("activation-storagegateway.eu-west-1.api.aws", True),
        ("d4kdq0yaxexbo.cloudfront.net.", True),
        ("s3.cn-north-1.amazonaws.com.cn", True),
        ("gateway.corp.example", False),
        ("notamazonaws.com", False),
        ("10.0.0.1", False),
    ],
)
def test_is_aws_name(host: str, expected: bool) -> None:
    assert tls.is_aws_name(host) is expected


@given(st.binary(max_size=600))
def test_read_certificate_random_bytes(data: bytes) -> None:
    with contextlib.suppress(tls.TlsError):
        tls.read_certificate(data)


@given(st.data())
def test_read_certificate_truncated_or_flipped(data: st.DataObject) -> None:
    der = _SAMPLE_DER
    cut = data.draw(st.integers(0, len(der) - 1))
    flip = data.draw(st.integers(0, len(der) - 1))
    mutated = bytearray(der)
    mutated[flip] ^= data.draw(st.integers(1, 255))
    for sample in (der[:cut], bytes(mutated)):
        with contextlib.suppress(tls.TlsError):
            tls.read_certificate(sample)


def _sample_der() -> bytes:
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("sample.test")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + _DAY)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("sample.test")]), False
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


_SAMPLE_DER = _sample_der()
