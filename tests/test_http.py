"""The HTTP/1.1 codec by bytes, and its async reader on loopback."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes import http
from probes.base import Deadline
from tests.test_tls import Handler, serving, silent

# (request arguments, expected bytes)
REQUESTS = [
    (
        ("GET", "/", "gw", ()),
        b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n",
    ),
    (
        ("GET", "/?a=1&b", "10.0.0.5", (("Connection", "close"),)),
        b"GET /?a=1&b HTTP/1.1\r\nHost: 10.0.0.5\r\nConnection: close\r\n\r\n",
    ),
    (
        ("CONNECT", "h.example:443", "h.example:443", ()),
        b"CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443\r\n\r\n",
    ),
]


@pytest.mark.parametrize(("args", "wire"), REQUESTS)
def test_build_request(
    args: tuple[str, str, str, tuple[tuple[str, str], ...]], wire: bytes
) -> None:
    assert http.build_request(*args) == wire


@pytest.mark.parametrize(
    "args",
    [
        ("GET", "/\r\nX: y", "gw", ()),
        ("GET", "/", "gw\n", ()),
        ("GET", "/", "gw", (("X", "a\rb"),)),
        ("GET", "/é", "gw", ()),
    ],
)
def test_build_request_refuses_injection(
    args: tuple[str, str, str, tuple[tuple[str, str], ...]],
) -> None:
    with pytest.raises(http.HttpError):
        http.build_request(*args)


@pytest.mark.parametrize(
    ("host", "port", "default", "expected"),
    [
        ("gw", 80, 80, "gw"),
        ("gw", 8080, 80, "gw:8080"),
        ("h.example", 443, None, "h.example:443"),
        ("2001:db8::1", 443, None, "[2001:db8::1]:443"),
        ("2001:db8::1", 80, 80, "[2001:db8::1]"),
    ],
)
def test_authority(host: str, port: int, default: int | None, expected: str) -> None:
    assert http.authority(host, port, default) == expected


# (head bytes, version, status, reason, headers)
HEADS = [
    (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1",
        200,
        "OK",
        (("Content-Length", "3"),),
    ),
    (
        b"HTTP/1.0 302 Found\r\nLocation: http://x/?k=v\r\nServer: a b\r\n\r\n",
        "HTTP/1.0",
        302,
        "Found",
        (("Location", "http://x/?k=v"), ("Server", "a b")),
    ),
    (b"HTTP/1.1 204\r\n\r\n", "HTTP/1.1", 204, "", ()),
    (b"HTTP/1.1 200 \r\n\r\n", "HTTP/1.1", 200, "", ()),
    (
        b"HTTP/1.1 407 Proxy Authentication Required\n"
        b'Proxy-Authenticate: Basic realm="p"\n\n',
        "HTTP/1.1",
        407,
        "Proxy Authentication Required",
        (("Proxy-Authenticate", 'Basic realm="p"'),),
    ),
    (
        b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  b\r\nX-Empty:\r\n\r\n",
        "HTTP/1.1",
        200,
        "OK",
        (("X-Long", "a b"), ("X-Empty", "")),
    ),
    (
        b"HTTP/1.1 200 Connection established",
        "HTTP/1.1",
        200,
        "Connection established",
        (),
    ),
]


@pytest.mark.parametrize(("wire", "version", "status", "reason", "headers"), HEADS)
def test_parse_head(
    wire: bytes,
    version: str,
    status: int,
    reason: str,
    headers: tuple[tuple[str, str], ...],
) -> None:
    response = http.parse_head(wire)
    assert (response.version, response.status) == (version, status)
    assert response.headers == headers
    assert response.reason == reason
    assert response.status_line == " ".join(
        part for part in (version, str(status), reason) if part
    )


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x15\x03\x03\x00\x02\x02\x28",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: x\r\n\r\n",
    ],
)
def test_parse_head_refuses(wire: bytes) -> None:
    with pytest.raises(http.HttpError):
        http.parse_head(wire)


def test_get_is_case_insensitive_and_first_wins() -> None:
    response = http.parse_head(b"HTTP/1.1 200 OK\r\nA: 1\r\na: 2\r\n\r\n")
    assert response.get("a") == "1"
    assert response.get("A") == "1"
    assert response.get("b") is None


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"HTTP/1.1 200 OK\r\n\r\nbody", 19),
        (b"HTTP/1.1 200 OK\n\nbody", 17),
        (b"HTTP/1.1 200 OK\r\nA: b\r\n", -1),
        (b"", -1),
    ],
)
def test_head_end(data: bytes, end: int) -> None:
    assert http.head_end(data) == end


@pytest.mark.parametrize(
    ("headers", "length"),
    [
        (b"Content-Length: 12\r\n", 12),
        (b"Content-Length: 5, 5\r\n", 5),
        (b"", None),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 9\r\n", None),
    ],
)
def test_body_length(headers: bytes, length: int | None) -> None:
    response = http.parse_head(b"HTTP/1.1 200 OK\r\n" + headers + b"\r\n")
    assert http.body_length(response) == length


@pytest.mark.parametrize("value", [b"-1", b"1e3", b"5, 6", b""])
def test_body_length_refuses(value: bytes) -> None:
    response = http.parse_head(
        b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\n"
    )
    with pytest.raises(http.HttpError):
        http.body_length(response)


@pytest.mark.parametrize(
    ("data", "body", "done"),
    [
        (b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde", True),
        (b"3;ext=1\r\nabc\r\n0\r\n\r\n", b"abc", True),
        (b"A\nabcdefghij\n0\n\n", b"abcdefghij", True),
        (b"3\r\nabc\r\n5\r\nde", b"abcde", False),
        (b"3\r\nab", b"ab", False),
        (b"", b"", False),
    ],
)
def test_chunked(data: bytes, body: bytes, done: bool) -> None:
    assert http.decode_chunked(data) == body
    assert http.chunked_done(data) is done


def test_chunked_refuses_a_bad_size() -> None:
    with pytest.raises(http.HttpError):
        http.decode_chunked(b"xyz\r\nabc\r\n")


def test_preview_escapes() -> None:
    assert http.preview(b"SSH-2.0\r\n\x00") == "SSH-2.0\\r\\n\\x00"
    assert len(http.preview(b"a" * 100)) == 64


@given(st.binary(max_size=300))
def test_parse_head_random_bytes(data: bytes) -> None:
    with contextlib.suppress(http.HttpError):
        http.parse_head(data)


@given(st.binary(max_size=300))
def test_parse_head_random_after_status_line(data: bytes) -> None:
    try:
        response = http.parse_head(b"HTTP/1.1 200 OK\r\n" + data)
        http.body_length(response)
    except http.HttpError:
        pass


@given(st.binary(max_size=300))
def test_decode_chunked_random_bytes(data: bytes) -> None:
    with contextlib.suppress(http.HttpError):
        http.decode_chunked(data)


_TOKEN = st.text("abcdefghijklmnopqrstuvwxyz-ABCXYZ0123456789", min_size=1, max_size=20)
_VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)


@given(
    st.integers(100, 599),
    st.text("abcdef XYZ", max_size=20),
    st.lists(st.tuples(_TOKEN, _VALUE), max_size=5),
    st.data(),
)
def test_parse_head_round_trip_and_truncation(
    status: int,
    reason: str,
    headers: list[tuple[str, str]],
    data: st.DataObject,
) -> None:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers]
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode()
    response = http.parse_head(wire)
    assert response.status == status
    assert response.reason == reason.strip()
    assert response.headers == tuple(headers)
    cut = data.draw(st.integers(0, len(wire)))
    with contextlib.suppress(http.HttpError):
        http.parse_head(wire[:cut])


def serve_bytes(chunks: list[bytes], *, close: bool = True) -> Handler:
    """A server that reads the request, then sends ``chunks`` one by one
    and closes, or keeps the connection until the client goes."""

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.read(1024)
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.01)
        if not close:
            await silent(reader, writer)

    return handle


def exchange(
    chunks: list[bytes], *, close: bool = True, budget: float = 1.0
) -> tuple[http.Response, bytes]:
    async def go() -> tuple[http.Response, bytes]:
        async with serving(serve_bytes(chunks, close=close)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            try:
                return await http.read_response(reader, Deadline.after(budget))
            finally:
                await http.close(writer)

    return asyncio.run(go())


def test_read_response_by_content_length_in_pieces() -> None:
    response, body = exchange(
        [b"HTTP/1.1 200 OK\r\nContent-", b"Length: 5\r\n\r\nhel", b"lo+extra"],
        close=False,
    )
    assert response.status == 200
    assert body == b"hello"


def test_read_response_until_close() -> None:
    _, body = exchange([b"HTTP/1.0 200 OK\r\n\r\nall ", b"of it"])
    assert body == b"all of it"


def test_read_response_chunked_without_close() -> None:
    _, body = exchange(
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nkey!\r\n0\r\n\r\n"
        ],
        close=False,
    )
    assert body == b"key!"


def test_read_response_bounds_the_body() -> None:
    _, body = exchange([b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * (http.MAX_BODY + 10)])
    assert len(body) == http.MAX_BODY


def test_read_response_gives_up_on_other_protocols_at_once() -> None:
    with pytest.raises(http.HttpError) as caught:
        exchange([b"SSH-2.0-OpenSSH_9.2\r\n"], close=False, budget=5)
    assert caught.value.data.startswith(b"SSH-2.0")


def test_read_response_early_close() -> None:
    with pytest.raises(http.EarlyClose) as caught:
        exchange([])
    assert caught.value.data == b""


def test_read_response_head_too_long() -> None:
    with pytest.raises(http.HttpError, match="longer than"):
        exchange([b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 4000], close=False)


def test_read_response_times_out() -> None:
    with pytest.raises(TimeoutError):
        exchange([b"HTTP/1.1 200 OK\r\n"], close=False, budget=0.2)
