"""Readiness probe, run as a script inside the agent namespace.

Usage: ``python probe.py WAIT_SECONDS CHECKS_JSON`` where CHECKS_JSON is
a list of ``[name, kind, address, port]`` and kind is ``tcp`` (connect),
``dns-udp`` / ``dns-tcp`` (an A query that must answer NOERROR),
``ntp`` (any server-mode reply), ``portmap`` (the portmapper on
address:111 maps the RPC program served on `port`, NFS for 2049 and
mountd for 20048, to `port` over TCP) or ``nbstat`` (a NetBIOS node
status request answered with at least one name).  Failed checks are
retried until all pass or WAIT_SECONDS is spent; the script prints a
JSON object mapping each still failing check to its last error, ``{}``
when all passed.

Limits: standard library only, so it runs under any interpreter; it
proves a service answers, not that its answers are right (the lab's
own tests do that).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time

_TRY_TIMEOUT_S = 0.3
_RETRY_PAUSE_S = 0.05
_MAX_ROUNDS = 1000
_DNS_QNAME = "gateway.lab.test"
# Port -> (RPC program, version) that a "portmap" check looks up.
_RPC_PROGRAMS = {2049: (100003, 3), 20048: (100005, 3)}
_IPPROTO_TCP = 6


def _dns_query(qid: int) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(
        bytes([len(part)]) + part.encode("ascii") for part in _DNS_QNAME.split(".")
    )
    return header + labels + b"\0" + struct.pack("!HH", 1, 1)


def _check_dns_reply(reply: bytes, qid: int) -> None:
    rid, flags = struct.unpack("!HH", reply[:4])
    if rid != qid or flags & 0x000F != 0:
        raise OSError(f"bad DNS reply id={rid} rcode={flags & 0xF}")


def _dns_udp(address: str, port: int) -> None:
    qid = int.from_bytes(os.urandom(2), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(_TRY_TIMEOUT_S)
        sock.sendto(_dns_query(qid), (address, port))
        _check_dns_reply(sock.recv(4096), qid)


def _dns_tcp(address: str, port: int) -> None:
    qid = int.from_bytes(os.urandom(2), "big")
    query = _dns_query(qid)
    with socket.create_connection((address, port), timeout=_TRY_TIMEOUT_S) as sock:
        sock.sendall(struct.pack("!H", len(query)) + query)
        reply = sock.recv(4096)
    _check_dns_reply(reply[2:], qid)


def _ntp(address: str, port: int) -> None:
    # LI 0, version 4, mode 3 (client).
    packet = bytes([0x23]) + bytes(47)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(_TRY_TIMEOUT_S)
        sock.sendto(packet, (address, port))
        reply = sock.recv(512)
    if len(reply) < 48 or reply[0] & 0x07 != 4:
        raise OSError("not an NTP server reply")


def _tcp(address: str, port: int) -> None:
    with socket.create_connection((address, port), timeout=_TRY_TIMEOUT_S):
        pass


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    for _ in range(size):
        if len(data) >= size:
            break
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def _getport_call(xid: int, program: int, version: int) -> bytes:
    # CALL, RPC v2, portmapper (100000) v2, GETPORT (3), AUTH_NONE
    # credential and verifier, then program, version, protocol, port 0.
    body = struct.pack("!10I", xid, 0, 2, 100000, 2, 3, 0, 0, 0, 0)
    body += struct.pack("!4I", program, version, _IPPROTO_TCP, 0)
    return struct.pack("!I", 0x80000000 | len(body)) + body


def _portmap(address: str, port: int) -> None:
    program, version = _RPC_PROGRAMS[port]
    xid = int.from_bytes(os.urandom(4), "big")
    with socket.create_connection((address, 111), timeout=_TRY_TIMEOUT_S) as sock:
        sock.sendall(_getport_call(xid, program, version))
        mark = struct.unpack("!I", _recv_exactly(sock, 4))[0]
        reply = _recv_exactly(sock, mark & 0x7FFFFFFF)
    if len(reply) < 28:
        raise OSError("short portmapper reply")
    # xid, REPLY, MSG_ACCEPTED, verifier (flavor, empty body), SUCCESS,
    # port: 28 bytes.
    fields = struct.unpack("!7I", reply[:28])
    if fields[0] != xid or fields[1:3] != (1, 0) or fields[5] != 0:
        raise OSError(f"bad portmapper reply {fields[:6]}")
    if fields[6] != port:
        raise OSError(f"program {program} v{version} mapped to port {fields[6]}")


def _nbstat(address: str, port: int) -> None:
    qid = int.from_bytes(os.urandom(2), "big")
    # The wildcard name "*" in first-level encoding: "CK" then 30 "A"s.
    name = b"\x20CK" + b"A" * 30 + b"\x00"
    query = struct.pack("!6H", qid, 0, 1, 0, 0, 0) + name
    query += struct.pack("!HH", 0x21, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(_TRY_TIMEOUT_S)
        sock.sendto(query, (address, port))
        reply = sock.recv(2048)
    # Header (12), question name (34), type, class, TTL, length (10),
    # then the number of names.
    if len(reply) < 57 or struct.unpack("!H", reply[:2])[0] != qid:
        raise OSError("not a node status reply")
    if reply[56] == 0:
        raise OSError("node status reply without names")


_KINDS = {
    "tcp": _tcp,
    "dns-udp": _dns_udp,
    "dns-tcp": _dns_tcp,
    "ntp": _ntp,
    "portmap": _portmap,
    "nbstat": _nbstat,
}


def _run_once(checks: list[list[str]]) -> dict[str, str]:
    failed: dict[str, str] = {}
    for name, kind, address, port in checks:
        try:
            _KINDS[kind](address, int(port))
        except OSError as exc:
            failed[name] = f"{kind} {address}:{port}: {exc}"
    return failed


def main(argv: list[str]) -> int:
    deadline = time.monotonic() + float(argv[1])
    pending: list[list[str]] = json.loads(argv[2])
    failed = _run_once(pending)
    for _ in range(_MAX_ROUNDS):
        if not failed or time.monotonic() >= deadline:
            break
        time.sleep(_RETRY_PAUSE_S)
        pending = [c for c in pending if c[0] in failed]
        failed = _run_once(pending)
    print(json.dumps(failed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
