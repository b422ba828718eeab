"""TLS to the AWS endpoints: does a genuine handshake get through?

The gateway checks that an endpoint's certificate chains to a root it
trusts, so a TLS-inspecting middlebox, a DNS override or a wrong clock
all break it. This probe connects to ``host:port``, sends a ClientHello
with SNI = ``host`` (none when ``host`` is an IP address), verifies the
chain against the system store, or only against ``ca_bundle`` when one
is set, and names what it saw: the issuer an inspecting box signs with,
an expired or misnamed certificate, a server that is not TLS, a handshake
held or reset by a firewall that filters by server name.

The handshake runs over :class:`ssl.MemoryBIO` on an asyncio stream, so
:func:`handshake` works on any byte channel, a TCP connection or a
CONNECT tunnel alike, and sees the raw bytes that came back. When
verification fails, a second, unverified handshake on a fresh channel
fetches the certificate actually presented, for the report.

The pure part reads a certificate from DER (:func:`read_certificate`)
and maps OpenSSL's verify codes to reasons (:func:`verdict_for`).

Limits: TLS 1.2 or later only (what the gateway itself needs); only the
leaf certificate is reported, since Python 3.11 cannot hand out the
unverified chain; revocation is not checked; the report lists at most
:data:`MAX_SANS` subject alternative names.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ssl
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.x509.oid import NameOID

from probes import http, net
from probes.base import (
    Deadline,
    Evidence,
    Outcome,
    ProbeRequest,
    ProbeSettings,
    Reason,
    Status,
    failed,
    passed,
)

MAX_SANS = 32
_CHUNK = 16 * 1024
_FIRST_BYTES = 64
# Name suffixes of AWS's public endpoints, whose certificates always
# chain to Amazon's public roots.
# The console is under amazon.com, the API and data endpoints under the
# others.
_AWS_SUFFIXES = (
    ".amazonaws.com",
    ".amazonaws.com.cn",
    ".amazon.com",
    ".aws",
    ".cloudfront.net",
)

Logger = structlog.typing.FilteringBoundLogger


# What cryptography raises on odd DER: mostly ValueError, but a name
# with an unknown string tag gives KeyError, a bit string in the wrong
# attribute TypeError, and some faults have classes of their own.
_PARSE_ERRORS = (
    ValueError,
    KeyError,
    TypeError,
    x509.DuplicateExtension,
    x509.InvalidVersion,
    x509.UnsupportedGeneralNameType,
)


class TlsError(ValueError):
    """The bytes are not a certificate this module can read."""


class VerifyCode(IntEnum):
    """OpenSSL's X509_V_ERR_* codes a verdict turns on (x509_vfy.h)."""

    UNABLE_TO_GET_ISSUER_CERT = 2
    CERT_NOT_YET_VALID = 9
    CERT_HAS_EXPIRED = 10
    DEPTH_ZERO_SELF_SIGNED_CERT = 18
    SELF_SIGNED_CERT_IN_CHAIN = 19
    UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
    UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
    HOSTNAME_MISMATCH = 62
    EMAIL_MISMATCH = 63
    IP_ADDRESS_MISMATCH = 64


# A chain that does not lead to a trusted root is what a middlebox that
# re-signs traffic with its own CA produces.
UNKNOWN_ISSUER = frozenset(
    {
        VerifyCode.UNABLE_TO_GET_ISSUER_CERT,
        VerifyCode.DEPTH_ZERO_SELF_SIGNED_CERT,
        VerifyCode.SELF_SIGNED_CERT_IN_CHAIN,
        VerifyCode.UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        VerifyCode.UNABLE_TO_VERIFY_LEAF_SIGNATURE,
    }
)
OUT_OF_DATE = frozenset({VerifyCode.CERT_NOT_YET_VALID, VerifyCode.CERT_HAS_EXPIRED})
WRONG_NAME = frozenset(
    {
        VerifyCode.HOSTNAME_MISMATCH,
        VerifyCode.EMAIL_MISMATCH,
        VerifyCode.IP_ADDRESS_MISMATCH,
    }
)


