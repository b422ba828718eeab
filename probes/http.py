"""Just enough HTTP/1.1 for the probes: one request out, one answer in.

The codec is pure: :func:`build_request` makes request bytes,
:func:`parse_head` turns a response head into a :class:`Response` or
raises :class:`HttpError`, :func:`body_length` and :func:`decode_chunked`
frame the body. :func:`read_head` and :func:`read_response` are the thin
async layer over an asyncio stream, bounded in time by one deadline and
in size by :data:`MAX_HEAD` and :data:`MAX_BODY`.

Limits: redirects are never followed (a probe reports them); an interim
1xx answer is taken as the final one; trailers of a chunked body are
dropped; a body longer than the limit is cut, not refused; header values
are decoded as ISO-8859-1 (RFC 9110 5.5 obs-text).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from probes.base import Deadline

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
_CHUNK = 4096

# RFC 9112 4: status-line = HTTP-version SP status-code SP [reason-phrase].
# A missing reason (and its SP) is accepted, as most clients do.
_STATUS_LINE = re.compile(rb"HTTP/1\.(\d) (\d{3})(?: ([^\r\n]*))?")
# RFC 9110 5.6.2: a header name is a token.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HTTP_NAME = b"HTTP/"
_HEX = re.compile(rb"[0-9A-Fa-f]+")


class HttpError(ValueError):
    """The bytes are not an HTTP/1.x response, or the peer stopped early.

    ``data`` holds the bytes received, so a probe can show what answered
    instead of HTTP.
    """

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(message)
        self.data = data


class EarlyClose(HttpError):
    """The peer closed the connection before the end of the head."""


@dataclass(frozen=True)
class Response:
    """A parsed response head (RFC 9112 4 and 5)."""

    version: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def status_line(self) -> str:
        line = f"{self.version} {self.status}"
        return f"{line} {self.reason}" if self.reason else line


def authority(host: str, port: int, default: int | None = None) -> str:
    """``host:port`` for a Host header or CONNECT target (RFC 9110 7.2).

    An IPv6 literal gets brackets; the port is left out when it is the
    scheme's ``default``.
    """
    name = f"[{host}]" if ":" in host else host
    return name if port == default else f"{name}:{port}"


def build_request(
    method: str,
    target: str,
    host: str,
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The bytes of an HTTP/1.1 request with no body (RFC 9112 3)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if any(c in line for line in lines for c in "\r\n\0"):
        raise HttpError("a request line or header holds CR, LF or NUL")
    text = "\r\n".join(lines) + "\r\n\r\n"
    try:
        return text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise HttpError("a request line or header is not ASCII") from exc


def head_end(data: bytes) -> int:
    """The index just past the empty line that ends the head, or -1.

    A bare LF ends a line too (RFC 9112 2.2 lets a recipient accept it).
    """
    ends = [
        found + len(mark)
        for mark in (b"\n\r\n", b"\n\n")
        if (found := data.find(mark)) >= 0
    ]
    return min(ends, default=-1)


def check_start(data: bytes) -> None:
    """Raise unless ``data`` can be the start of an HTTP/1.x response.

    Lets a reader give up on the first bytes of another protocol (an SSH
    banner, a TLS alert) instead of waiting for a head that never ends.
    """
    start = data[: len(_HTTP_NAME)]
    if not _HTTP_NAME.startswith(start):
        raise HttpError("the answer does not start with HTTP/", data)


def parse_head(data: bytes) -> Response:
    """Parse a response head, with or without its final empty line."""
    check_start(data)
    end = head_end(data)
    head = data[:end] if end >= 0 else data
    lines = [line.rstrip(b"\r") for line in head.split(b"\n")]
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        raise HttpError("not an HTTP/1.x status line", data)
    minor, code, reason = status.groups()
    return Response(
        version=f"HTTP/1.{minor.decode()}",
        status=int(code),
        reason=(reason or b"").decode("latin-1").strip(),
        headers=_parse_fields(lines[1:], data),
    )


def _parse_fields(lines: list[bytes], data: bytes) -> tuple[tuple[str, str], ...]:
    fields: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            break
        if line[:1] in (b" ", b"\t") and fields:
            # RFC 9112 5.2: obs-fold continues the previous value.
            key, text = fields[-1]
            fields[-1] = (key, f"{text} {_text(line)}")
            continue
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise HttpError("a header line is not name: value", data)
        fields.append((name.decode("ascii"), _text(value)))
    return tuple(fields)


def _text(value: bytes) -> str:
    return value.strip(b" \t").decode("latin-1")


def body_length(response: Response) -> int | None:
    """Content-Length as a number, or None when the body ends at close.

    A chunked body (RFC 9112 6.3) also ends at close here, because the
    probes ask with ``Connection: close``; see :func:`decode_chunked`.
    """
    if is_chunked(response):
        return None
    value = response.get("Content-Length")
    if value is None:
        return None
    # RFC 9112 6.3: repeated identical values are allowed as one list.
    values = {part.strip() for part in value.split(",")}
    if len(values) != 1 or not (only := values.pop()).isdigit():
        raise HttpError(f"bad Content-Length {value!r}")
    return int(only)


def is_chunked(response: Response) -> bool:
    coding = response.get("Transfer-Encoding") or ""
    return coding.lower().rstrip().endswith("chunked")


def decode_chunked(data: bytes) -> bytes:
    """Join the chunks of a chunked body (RFC 9112 7.1).

    Stops at the last-chunk or where the data ends, so a body cut by
    :data:`MAX_BODY` still yields its complete chunks.
    """
    return _dechunk(data)[0]


def chunked_done(data: bytes) -> bool:
    """Whether ``data`` holds a chunked body up to its last-chunk."""
    return _dechunk(data)[1]


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    out = bytearray()
    pos = 0
    while (eol := data.find(b"\n", pos)) >= 0:
        size_text = data[pos:eol].rstrip(b"\r").split(b";")[0].strip()
        if _HEX.fullmatch(size_text) is None:
            raise HttpError("bad chunk size line", data[pos : eol + 1])
        size = int(size_text, 16)
        if size == 0:
            return bytes(out), True
        start = eol + 1
        out += data[start : start + size]
        pos = start + size
        # The chunk's data ends in CRLF, or a bare LF.
        pos += 2 if data[pos : pos + 2] == b"\r\n" else 1
    return bytes(out), False


def preview(data: bytes, limit: int = 64) -> str:
    """The first ``limit`` bytes, printable, with the rest escaped."""
    return repr(data[:limit])[2:-1]


async def read_head(
    reader: asyncio.StreamReader, deadline: Deadline, limit: int = MAX_HEAD
) -> tuple[Response, bytes]:
    """Read one response head; return it and the bytes read past it.

    Raises :class:`HttpError` (:class:`EarlyClose` on a close before the
    head ended), TimeoutError at the deadline, OSError on a reset.
    """
    data = b""
    async with asyncio.timeout_at(deadline.when):
        while (end := head_end(data)) < 0:
            if len(data) >= limit:
                raise HttpError(f"response head longer than {limit} bytes", data)
            chunk = await reader.read(min(_CHUNK, limit - len(data)))
            if not chunk:
                raise EarlyClose("closed before the end of the head", data)
            data += chunk
            check_start(data)
    return parse_head(data[:end]), data[end:]


async def read_response(
    reader: asyncio.StreamReader, deadline: Deadline, limit: int = MAX_BODY
) -> tuple[Response, bytes]:
    """Read a response head and up to ``limit`` bytes of its body.

    The body ends at Content-Length, at a chunked body's last-chunk or
    at close; a chunked body is decoded. A close before the body is
    complete is not an error: the probe judges what came.
    """
    response, body = await read_head(reader, deadline)
    length = body_length(response)
    chunked = is_chunked(response)
    want = limit if length is None else min(length, limit)
    async with asyncio.timeout_at(deadline.when):
        while len(body) < want and not (chunked and chunked_done(body)):
            chunk = await reader.read(min(_CHUNK, want - len(body)))
            if not chunk:
                break
            body += chunk
    body = body[:want]
    return response, decode_chunked(body) if chunked else body


async def close(writer: asyncio.StreamWriter) -> None:
    """Drop a connection at once; a probe owes its peer no graceful end."""
    writer.transport.abort()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
