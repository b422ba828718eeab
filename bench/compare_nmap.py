"""Time `sgw-reach check` beside nmap on the lab, and print the ratios.

Both tools run in the lab's agent namespace against the same servers and
ports, one after the other, several rounds each; the median wall time of
each is reported, and the ratio sgw-reach / nmap (below 1: sgw-reach is
faster). Three peers:

- ``nmap -sT -sU``: connect scan of the same TCP ports and UDP scan of the
  same UDP ports; it tells open, closed and filtered, no protocol.
- ``nmap -sV``: the same with service detection, the closest nmap comes to
  proving each protocol.

Two scenarios: the healthy lab, and the lab with every server address
silently dropped (the worst case for any prober: everything waits for its
timeout). Both tools get the same per-probe timeout.

Run as root from the repository's root: ``python3 -m bench.compare_nmap``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from tests.lab import Lab
from tests.lab import topology as t

TCP_TARGETS = {
    t.TLS_GOOD: [443],
    t.SSH: [22],
    t.DNS: [53],
    t.GATEWAY: [80, 111, 139, 445, 2049, 3260, 20048],
    t.PROXY: [8080],
}
UDP_TARGETS = {
    t.DNS: [53],
    t.NTP_GOOD: [123],
    t.GATEWAY: [111, 139, 445, 2049, 20048],
}


def sgw_reach_args(lab: Lab, timeout: float) -> list[str]:
    return [
        sys.executable, "-m", "agent", "check",
        "--type", "file", "--region", "us-east-1", "--appliance",
        "--gateway", t.GATEWAY, "--dns-server", t.DNS,
        "--ntp-server", t.NTP_GOOD, "--support-host", t.SSH,
        "--proxy", f"{t.PROXY}:{t.PROXY_PORT}",
        "--ca-bundle", str(lab.ca_bundle), "--timeout", f"{timeout:g}",
        "--format", "json", "--log-level", "error",
    ]  # fmt: skip


def nmap_args(timeout: float, service_detection: bool) -> list[str]:
    tcp = sorted({p for ports in TCP_TARGETS.values() for p in ports})
    udp = sorted({p for ports in UDP_TARGETS.values() for p in ports})
    hosts = sorted(set(TCP_TARGETS) | set(UDP_TARGETS))
    ports = "T:" + ",".join(map(str, tcp)) + ",U:" + ",".join(map(str, udp))
    args = [
        "nmap", "-n", "-Pn", "-sT", "-sU", "-p", ports,
        "--max-rtt-timeout", f"{int(timeout * 1000)}ms",
        "--host-timeout", f"{int(timeout * 1000) * 10}ms",
        "--max-retries", "1", "-oX", "-",
    ]  # fmt: skip
    if service_detection:
        args += ["-sV", "--version-light"]
    return args + hosts


def timed(run: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def measure(lab: Lab, rounds: int, timeout: float) -> dict[str, float]:
    def ours() -> None:
        lab.exec_agent_ns(sgw_reach_args(lab, timeout), timeout=300)

    def nmap(service: bool) -> Callable[[], None]:
        return lambda: lab.exec_agent_ns(nmap_args(timeout, service), timeout=600)

    return {
        "sgw-reach": timed(ours, rounds),
        "nmap -sT -sU": timed(nmap(False), rounds),
        "nmap -sV": timed(nmap(True), rounds),
    }


def report(scenario: str, times: dict[str, float]) -> None:
    ours = times["sgw-reach"]
    print(f"{scenario}: sgw-reach {ours:.2f} s (median)")
    for peer, seconds in times.items():
        if peer != "sgw-reach":
            print(f"  vs {peer:<14} {seconds:7.2f} s  ratio {ours / seconds:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()
    with Lab() as lab:
        report("healthy lab", measure(lab, args.rounds, args.timeout))
        for address in t.SERVER_ADDRS:
            lab.fault("drop", address)
        report("all dropped", measure(lab, args.rounds, args.timeout))


if __name__ == "__main__":
    main()
