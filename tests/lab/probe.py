"""Readiness probe, run as a script inside the agent namespace.

Usage: ``python probe.py WAIT_SECONDS CHECKS_JSON`` where CHECKS_JSON is
a list of ``[name, kind, address, port]`` and kind is ``tcp`` (connect),
``dns-udp`` / ``dns-tcp`` (an A query that must answer NOERROR) or
``ntp`` (any server-mode reply).  Failed checks are retried until all
pass or WAIT_SECONDS is spent; the script prints a JSON object mapping
each still failing check to its last error, ``{}`` when all passed.

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


def _dns_query(qid: int) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(
        bytes([len(part)]) + part.encode("ascii")
        for part in _DNS_QNAME.split(".")
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
    with socket.create_connection((address, port),
                                  timeout=_TRY_TIMEOUT_S) as sock:
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


_KINDS = {"tcp": _tcp, "dns-udp": _dns_udp, "dns-tcp": _dns_tcp,
          "ntp": _ntp}


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
