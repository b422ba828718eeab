"""Port 80 on the gateway VM: does it hand out an activation key?

This is the request a browser or script makes to activate a gateway:
``GET /?activationRegion=R&no_redirect``. A gateway that can reach AWS
answers 200 with the key as the body; older gateways ignore
``no_redirect`` and answer 302 with ``activationKey=KEY`` in Location.
The gateway fetches the key from AWS itself, so "internal error" in the
answer means the gateway cannot reach AWS, while a timeout means port 80
is blocked on the way to it.

An activation key is a secret for 30 minutes: reports and logs show only
its first group (``ABCD1-*****-*****-*****-*****``), and
:class:`Answer` keeps the key out of its repr. On "internal error" the
first bytes of the body are shown, as the gist of what went wrong, with
anything shaped like a key masked the same way.

Limits: only the gateway's answer is judged, not whether AWS accepts the
key; a key is five groups of letters and digits joined by dashes, any
group length; the query string carries no ``gatewayType`` or VPC
endpoint parameters.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote_plus, urlsplit

from probes import http, net
from probes.base import Outcome, ProbeRequest, Reason, failed, passed

# Keys look like XXXXX-XXXXX-XXXXX-XXXXX-XXXXX: five groups of letters
# and digits; the group length is not relied on.
_KEY = re.compile(r"[A-Za-z0-9]{1,32}(?:-[A-Za-z0-9]{1,32}){4}")
# Five or more such groups in a row: the whole run is masked, so a key
# glued to other dashed words cannot show four of its groups.
_KEY_RUN = re.compile(rb"[A-Za-z0-9]{1,32}(?:-[A-Za-z0-9]{1,32}){4,}")
_INTERNAL_ERROR = "internal error"
# The body's gist: enough for an error message, not a page.
PREVIEW_BYTES = 80
# Masking keeps lengths, so masking this much of the body covers every
# key that starts within the preview, even one of five 32-long groups.
_MASKED_BYTES = PREVIEW_BYTES + 5 * 33


@dataclass(frozen=True)
class Answer:
    """What a gateway's answer to the activation request says."""

    status_line: str
    key: str | None = field(repr=False)
    location_host: str | None
    internal_error: bool
    preview: str


def activation_target(region: str) -> str:
    """The request-target that asks for a key for ``region``."""
    return f"/?activationRegion={quote(region, safe='')}&no_redirect"


def build_activation_request(host: str, port: int, region: str) -> bytes:
    return http.build_request(
        "GET",
        activation_target(region),
        http.authority(host, port, default=80),
        (("Connection", "close"),),
    )


def read_answer(response: http.Response, body: bytes) -> Answer:
    """Find the key in a 200 body or in a redirect's Location."""
    text = body.decode("utf-8", errors="replace")
    location = response.get("Location") or ""
    key = _key_in_body(text) if response.status == 200 else None
    if key is None and 300 <= response.status < 400:
        key = _key_in_location(location)
    said = f"{text} {unquote_plus(location)}".lower()
    return Answer(
        status_line=response.status_line,
        key=key,
        location_host=_host_of(location),
        internal_error=_INTERNAL_ERROR in said,
        preview=body_preview(body),
    )


def body_preview(body: bytes) -> str:
    """The body's first bytes, printable, with key-shaped runs masked."""
    start = body.strip()[:_MASKED_BYTES]
    masked = _KEY_RUN.sub(
        lambda found: mask(found[0].decode("ascii")).encode("ascii"), start
    )
    return http.preview(masked, PREVIEW_BYTES)


def _key_in_body(text: str) -> str | None:
    candidate = text.strip().strip('"')
    return candidate if _KEY.fullmatch(candidate) else None


def _key_in_location(location: str) -> str | None:
    try:
        query = urlsplit(location).query
    except ValueError:
        return None
    for value in parse_qs(query).get("activationKey", []):
        if _KEY.fullmatch(value):
            return value
    return None


def _host_of(location: str) -> str | None:
    if not location:
        return None
    try:
        return urlsplit(location).hostname
    except ValueError:
        return None


def mask(key: str) -> str:
    """The key with every group but the first hidden."""
    first, *rest = key.split("-")
    return "-".join([first, *("*" * len(group) for group in rest)])


def key_prefix(key: str) -> str:
    return key.split("-", 1)[0]


