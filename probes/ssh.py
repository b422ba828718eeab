"""SSH probe for the support channel: does an SSH server answer on 22/TCP?

The probe connects, sends its own identification line at once and reads
the server's (RFC 4253 4.2). Both sides may send first, and speaking
first makes a service that is not SSH give itself away: a web server or
an HTTP proxy on the port answers the line with "400 Bad Request", which
then shows as evidence.

RFC 4253 4.2 lets a server send other lines before its ``SSH-`` line;
they are read within bounds: each line at most 255 bytes, at most 20 of
them (so at most 5100 bytes) before the identification. Lines may end in
CR LF or a bare LF. SSH-2.0 and SSH-1.99 (a server that speaks both) pass;
SSH-1 alone, or an identification RFC 4253 does not allow, is a protocol
error; anything else, including a connection closed without a banner,
is the wrong protocol. A connection that opens but stays silent is a
timeout: something holds the connection (a tarpit, a proxy) without
being an SSH server; so is an identification still unfinished at the
deadline (a server that trickles its banner), which proves nothing yet.

Our identification is ``SSH-2.0-sgw_reach_<version>``: RFC 4253 forbids
the minus sign in the software version, so the package name is written
with an underscore there.

Limits: the probe stops at the identification exchange, with no key
exchange, so it proves that an SSH server answers, not that it is AWS's
support endpoint or that the whole session would succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from importlib import metadata

from probes.base import (
    JSONValue,
    Outcome,
    ProbeRequest,
    Reason,
    failed,
    held_open,
    passed,
    printable,
)
from probes.net import Connection, connect

# RFC 4253 4.2: the identification is at most 255 bytes with its CR LF.
MAX_LINE = 255
# Lines allowed before the identification; the RFC sets no bound.
MAX_LINES = 20
_CHUNK = 1024
_PREFIX = b"SSH-"
# RFC 4253 4.2: printable US-ASCII without whitespace. The RFC forbids
# the minus sign too, but a server that slips there is still an SSH
# server, so a read accepts it; our own line keeps the rule.
_SOFTWARE = re.compile(r"[!-~]+")
_PRINTABLE = re.compile(r"[ -~]*")
SUPPORTED = frozenset({"2.0", "1.99"})


class SshError(ValueError):
    """An ``SSH-`` line that RFC 4253 4.2 does not allow."""


class NotSshError(SshError):
    """Bytes that hold no SSH identification at all."""


@dataclass(frozen=True)
class Identification:
    """The parts of ``SSH-protoversion-softwareversion SP comments``."""

    proto_version: str
    software: str
    comments: str


@dataclass(frozen=True)
class Banner:
    """The server's identification and the lines that came before it."""

    identification: Identification
    line: bytes
    preamble: int


def identification_line(version: str) -> bytes:
    """Our own identification, CR LF included."""
    software = "sgw_reach_" + re.sub(r"[^!-,.-~]", "_", version)
    return f"SSH-2.0-{software}\r\n".encode("ascii")


def parse_identification(line: bytes) -> Identification:
    """Decode one identification line (with or without its line end)."""
    text = _strip_end(line)
    if len(text) + 2 > MAX_LINE:
        raise SshError(f"identification of {len(text)} bytes is too long")
    if not text.startswith(_PREFIX):
        raise NotSshError("not an SSH identification")
    try:
        decoded = text.decode("ascii")
    except UnicodeDecodeError as exc:
        raise SshError("identification is not US-ASCII") from exc
    if not _PRINTABLE.fullmatch(decoded):
        raise SshError("identification holds control characters")
    proto, dash, rest = decoded[len(_PREFIX) :].partition("-")
    software, _space, comments = rest.partition(" ")
    if not dash or not proto or " " in proto:
        raise SshError("identification has no protocol version")
    if not _SOFTWARE.fullmatch(software):
        raise SshError("identification has no valid software version")
    return Identification(proto, software, comments)


def find_banner(data: bytes, ended: bool = False) -> Banner | None:
    """Look for the identification in what the server sent so far.

    Returns None while more bytes are needed. Raises NotSshError when the
    bytes break the bounds above or the connection ended (``ended``)
    without an identification, and SshError for a malformed one.
    """
    start = 0
    for count in range(MAX_LINES + 1):
        end = data.find(b"\n", start, start + MAX_LINE)
        if end < 0:
            return _last_line(data[start:], count, ended)
        line = data[start : end + 1]
        if line.startswith(_PREFIX):
            return Banner(parse_identification(line), _strip_end(line), count)
        start = end + 1
    raise NotSshError("no SSH identification within the allowed lines")


def _last_line(tail: bytes, count: int, ended: bool) -> Banner | None:
    """An unterminated last line: wait for more, or take it as it is
    once the connection has ended, as lenient servers expect."""
    if len(tail) >= MAX_LINE:
        raise NotSshError(f"a line runs past {MAX_LINE} bytes")
    if not ended:
        return None
    if tail.startswith(_PREFIX):
        return Banner(parse_identification(tail), tail, count)
    raise NotSshError("the connection ended without an SSH identification")


