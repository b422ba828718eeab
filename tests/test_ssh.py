"""Tests for probes.ssh: the codec on bytes, the probe on loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes import ssh
from probes.base import (
    Deadline,
    Outcome,
    ProbeRequest,
    ProbeSettings,
    Reason,
    Status,
    Transport,
)

OPENSSH = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"

# Codec: bytes in, identifications or errors out.


@pytest.mark.parametrize(
    ("line", "proto", "software", "comments"),
    [
        (OPENSSH, "2.0", "OpenSSH_9.2p1", "Debian-2+deb12u3"),
        (b"SSH-2.0-dropbear_2022.83\n", "2.0", "dropbear_2022.83", ""),
        (b"SSH-1.99-Cisco-1.25\r\n", "1.99", "Cisco-1.25", ""),
        (b"SSH-1.5-OldServer", "1.5", "OldServer", ""),
        (b"SSH-2.0-Go", "2.0", "Go", ""),
        (b"SSH-2.0-x a b  c\r\n", "2.0", "x", "a b  c"),
    ],
)
def test_parse_identification(
    line: bytes, proto: str, software: str, comments: str
) -> None:
    ident = ssh.parse_identification(line)
    assert (ident.proto_version, ident.software, ident.comments) == (
        proto,
        software,
        comments,
    )


@pytest.mark.parametrize(
    ("line", "not_ssh"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n", True),
        (b"220 mail.example ESMTP\r\n", True),
        (b"", True),
        (b"SSH-2.0-\r\n", False),
        (b"SSH-2.0\r\n", False),
        (b"SSH--OpenSSH\r\n", False),
        (b"SSH-2.0- leading space\r\n", False),
        (b"SSH-2.0-caf\xc3\xa9\r\n", False),
        (b"SSH-2.0-a\x00b\r\n", False),
        (b"SSH-2.0-" + b"x" * 250 + b"\r\n", False),
    ],
)
def test_parse_identification_refuses(line: bytes, not_ssh: bool) -> None:
    with pytest.raises(ssh.SshError) as caught:
        ssh.parse_identification(line)
    assert isinstance(caught.value, ssh.NotSshError) is not_ssh


def test_the_longest_identification_is_255_bytes_with_crlf() -> None:
    line = b"SSH-2.0-" + b"x" * 245 + b"\r\n"
    assert len(line) == 255
    assert ssh.parse_identification(line).software == "x" * 245
    with pytest.raises(ssh.SshError):
        ssh.parse_identification(b"SSH-2.0-" + b"x" * 246 + b"\r\n")


def test_our_identification_follows_rfc_4253() -> None:
    line = ssh.identification_line("0.1.0")
    assert line == b"SSH-2.0-sgw_reach_0.1.0\r\n"
    ident = ssh.parse_identification(line)
    assert (ident.proto_version, ident.software) == ("2.0", "sgw_reach_0.1.0")
    # No minus sign or space may reach the software version.
    line = ssh.identification_line("1.0-dev 2")
    assert line == b"SSH-2.0-sgw_reach_1.0_dev_2\r\n"


def test_our_version_is_never_empty() -> None:
    assert ssh.our_version()


@pytest.mark.parametrize(
    ("data", "ended", "preamble"),
    [
        (OPENSSH, False, 0),
        (b"SSH-2.0-x\n", False, 0),
        (b"Welcome\r\nto the host\n" + OPENSSH, False, 2),
        (b"SSH-2.0-x", True, 0),
        (OPENSSH + b"\x00\x00\x01\x14binary kex follows", False, 0),
    ],
)
def test_find_banner(data: bytes, ended: bool, preamble: int) -> None:
    banner = ssh.find_banner(data, ended=ended)
    assert banner is not None
    assert banner.identification.proto_version == "2.0"
    assert banner.preamble == preamble
    assert not banner.line.endswith((b"\r", b"\n"))


@pytest.mark.parametrize(
    "data", [b"", b"SSH-2.0-Open", b"Welcome\r\n", b"Welcome\r\nSSH-2.0"]
)
def test_find_banner_waits_for_more(data: bytes) -> None:
    assert ssh.find_banner(data) is None


@pytest.mark.parametrize(
    ("data", "ended"),
    [
        (b"", True),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", True),
        (b"x" * 255, False),
        (b"\x00" * 300, False),
        (b"line\r\n" * 21 + OPENSSH, False),
        (b"y" * 300 + b"\r\n" + OPENSSH, False),
    ],
)
def test_find_banner_gives_up_on_what_is_not_ssh(
    data: bytes,
    ended: bool,
) -> None:
    with pytest.raises(ssh.NotSshError):
        ssh.find_banner(data, ended=ended)


def test_twenty_lines_before_the_banner_are_allowed() -> None:
    banner = ssh.find_banner(b"line\r\n" * 20 + OPENSSH)
    assert banner is not None
    assert banner.preamble == 20


def test_a_malformed_banner_is_not_the_wrong_protocol() -> None:
    with pytest.raises(ssh.SshError) as caught:
        ssh.find_banner(b"SSH-2.0-\r\n")
    assert not isinstance(caught.value, ssh.NotSshError)


@given(st.binary(max_size=600), st.booleans())
def test_random_bytes_raise_only_ssh_error(data: bytes, ended: bool) -> None:
    with contextlib.suppress(ssh.SshError):
        ssh.find_banner(data, ended=ended)
    with contextlib.suppress(ssh.SshError):
        ssh.parse_identification(data)


_EXCHANGE = b"Hello\r\n" + OPENSSH + b"\x00\x00\x03\x0c\x0a\x14"


@given(st.integers(min_value=0, max_value=len(_EXCHANGE)))
def test_every_prefix_of_a_good_exchange_waits_or_finds(cut: int) -> None:
    banner = ssh.find_banner(_EXCHANGE[:cut])
    if cut >= len(b"Hello\r\n" + OPENSSH):
        assert banner is not None
        assert banner.identification.software == "OpenSSH_9.2p1"
    else:
        assert banner is None


@given(st.lists(st.binary(max_size=40), max_size=30))
def test_lines_before_the_banner_never_escape_other_errors(
    lines: list[bytes],
) -> None:
    data = b"".join(line.replace(b"\n", b"") + b"\r\n" for line in lines)
    with contextlib.suppress(ssh.SshError):
        ssh.find_banner(data + OPENSSH)


# The probe against small servers on loopback.

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Handler = Callable[[Reader, Writer], Awaitable[None]]


def request(port: int, seconds: float) -> ProbeRequest:
    return ProbeRequest(
        host="127.0.0.1",
        port=port,
        transport=Transport.TCP,
        deadline=Deadline.after(seconds),
        settings=ProbeSettings(),
        address="127.0.0.1",
    )


def run(handler: Handler, seconds: float = 2.0) -> Outcome:
    async def main() -> Outcome:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await ssh.probe(request(port, seconds))
        finally:
            server.close()

    return asyncio.run(main())


def sends(*chunks: bytes, hold: float = 0.0) -> Handler:
    """A server that writes ``chunks`` (a pause between them), then
    keeps the connection open for ``hold`` seconds."""

    async def handler(_reader: Reader, writer: Writer) -> None:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.02)
        await asyncio.sleep(hold)
        writer.close()

    return handler


def test_an_ssh_2_server_passes() -> None:
    heard: list[bytes] = []

    async def handler(reader: Reader, writer: Writer) -> None:
        heard.append(await reader.readline())
        writer.write(OPENSSH)
        await writer.drain()
        writer.close()

    outcome = run(handler)
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.address == "127.0.0.1"
    assert outcome.evidence["banner"] == OPENSSH.decode().rstrip()
    assert outcome.evidence["proto_version"] == "2.0"
    assert outcome.evidence["software"] == "OpenSSH_9.2p1"
    assert isinstance(outcome.evidence["connect_ms"], float)
    # We spoke first, with our own identification.
    assert heard[0].startswith(b"SSH-2.0-sgw_reach_")
    assert heard[0].endswith(b"\r\n")


def test_lines_before_the_banner_and_a_split_banner_pass() -> None:
    chunks = (b"Welcome\r\nto the host\r\nSSH-2.0-Op", b"enSSH_9\r\n")
    outcome = run(sends(*chunks))
    assert outcome.status is Status.PASS, outcome.detail
    assert outcome.evidence["lines_before"] == 2


def test_ssh_1_99_passes() -> None:
    assert run(sends(b"SSH-1.99-Cisco-1.25\r\n")).status is Status.PASS


def test_ssh_1_only_is_a_protocol_error() -> None:
    outcome = run(sends(b"SSH-1.5-OldServer\r\n"))
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.PROTOCOL_ERROR,
    )
    assert "SSH-1" in outcome.detail
    assert outcome.evidence["proto_version"] == "1.5"
    assert outcome.remedy


def test_an_unknown_version_is_a_protocol_error() -> None:
    outcome = run(sends(b"SSH-3.0-Future\r\n"))
    assert outcome.reason is Reason.PROTOCOL_ERROR


def test_a_malformed_banner_is_a_protocol_error() -> None:
    outcome = run(sends(b"SSH-2.0-\r\n"))
    assert outcome.reason is Reason.PROTOCOL_ERROR
    assert outcome.evidence["first_bytes"] == "SSH-2.0-\\r\\n"


def test_a_web_server_is_the_wrong_protocol() -> None:
    async def web(reader: Reader, writer: Writer) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n")
        await writer.drain()
        writer.close()

    outcome = run(web)
    assert (outcome.status, outcome.reason) == (
        Status.FAIL,
        Reason.WRONG_PROTOCOL,
    )
    assert outcome.evidence["first_bytes"] == (
        "HTTP/1.1 400 Bad Request\\r\\nServer: nginx\\r\\n\\r\\n"
    )
    assert "not SSH" in outcome.detail
    assert outcome.remedy


def test_a_close_without_a_banner_is_the_wrong_protocol() -> None:
    outcome = run(sends())
    assert outcome.reason is Reason.WRONG_PROTOCOL
    assert "without an SSH banner" in outcome.detail
    assert outcome.evidence["first_bytes"] == ""


def test_binary_garbage_is_the_wrong_protocol_at_once() -> None:
    outcome = run(sends(bytes(range(256)) * 2, hold=5), seconds=3)
    assert outcome.reason is Reason.WRONG_PROTOCOL
    first = outcome.evidence["first_bytes"]
    assert isinstance(first, str)
    assert first.startswith("\\x00\\x01")


def test_another_greeting_then_silence_is_the_wrong_protocol() -> None:
    outcome = run(sends(b"220 mail.example ESMTP\r\n", hold=2), seconds=0.5)
    assert outcome.reason is Reason.WRONG_PROTOCOL
    assert "220 mail.example ESMTP" in outcome.detail


def test_silence_after_connect_is_a_timeout() -> None:
    outcome = run(sends(hold=2), seconds=0.5)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.TIMEOUT)
    assert "opened but no SSH banner" in outcome.detail
    assert "connect_ms" in outcome.evidence


def test_a_closed_port_is_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main() -> Outcome:
        return await ssh.probe(request(port, 1.0))

    outcome = asyncio.run(main())
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.REFUSED)