async def probe(request: ProbeRequest) -> Outcome:
    """Ask the gateway for an activation key, as a browser would."""
    connection = await net.connect(request)
    if isinstance(connection, Outcome):
        return connection
    address = connection.address
    where = http.authority(request.host, request.port)
    payload = build_activation_request(
        request.host, request.port, request.settings.region
    )
    started = asyncio.get_running_loop().time()
    reader, writer = await connection.streams()
    try:
        async with asyncio.timeout_at(request.deadline.when):
            writer.write(payload)
            await writer.drain()
        response, body = await http.read_response(reader, request.deadline)
    except (TimeoutError, OSError, http.HttpError) as exc:
        waited = round(asyncio.get_running_loop().time() - started, 1)
        request.log.debug("activation.unanswered", error=type(exc).__name__)
        outcome = _unanswered(exc, where, waited)
        return outcome.with_evidence(connect_ms=connection.connect_ms).at(address)
    finally:
        await http.close(writer)
    answer = read_answer(response, body)
    request.log.debug(
        "activation.answer",
        status_line=answer.status_line,
        key_found=answer.key is not None,
    )
    outcome = judge(answer, where, request.settings.region)
    return outcome.with_evidence(connect_ms=connection.connect_ms).at(address)


def judge(answer: Answer, where: str, region: str) -> Outcome:
    """The verdict an answer gives; the key never leaves here whole."""
    evidence = {
        "status_line": answer.status_line,
        "location_host": answer.location_host,
    }
    if answer.key is not None:
        return passed(
            f"the gateway at {where} issued activation key "
            f"{mask(answer.key)} for {region}",
            key_prefix=key_prefix(answer.key),
            **evidence,
        )
    if answer.internal_error:
        said = f" (it said '{answer.preview}')" if answer.preview else ""
        return failed(
            Reason.PROTOCOL_ERROR,
            f"the gateway at {where} answered internal error: it cannot "
            f"reach AWS itself{said}",
            "Let the gateway reach the AWS endpoints on TCP 443 without "
            "TLS inspection, its DNS servers on port 53 and NTP on UDP 123 "
            "(a clock off by over 60 s also breaks activation), then "
            "activate again.",
            body_preview=answer.preview,
            **evidence,
        )
    what = "redirected" if answer.location_host else "answered"
    return failed(
        Reason.PROTOCOL_ERROR,
        f"{where} {what} '{answer.status_line}' without an activation key",
        f"Check that {where} is the gateway VM and that nothing else (a "
        "web server, a proxy, a captive portal) answers on its port 80.",
        **evidence,
    )


def _unanswered(exc: Exception, where: str, waited: float) -> Outcome:
    if isinstance(exc, TimeoutError):
        return failed(
            Reason.TIMEOUT,
            f"{where} accepted TCP but sent no complete answer in "
            f"{waited} s: the gateway may be stuck calling AWS, or a "
            "middlebox holds the connection",
            "Check that no proxy or filter between here and the gateway "
            "holds HTTP on port 80, and that the gateway reaches AWS on "
            "TCP 443.",
            waited_s=waited,
        )
    if isinstance(exc, http.HttpError):
        return _not_http(exc, where)
    return failed(
        Reason.REFUSED,
        f"{where} reset the connection after the activation request",
    )


def _not_http(exc: http.HttpError, where: str) -> Outcome:
    if isinstance(exc, http.EarlyClose) and not exc.data:
        return failed(
            Reason.PROTOCOL_ERROR,
            f"{where} closed the connection without answering",
            f"Check that {where} is the gateway VM and that no filter "
            "closes HTTP connections to it.",
            first_bytes="",
        )
    if not exc.data or exc.data.startswith(b"HTTP/"):
        # Only the status line is shown: a body may hold a key.
        first = http.preview(exc.data.split(b"\n", 1)[0])
        return failed(
            Reason.PROTOCOL_ERROR,
            f"{where} sent a broken HTTP answer: {exc}",
            f"Check that {where} is the gateway VM.",
            first_bytes=first or None,
        )
    first = http.preview(exc.data)
    return failed(
        Reason.WRONG_PROTOCOL,
        f"{where} does not speak HTTP: it sent '{first}'",
        f"Check that {where} is the gateway VM and port 80 is its activation port.",
        first_bytes=first,
    )