def _strip_end(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line


def our_version() -> str:
    """This package's version, or "0" when it is not installed."""
    try:
        return metadata.version("sgw-reach")
    except metadata.PackageNotFoundError:
        return "0"


# The probe: thin I/O over the codec above.


async def probe(request: ProbeRequest) -> Outcome:
    """Connect, trade identifications, and judge the server's."""
    conn = await connect(request)
    if isinstance(conn, Outcome):
        return conn
    request.log.debug("ssh.connected", connect_ms=conn.connect_ms)
    got = bytearray()
    started = asyncio.get_running_loop().time()
    try:
        found = await _exchange(conn, got, request)
    except SshError as exc:
        return _refused_banner(conn, request.port, bytes(got), exc)
    if found is None:
        waited = asyncio.get_running_loop().time() - started
        return _silent(conn, request.port, waited, bytes(got))
    request.log.debug("ssh.banner", banner=printable(found.line, MAX_LINE))
    return _judge(conn, request.port, found)


async def _exchange(
    conn: Connection, got: bytearray, request: ProbeRequest
) -> Banner | None:
    """Send our line, read until a banner; None if the deadline came
    with nothing at all. Raises SshError for what is not a banner."""
    reader, writer = await conn.streams()
    try:
        async with asyncio.timeout_at(request.deadline.when):
            with contextlib.suppress(ConnectionError):
                writer.write(identification_line(our_version()))
                await writer.drain()
            return await _read_banner(reader, got)
    except TimeoutError:
        return _at_deadline(bytes(got))
    finally:
        writer.close()


def _at_deadline(data: bytes) -> Banner | None:
    """Judge what came by the deadline: None when nothing came, or when
    the last line may still become the identification (the server is
    too slow, not proven SSH); else as if the connection had ended."""
    tail = data[data.rfind(b"\n") + 1 :]
    if not data or (tail and (tail.startswith(_PREFIX) or _PREFIX.startswith(tail))):
        return None
    return find_banner(data, ended=True)


async def _read_banner(reader: asyncio.StreamReader, got: bytearray) -> Banner:
    while True:
        try:
            chunk = await reader.read(_CHUNK)
        except ConnectionError:
            chunk = b""
        got += chunk
        found = find_banner(bytes(got), ended=not chunk)
        if found is not None:
            return found


# Verdicts.


def _judge(conn: Connection, port: int, banner: Banner) -> Outcome:
    ident = banner.identification
    evidence: dict[str, JSONValue] = {
        "banner": printable(banner.line, MAX_LINE),
        "proto_version": ident.proto_version,
        "software": ident.software,
        "connect_ms": conn.connect_ms,
        "lines_before": banner.preamble,
    }
    where = f"{conn.address} TCP {port}"
    if ident.proto_version in SUPPORTED:
        return passed(
            f"an SSH server answers on {where}: {evidence['banner']}",
            **evidence,
        ).at(conn.address)
    if ident.proto_version.startswith("1."):
        detail = f"the SSH server on {where} speaks only SSH-1"
    else:
        detail = (
            f"the SSH server on {where} offers protocol "
            f"{ident.proto_version}, which is not SSH-2"
        )
    return failed(
        Reason.PROTOCOL_ERROR,
        detail,
        "The support channel needs SSH-2: check that this port reaches "
        "AWS's support endpoint and not an old or foreign SSH server.",
        **evidence,
    ).at(conn.address)


def _refused_banner(
    conn: Connection, port: int, data: bytes, error: SshError
) -> Outcome:
    where = f"{conn.address} TCP {port}"
    evidence: dict[str, JSONValue] = {
        "first_bytes": printable(data),
        "connect_ms": conn.connect_ms,
    }
    if not isinstance(error, NotSshError):
        return failed(
            Reason.PROTOCOL_ERROR,
            f"{where} sent an SSH identification RFC 4253 does not "
            f"allow ({error}): {printable(data, 32)}",
            "Check what answers on this port: the support channel needs "
            "a standard SSH-2 server.",
            **evidence,
        ).at(conn.address)
    if data:
        detail = f"{where} answered with something that is not SSH: "
        detail += printable(data, 32)
    else:
        detail = f"{where} closed the connection without an SSH banner"
    return failed(
        Reason.WRONG_PROTOCOL,
        detail,
        "Something other than an SSH server answers on this port (a web "
        "server, a proxy, a firewall): let the gateway's SSH go straight "
        "to AWS, not through a proxy.",
        **evidence,
    ).at(conn.address)


def _silent(conn: Connection, port: int, waited_s: float, data: bytes) -> Outcome:
    waited = round(waited_s, 1)
    what = "an SSH banner began but did not end" if data else "no SSH banner came"
    return failed(
        Reason.TIMEOUT,
        f"the TCP connection to {conn.address} port {port} opened but "
        f"{what} in {waited} s: a tarpit, or a proxy holding the "
        "connection",
        held_open("the SSH server", f"{conn.address} port {port}"),
        connect_ms=conn.connect_ms,
        waited_s=waited,
        first_bytes=printable(data),
    ).at(conn.address)
