"""The activation probe against small in-process HTTP servers."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from probes import activation, http
from probes.base import (
    Deadline,
    Outcome,
    ProbeRequest,
    ProbeSettings,
    Reason,
    Status,
    Transport,
)
from tests.test_tls import Handler, serving, silent

KEY = "ABCD1-EFGH2-IJKL3-MNOP4-QRST5"
CONSOLE = "console.aws.amazon.com"
REDIRECT = (
    f"http://{CONSOLE}/storagegateway/home?region=eu-west-1"
    f"&activationKey={KEY}&gatewayType=FILE_S3"
)


def answering(data: bytes, requests: list[bytes] | None = None) -> Handler:
    """A server that reads one request head and sends ``data``."""

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if requests is not None:
            requests.append(head)
        writer.write(data)
        await writer.drain()
        writer.close()

    return handle


def response(status: str, body: bytes = b"", *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def run_probe(handler: Handler, budget: float = 2.0) -> Outcome:
    async def go() -> Outcome:
        async with serving(handler) as port:
            request = ProbeRequest(
                host="gw.test",
                port=port,
                transport=Transport.TCP,
                deadline=Deadline.after(budget),
                settings=ProbeSettings(region="eu-west-1"),
                address="127.0.0.1",
            )
            return await activation.probe(request)

    return asyncio.run(go())


def test_request_on_the_wire() -> None:
    requests: list[bytes] = []
    outcome = run_probe(answering(response("200 OK", KEY.encode()), requests))
    assert outcome.status is Status.PASS
    line, *headers = requests[0].decode().split("\r\n")
    assert line == "GET /?activationRegion=eu-west-1&no_redirect HTTP/1.1"
    assert headers[0].startswith("Host: gw.test:")
    assert "Connection: close" in headers


def test_key_in_the_body_passes_and_stays_secret() -> None:
    with capture_logs() as logs:
        outcome = run_probe(answering(response("200 OK", KEY.encode() + b"\n")))
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.address == "127.0.0.1"
    assert "ABCD1-*****-*****-*****-*****" in outcome.detail
    assert "eu-west-1" in outcome.detail
    assert outcome.evidence["key_prefix"] == "ABCD1"
    assert outcome.evidence["status_line"] == "HTTP/1.1 200 OK"
    assert "EFGH2" not in repr(outcome)
    assert "EFGH2" not in repr(logs)


def test_key_in_a_redirect_passes() -> None:
    outcome = run_probe(answering(response("302 Found", b"", f"Location: {REDIRECT}")))
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.evidence["location_host"] == CONSOLE
    assert outcome.evidence["key_prefix"] == "ABCD1"
    assert "EFGH2" not in repr(outcome)


def test_chunked_key_passes() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"e\r\nABCD1-EFGH2-IJ\r\nf\r\nKL3-MNOP4-QRST5\r\n0\r\n\r\n"
    )
    outcome = run_probe(answering(chunked))
    assert outcome.status is Status.PASS, outcome.detail


@pytest.mark.parametrize(
    ("answer", "reason", "words"),
    [
        (
            response("200 OK", b"Internal Error"),
            Reason.PROTOCOL_ERROR,
            "answered internal error",
        ),
        (
            response("500 Internal Server Error", b"<h1>INTERNAL ERROR</h1>"),
            Reason.PROTOCOL_ERROR,
            "cannot reach AWS",
        ),
        (
            response("404 Not Found", b"<html>nginx</html>"),
            Reason.PROTOCOL_ERROR,
            "'HTTP/1.1 404 Not Found' without an activation key",
        ),
        (
            response("200 OK", b"<html>welcome</html>"),
            Reason.PROTOCOL_ERROR,
            "without an activation key",
        ),
        (
            response("302 Found", b"", "Location: http://portal.example/login"),
            Reason.PROTOCOL_ERROR,
            "redirected 'HTTP/1.1 302 Found'",
        ),
        (b"SSH-2.0-OpenSSH_9.2\r\n", Reason.WRONG_PROTOCOL, "SSH-2.0-OpenSSH_9.2"),
        (b"", Reason.PROTOCOL_ERROR, "closed the connection without answering"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\n" + KEY.encode(),
            Reason.PROTOCOL_ERROR,
            "broken HTTP answer",
        ),
    ],
)
def test_failed_answers(answer: bytes, reason: Reason, words: str) -> None:
    outcome = run_probe(answering(answer))
    assert (outcome.status, outcome.reason) == (Status.FAIL, reason)
    assert words in outcome.detail
    assert outcome.remedy
    assert "EFGH2" not in repr(outcome)


def test_internal_error_remedy_names_what_the_gateway_needs() -> None:
    outcome = run_probe(answering(response("200 OK", b"internal error")))
    for need in ("443", "TLS inspection", "DNS", "NTP"):
        assert need in outcome.remedy


def test_internal_error_shows_the_body_without_the_key() -> None:
    body = b"<h1>Internal Error</h1>\r\nkey " + KEY.encode() + b" not issued"
    outcome = run_probe(answering(response("500 Internal Error", body)))
    gist = r"<h1>Internal Error</h1>\r\nkey ABCD1" + "-*****" * 4 + " not issued"
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert f"(it said '{gist}')" in outcome.detail
    assert outcome.evidence["body_preview"] == gist
    assert "EFGH2" not in repr(outcome)


def test_internal_error_in_a_redirect_has_no_body_to_show() -> None:
    location = "Location: http://h/?errorMessage=Internal+Error"
    outcome = run_probe(answering(response("302 Found", b"", location)))
    assert outcome.detail.endswith("it cannot reach AWS itself")
    assert outcome.evidence["body_preview"] == ""


def test_silence_is_a_timeout() -> None:
    outcome = run_probe(silent, budget=0.3)
    assert outcome.reason is Reason.TIMEOUT
    assert "no complete answer" in outcome.detail


def test_closed_port_is_a_transport_failure() -> None:
    async def go() -> Outcome:
        server = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        request = ProbeRequest(
            host="gw.test",
            port=port,
            transport=Transport.TCP,
            deadline=Deadline.after(1),
            settings=ProbeSettings(),
            address="127.0.0.1",
        )
        return await activation.probe(request)

    outcome = asyncio.run(go())
    assert outcome.reason is Reason.REFUSED
    assert outcome.remedy == ""


# The pure part.


def head(status: str, *headers: str) -> http.Response:
    return http.parse_head(
        ("\r\n".join([f"HTTP/1.1 {status}", *headers]) + "\r\n\r\n").encode()
    )


@pytest.mark.parametrize(
    ("response_head", "body", "key", "location_host", "internal"),
    [
        (head("200 OK"), KEY.encode(), KEY, None, False),
        (head("200 OK"), f' "{KEY}"\r\n'.encode(), KEY, None, False),
        (head("200 OK"), b"abc-def-ghi-jkl-mno", "abc-def-ghi-jkl-mno", None, False),
        (head("200 OK"), b"ABCD1-EFGH2-IJKL3", None, None, False),
        (head("200 OK"), b"ABCD1-EFGH2-IJKL3-MNOP4-QRST5-UVWX6", None, None, False),
        (head("200 OK"), b"ABCD1-EFGH2-IJ L3-MNOP4-QRST5", None, None, False),
        (head("500 Oops"), KEY.encode(), None, None, False),
        (head("302 Found", f"Location: {REDIRECT}"), b"", KEY, CONSOLE, False),
        (head("301 Moved", "Location: /x?activationKey=a_b"), b"", None, None, False),
        (
            head("302 Found", "Location: http://h/?errorMessage=Internal+Error"),
            b"",
            None,
            "h",
            True,
        ),
        (head("200 OK"), b"\xffInternal ERROR", None, None, True),
    ],
)
def test_read_answer(
    response_head: http.Response,
    body: bytes,
    key: str | None,
    location_host: str | None,
    internal: bool,
) -> None:
    answer = activation.read_answer(response_head, body)
    assert answer.key == key
    assert answer.location_host == location_host
    assert answer.internal_error is internal


@pytest.mark.parametrize(
    ("body", "preview"),
    [
        (b"", ""),
        (b"Internal Error", "Internal Error"),
        (b" \r\n\tInternal Error\r\n", "Internal Error"),
        (b"\x00\xffinternal error\x1b[2J", r"\x00\xffinternal error\x1b[2J"),
        (b"x" * 500, "x" * activation.PREVIEW_BYTES),
        (KEY.encode(), "ABCD1-*****-*****-*****-*****"),
        (b"k=" + KEY.lower().encode() + b".", "k=abcd1" + "-*****" * 4 + "."),
        # Four groups are not a key; a longer run is masked whole.
        (b"ABCD1-EFGH2-IJKL3-MNOP4", "ABCD1-EFGH2-IJKL3-MNOP4"),
        (b"a-b-c-d-" + KEY.encode(), "a-*-*-*-*****-*****-*****-*****-*****"),
        # A key cut by the preview's end is masked before the cut.
        (b"e" * 70 + b" " + KEY.encode(), "e" * 70 + " ABCD1-***"),
        # A group past 32 characters breaks the run where it starts.
        (b"Y" * 40 + b"-" + KEY.encode(), "Y" * 40 + "-*****" * 5),
    ],
)
def test_body_preview(body: bytes, preview: str) -> None:
    assert activation.body_preview(body) == preview
    answer = activation.read_answer(head("500 Oops"), body)
    assert answer.preview == preview


@given(st.binary(max_size=100), st.binary(max_size=100))
def test_body_preview_never_shows_a_key(before: bytes, after: bytes) -> None:
    assume(b"EFGH2" not in before + after)
    preview = activation.body_preview(before + KEY.encode() + after)
    assert "EFGH2" not in preview
    assert len(preview) <= 4 * activation.PREVIEW_BYTES
    assert all(" " <= char <= "~" for char in preview)


def test_answer_repr_hides_the_key() -> None:
    answer = activation.read_answer(head("200 OK"), KEY.encode())
    assert "EFGH2" not in repr(answer)


def test_mask_and_prefix() -> None:
    assert activation.mask(KEY) == "ABCD1-*****-*****-*****-*****"
    assert activation.mask("AB-CDEFG-H-IJ-K") == "AB-*****-*-**-*"
    assert activation.key_prefix(KEY) == "ABCD1"


def test_activation_target_quotes_the_region() -> None:
    assert activation.activation_target("us-east-1") == (
        "/?activationRegion=us-east-1&no_redirect"
    )
    assert activation.activation_target("a b&c") == (
        "/?activationRegion=a%20b%26c&no_redirect"
    )


_STATUS = st.sampled_from([200, 302, 404, 500])
_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_LOCATION = st.builds(
    "".join,
    st.lists(
        st.one_of(
            st.text(_ASCII, max_size=12),
            st.sampled_from(["http://", "[", "?", "&", "activationKey=", "-", "%"]),
        ),
        max_size=12,
    ),
)


@given(_STATUS, st.binary(max_size=120), _LOCATION)
def test_read_answer_never_raises(status: int, body: bytes, location: str) -> None:
    response_head = http.Response("HTTP/1.1", status, "", (("Location", location),))
    answer = activation.read_answer(response_head, body)
    if answer.key is not None:
        assert len(answer.key.split("-")) == 5
        masked = activation.mask(answer.key)
        assert masked.startswith(activation.key_prefix(answer.key) + "-")
        assert set(masked.split("-", 1)[1]) <= {"*", "-"}


@given(st.lists(st.text("ABCXYZ0189", min_size=1, max_size=8), min_size=5, max_size=5))
def test_any_five_groups_are_a_key(groups: list[str]) -> None:
    key = "-".join(groups)
    answer = activation.read_answer(head("200 OK"), key.encode())
    assert answer.key == key