def verdict_for(code: int) -> Reason:
    """The reason a failed verification with OpenSSL ``code`` gives."""
    if code in UNKNOWN_ISSUER:
        return Reason.TLS_INTERCEPTED
    return Reason.TLS_UNTRUSTED


@dataclass(frozen=True)
class Certificate:
    """The facts of one X.509 certificate a report needs (RFC 5280 4.1)."""

    subject: str
    issuer: str
    issuer_org: str
    sans: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime
    sha256: str

    def days_left(self, now: datetime.datetime) -> int:
        """Whole days until expiry; negative once expired."""
        return (self.not_after - now) // datetime.timedelta(days=1)

    def evidence(self, now: datetime.datetime) -> Evidence:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "sans": list(self.sans[:MAX_SANS]),
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "days_left": self.days_left(now),
            "sha256": self.sha256,
        }


def read_certificate(der: bytes) -> Certificate:
    """Read the report's facts from a DER certificate.

    A middlebox's certificate may bend the rules; cryptography's warnings
    about that are silenced, as a probe reports and does not warn.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _read(der)
    except _PARSE_ERRORS as exc:
        raise TlsError(f"not a readable certificate: {exc}") from exc


def _read(der: bytes) -> Certificate:
    cert = x509.load_der_x509_certificate(der)
    return Certificate(
        subject=name_of(cert.subject),
        issuer=name_of(cert.issuer),
        issuer_org=_attribute(cert.issuer, NameOID.ORGANIZATION_NAME),
        sans=_sans(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=hashlib.sha256(der).hexdigest(),
    )


def name_of(name: x509.Name) -> str:
    """The common name, or the whole name (RFC 4514) when it has none."""
    return _attribute(name, NameOID.COMMON_NAME) or name.rfc4514_string()


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    for attribute in name.get_attributes_for_oid(oid):
        value = attribute.value
        return value if isinstance(value, str) else value.hex()
    return ""


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    names: list[str] = list(ext.value.get_values_for_type(x509.DNSName))
    addresses = ext.value.get_values_for_type(x509.IPAddress)
    return (*names, *(str(a) for a in addresses))


def _iso(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def looks_like_tls(data: bytes) -> bool:
    """Whether ``data`` starts like a TLS record (RFC 8446 5.1).

    A record begins with its content type (20 to 23) and a legacy
    version whose major byte is 3.
    """
    return bool(data) and 20 <= data[0] <= 23 and data[1:2] in (b"", b"\x03")


def make_context(ca_bundle: Path | None, verify: bool = True) -> ssl.SSLContext:
    """A client context: TLS 1.2 or later; with ``ca_bundle`` set, that
    bundle is the only trust (like ``curl --cacert``)."""
    if verify:
        cafile = str(ca_bundle) if ca_bundle is not None else None
        context = ssl.create_default_context(cafile=cafile)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass
class Channel:
    """A byte stream to a TLS server: a TCP connection or a tunnel.

    ``pending`` holds bytes already read off the stream that belong to
    the TLS exchange (read past a proxy's answer); ``evidence`` is what
    opening the channel measured. :func:`handshake` closes the channel.
    """

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pending: bytes = b""
    evidence: Evidence = field(default_factory=dict)


Reopen = Callable[[], Awaitable[Channel | Outcome]]


@dataclass
class _Received:
    """What came back from the server, for the verdict."""

    first: bytes = b""
    count: int = 0

    def note(self, data: bytes) -> None:
        self.first += data[: _FIRST_BYTES - len(self.first)]
        self.count += len(data)


class _PeerClosed(Exception):
    """The server closed the connection in the middle of the handshake."""


@dataclass(frozen=True)
class _Target:
    host: str
    port: int

    @property
    def sni(self) -> str | None:
        return None if net.is_address(self.host) else self.host

    def __str__(self) -> str:
        return http.authority(self.host, self.port)


async def handshake(
    channel: Channel,
    host: str,
    port: int,
    *,
    settings: ProbeSettings,
    deadline: Deadline,
    log: Logger,
    reopen: Reopen | None = None,
) -> Outcome:
    """Run a verified TLS handshake for ``host`` over ``channel`` and
    say what it means.

    ``port`` only names the target in the report. When verification
    fails and ``reopen`` is given, it opens a fresh channel to the same
    server for an unverified handshake that fetches the certificate
    presented. The outcome carries no address; the caller adds it.
    """
    target = _Target(host, port)
    try:
        context = make_context(settings.ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        await http.close(channel.writer)
        return _bad_bundle(settings.ca_bundle, exc)
    outcome = await _verified(channel, target, context, deadline, log)
    if isinstance(outcome, ssl.SSLCertVerificationError):
        outcome = await _rejected(
            outcome,
            target,
            settings=settings,
            deadline=deadline,
            log=log,
            reopen=reopen,
        )
    return outcome.with_evidence(sni=target.sni, **channel.evidence)


async def _verified(
    channel: Channel,
    target: _Target,
    context: ssl.SSLContext,
    deadline: Deadline,
    log: Logger,
) -> Outcome | ssl.SSLCertVerificationError:
    loop = asyncio.get_running_loop()
    received = _Received()
    started = loop.time()
    try:
        tls = await _shake(channel, context, target, deadline, received)
    except ssl.SSLCertVerificationError as exc:
        log.debug("tls.verify_failed", code=exc.verify_code, why=exc.verify_message)
        return exc
    except (TimeoutError, OSError, ssl.SSLError, _PeerClosed) as exc:
        waited = round(loop.time() - started, 1)
        log.debug("tls.broken", error=repr(exc), received=received.count)
        return _broken(exc, target, received, waited)
    finally:
        await http.close(channel.writer)
    elapsed = round((loop.time() - started) * 1000, 1)
    log.debug("tls.handshake", version=tls.version(), ms=elapsed)
    return _passed(tls, target, elapsed)


async def _shake(
    channel: Channel,
    context: ssl.SSLContext,
    target: _Target,
    deadline: Deadline,
    received: _Received,
) -> ssl.SSLObject:
    """Drive a client handshake over the channel's stream to its end."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    # An IP address as server_hostname sends no SNI but is still checked
    # against the certificate's IP address names.
    tls = context.wrap_bio(incoming, outgoing, server_hostname=target.host)
    received.note(channel.pending)
    incoming.write(channel.pending)
    async with asyncio.timeout_at(deadline.when):
        while True:
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                await _send(channel.writer, outgoing)
                data = await channel.reader.read(_CHUNK)
                if not data:
                    raise _PeerClosed from None
                received.note(data)
                incoming.write(data)
            else:
                await _send(channel.writer, outgoing)
                return tls


async def _send(writer: asyncio.StreamWriter, outgoing: ssl.MemoryBIO) -> None:
    data = outgoing.read()
    if data:
        writer.write(data)
        await writer.drain()


def _passed(tls: ssl.SSLObject, target: _Target, elapsed: float) -> Outcome:
    version = tls.version() or "unknown"
    cipher = tls.cipher()
    evidence: Evidence = {
        "tls_version": version,
        "cipher": cipher[0] if cipher else None,
        "handshake_ms": elapsed,
    }
    der = tls.getpeercert(binary_form=True)
    try:
        cert = read_certificate(der) if der else None
    except TlsError:
        cert = None
    if cert is None:
        return passed(f"{version} with {target} verified", **evidence)
    now = datetime.datetime.now(datetime.UTC)
    detail = (
        f"{version} with {target} verified: certificate for "
        f"{cert.subject} from {cert.issuer}, "
        f"valid for {cert.days_left(now)} more days"
    )
    return passed(detail, **evidence, **cert.evidence(now))


def _broken(
    exc: BaseException, target: _Target, received: _Received, waited: float
) -> Outcome:
    """Classify a handshake that ended without a certificate verdict."""
    if isinstance(exc, TimeoutError):
        return _held(target, received, waited)
    if isinstance(exc, ssl.SSLError):
        if received.count and not looks_like_tls(received.first):
            return _not_tls(target, received)
        return _refused_by_tls(exc, target)
    how = "closed" if isinstance(exc, _PeerClosed) else "reset"
    filtered = (
        f"a firewall that filters by server name (SNI {target.sni}) may block it"
        if target.sni
        else "a firewall may block it"
    )
    return failed(
        Reason.REFUSED,
        f"{target} {how} the connection during the TLS handshake: {filtered}",
        f"Allow TLS to {target.host} on port {target.port} in the "
        "firewall's server-name (SNI) or URL filtering.",
        received_bytes=received.count,
    )


def _held(target: _Target, received: _Received, waited: float) -> Outcome:
    if received.count == 0:
        detail = (
            f"TCP to {target} connected but no TLS answer came in {waited} s: "
            "a middlebox holds the handshake"
        )
    else:
        detail = (
            f"the TLS handshake with {target} started but did not finish in {waited} s"
        )
    return failed(
        Reason.TIMEOUT,
        detail,
        f"Check the firewall or proxy on the way to {target}: it lets TCP "
        "through but holds TLS for this name.",
        waited_s=waited,
        received_bytes=received.count,
    )


def _not_tls(target: _Target, received: _Received) -> Outcome:
    first = received.first
    what = "something that is not TLS"
    if first.startswith(b"HTTP/"):
        what = "plain HTTP"
    elif first.startswith(b"SSH-"):
        what = "SSH"
    return failed(
        Reason.WRONG_PROTOCOL,
        f"{target} answered the TLS ClientHello with {what}: '{http.preview(first)}'",
        f"Make {target.host} reach the AWS endpoint on port {target.port}; "
        "another service or a plain-HTTP proxy answers there now.",
        first_bytes=http.preview(first),
    )


def _refused_by_tls(exc: ssl.SSLError, target: _Target) -> Outcome:
    why = str(exc.reason or exc)
    if "PROTOCOL_VERSION" in why or "UNSUPPORTED_PROTOCOL" in why:
        detail = f"{target} does not offer TLS 1.2 or later ({why})"
    else:
        detail = f"{target} broke off the TLS handshake: {why}"
    return failed(
        Reason.PROTOCOL_ERROR,
        detail,
        f"Check what answers for {target}: AWS endpoints accept TLS 1.2 "
        "and 1.3; a firewall that filters by server name can also end the "
        "handshake with an alert.",
        ssl_error=why,
    )


async def _rejected(
    exc: ssl.SSLCertVerificationError,
    target: _Target,
    *,
    settings: ProbeSettings,
    deadline: Deadline,
    log: Logger,
    reopen: Reopen | None,
) -> Outcome:
    """The verdict of a failed verification, with the presented cert."""
    code = int(exc.verify_code)
    cert = await _presented(target, deadline, log, reopen)
    now = datetime.datetime.now(datetime.UTC)
    if verdict_for(code) is Reason.TLS_INTERCEPTED:
        outcome = _intercepted(target, cert, settings.ca_bundle)
    elif code in OUT_OF_DATE:
        outcome = _out_of_date(target, cert, now)
    elif code in WRONG_NAME:
        outcome = _misnamed(target, cert)
    else:
        outcome = failed(
            Reason.TLS_UNTRUSTED,
            f"the certificate presented by {target} is not trusted: "
            f"{exc.verify_message}",
            f"Check what answers for {target}; AWS endpoints present "
            "certificates from Amazon's public CAs.",
        )
    found = cert.evidence(now) if cert is not None else {}
    return outcome.with_evidence(
        verify_code=code, verify_message=str(exc.verify_message), **found
    )


async def _presented(
    target: _Target, deadline: Deadline, log: Logger, reopen: Reopen | None
) -> Certificate | None:
    """The leaf certificate the server presents, by an unverified
    handshake on a fresh channel; None when that fails too."""
    channel = await reopen() if reopen is not None else None
    if not isinstance(channel, Channel):
        return None
    context = make_context(None, verify=False)
    try:
        tls = await _shake(channel, context, target, deadline, _Received())
        der = tls.getpeercert(binary_form=True)
        cert = read_certificate(der) if der else None
    except (TimeoutError, OSError, ssl.SSLError, _PeerClosed, TlsError) as exc:
        log.debug("tls.presented_unknown", error=repr(exc))
        return None
    finally:
        await http.close(channel.writer)
    log.debug("tls.presented", issuer=cert.issuer if cert else None)
    return cert


def _intercepted(
    target: _Target, cert: Certificate | None, ca_bundle: Path | None
) -> Outcome:
    trust = f"the CA bundle {ca_bundle}" if ca_bundle else "this host"
    issuer = f"'{cert.issuer}'" if cert else "an issuer"
    detail = (
        f"the certificate presented for {target} is signed by {issuer}, "
        f"which {trust} does not trust: TLS is inspected on the way, and "
        "TLS inspection must be bypassed for these hosts"
    )
    return failed(
        Reason.TLS_INTERCEPTED, detail, _intercepted_remedy(target, cert, trust)
    )


def _intercepted_remedy(target: _Target, cert: Certificate | None, trust: str) -> str:
    if not is_aws_name(target.host):
        return (
            f"Exempt the gateway's traffic to {target} from TLS inspection; "
            f"only if {target.host} is a private endpoint with its own CA, "
            "pass that CA as the CA bundle instead."
        )
    remedy = (
        "Exempt the gateway's traffic to the AWS endpoints (TCP 443) from "
        "TLS inspection: the gateway trusts only Amazon's roots, so "
        "installing the inspecting CA does not help."
    )
    if cert is not None and "amazon" in f"{cert.issuer} {cert.issuer_org}".lower():
        remedy += f" If the issuer really is Amazon's, {trust} lacks its roots."
    return remedy


def is_aws_name(host: str) -> bool:
    """Whether ``host`` is a name under one of AWS's public domains."""
    name = host.lower().rstrip(".")
    return any(name.endswith(suffix) for suffix in _AWS_SUFFIXES)


def _out_of_date(
    target: _Target, cert: Certificate | None, now: datetime.datetime
) -> Outcome:
    if cert is None:
        what = "is expired or not yet valid"
    elif cert.not_after < now:
        what = f"expired on {_iso(cert.not_after)}"
    else:
        what = f"is not valid before {_iso(cert.not_before)}"
    return failed(
        Reason.TLS_UNTRUSTED,
        f"the certificate presented by {target} {what} "
        f"(this host's clock says {_iso(now)})",
        f"Check this host's clock against NTP; if it is right, something "
        f"other than the AWS endpoint answers for {target.host}.",
        checked_at=_iso(now),
    )


def _misnamed(target: _Target, cert: Certificate | None) -> Outcome:
    names = ", ".join(cert.sans[:3]) if cert and cert.sans else None
    shown = names or (cert.subject if cert else "other names")
    return failed(
        Reason.TLS_UNTRUSTED,
        f"the certificate presented for {target} is for {shown}, not {target.host}",
        f"Make {target.host} resolve to the AWS endpoint itself: a DNS "
        "override, a wrong endpoint name or a middlebox answers instead.",
    )


def _bad_bundle(ca_bundle: Path | None, exc: Exception) -> Outcome:
    return Outcome(
        Status.ERROR,
        Reason.NOT_CONFIGURED,
        f"the CA bundle {ca_bundle} cannot be loaded: {exc}",
        {"ca_bundle": str(ca_bundle)},
        "Point the CA bundle setting at a readable PEM file of CA certificates.",
    )


async def probe(request: ProbeRequest) -> Outcome:
    """Prove a verified TLS handshake with ``request.host``."""
    address = await net.address_of(request)
    if isinstance(address, Outcome):
        return address

    async def reopen() -> Channel | Outcome:
        return await connect(address, request.port, request.deadline)

    channel = await reopen()
    if isinstance(channel, Outcome):
        return channel
    outcome = await handshake(
        channel,
        request.host,
        request.port,
        settings=request.settings,
        deadline=request.deadline,
        log=request.log,
        reopen=reopen,
    )
    return outcome.at(address)


async def connect(address: str, port: int, deadline: Deadline) -> Channel | Outcome:
    """A TCP channel to ``address:port``, or why there is none."""
    connection = await net.open_tcp(address, port, deadline)
    if isinstance(connection, Outcome):
        return connection
    reader, writer = await connection.streams()
    return Channel(reader, writer, evidence={"connect_ms": connection.connect_ms})
