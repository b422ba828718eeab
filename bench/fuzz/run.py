"""Coverage-guided fuzzing of every codec parser with atheris.

    python3 -m bench.fuzz.run [RUNS] [--only NAME] [--max-time SECONDS]

Each harness of :data:`bench.fuzz.harness.TARGETS` is fuzzed in its own process (atheris
drives libFuzzer, which owns its process) for ``RUNS`` inputs, 200000
by default, or until ``--max-time`` seconds, 90 by default. An input
passes when the parser returns a value or raises its codec's own error;
anything else escaping is a crash, and libFuzzer keeps the input that
caused it in ``bench/fuzz/crashes/``. At the end a table gives the
inputs run per parser, the time taken and the crashes found. Exit code
0 when no parser crashed.

The probes' modules are instrumented for coverage; the libraries under
them (dnspython, cryptography, ntplib, scapy) are not, since their own
fuzzing is theirs. Not part of the test suite: it needs atheris
(``pip install atheris``) and takes minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CRASHES = HERE / "crashes"
# A parser that takes longer than this on one input has hung.
PER_INPUT_TIMEOUT = 10
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_STATS = re.compile(r"#(\d+)\s")


NAMES = (
    "ntp",
    "ssh",
    "tls-certificate",
    "http+activation",
    "iscsi_pdu",
    "smb",
    "netbios",
    "oncrpc",
    "ber",
    "ldap",
    "icmp",
    "dns",
    "pathdiag",
)


def fuzz_one(name: str, runs: int, max_time: int) -> None:
    """In a child process: fuzz one target under libFuzzer."""
    import atheris  # noqa: PLC0415 - only the fuzzing child needs it

    with atheris.instrument_imports(include=["probes"]):
        from bench.fuzz import harness  # noqa: PLC0415 - instrumented here

    target = harness.TARGETS[name]

    def one_input(data: bytes) -> None:
        with contextlib.suppress(*target.errors):
            target.feed(data)

    CRASHES.mkdir(exist_ok=True)
    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={runs}",
            f"-max_total_time={max_time}",
            f"-max_len={harness.MAX_LEN}",
            f"-timeout={PER_INPUT_TIMEOUT}",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
            f"-artifact_prefix={CRASHES}/{name}-",
        ],
        one_input,
    )
    atheris.Fuzz()


@dataclass(frozen=True)
class Result:
    name: str
    runs: int
    seconds: float
    crashed: bool
    note: str


def run_child(name: str, runs: int, max_time: int) -> Result:
    """Fuzz one target in a child process and read its counts."""
    started = time.monotonic()
    child = subprocess.run(
        [
            *(sys.executable, "-m", "bench.fuzz.run", "--child", name, str(runs)),
            *("--max-time", str(max_time)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=max_time + 120,
        check=False,
    )
    seconds = time.monotonic() - started
    log = child.stderr
    done = _DONE.search(log)
    counted = [int(n) for n in _STATS.findall(log)]
    executed = int(done.group(1)) if done else max(counted, default=0)
    crashed = child.returncode != 0
    note = ""
    if crashed:
        lines = [line for line in log.splitlines() if line.strip()]
        note = " | ".join(lines[-3:])[:200]
    return Result(name, executed, seconds, crashed, note)


def table(results: list[Result]) -> str:
    lines = [
        f"{'parser':<16} {'inputs run':>11} {'seconds':>8} {'crashes':>8}",
        "-" * 46,
    ]
    for result in results:
        lines.append(
            f"{result.name:<16} {result.runs:>11} {result.seconds:>8.0f} "
            f"{int(result.crashed):>8}"
        )
        if result.note:
            lines.append(f"  {result.note}")
    total = sum(r.runs for r in results)
    lines.append("-" * 46)
    lines.append(
        f"{'total':<16} {total:>11} {sum(r.seconds for r in results):>8.0f} "
        f"{sum(r.crashed for r in results):>8}"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.fuzz.run", description=__doc__)
    parser.add_argument("runs", nargs="?", type=int, default=200_000)
    parser.add_argument("--only", action="append", choices=NAMES)
    parser.add_argument("--max-time", type=int, default=90)
    parser.add_argument("--child", choices=NAMES, help=argparse.SUPPRESS)
    args, _rest = parser.parse_known_args(argv)
    if args.child:
        fuzz_one(args.child, args.runs, args.max_time)
        return 0
    results = []
    for name in args.only or NAMES:
        result = run_child(name, args.runs, args.max_time)
        print(
            f"{name}: {result.runs} inputs, {result.seconds:.0f} s, "
            f"{'CRASH' if result.crashed else 'no crash'}",
            flush=True,
        )
        results.append(result)
    sys.stdout.write(table(results))
    return 1 if any(r.crashed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
