"""The ``sgw-reach`` command line: ``rules`` prints the matrix, ``check``
proves it.

Every input is checked before any probe runs, and a bad one ends the
command with one line that names it and exit code 2: usage errors never
print a traceback. Exit codes: 0 when every required rule passed, 1 when
one failed, 2 for usage and input errors, 130 when interrupted (SIGINT),
143 when terminated (SIGTERM, as ``docker stop`` sends it). An interrupted
command writes no report: a report file given is left as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import sys
import threading
from collections.abc import Collection, Iterator, Sequence
from typing import Any, NoReturn

from agent import bundle, diagnosis, environ, inputs, show, trace, watch
from agent.checking import load_rules, prepare_check, run_round
from agent.errors import UsageError
from agent.junit import to_junit
from agent.logs import LEVELS, configure
from agent.report import (
    agent_version,
    to_json,
    write_atomic,
)
from agent.table import render_report, render_rules
from rules import GATEWAY_TYPES

PROG = "sgw-reach"
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived. A KeyboardInterrupt, so that asyncio stops the
    loop and cancels the probes for it as it does for SIGINT."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        raise UsageError(f"{command}: {message}" if command else message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Prove the network rules an AWS Storage Gateway needs.",
    )
    parser.add_argument("--version", action="version", version=_version())
    common = _Parser(add_help=False)
    common.add_argument(
        "--log-level",
        choices=LEVELS,
        help="log events at this level and above to standard error "
        "(default: info, or warning on a terminal)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_rules_command(commands, common)
    _add_check_command(commands, common)
    _add_watch_command(commands, common)
    trace.add_command(commands, common)
    bundle.add_command(commands, common)
    show.add_command(commands, common)
    return parser


def _version() -> str:
    return f"{PROG} {agent_version()}"


def _add_rules_command(commands: Any, common: argparse.ArgumentParser) -> None:
    rules = commands.add_parser("rules", help="print the port matrix", parents=[common])
    rules.add_argument("--type", choices=GATEWAY_TYPES, dest="gateway_type")
    rules.add_argument("--appliance", action="store_true")
    rules.add_argument("--format", choices=("table", "json"), default="table")
    rules.add_argument("--matrix", type=inputs.matrix_file, metavar="FILE")


def _add_check_command(commands: Any, common: argparse.ArgumentParser) -> None:
    check = commands.add_parser("check", help="probe every rule", parents=[common])
    add_check_arguments(check)


def _add_watch_command(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "watch",
        help="check on a schedule, keep the history, serve metrics",
        parents=[common],
    )
    add_check_arguments(parser)
    watch.add_arguments(parser)
    # Again, for the options only a watch has (SGW_REACH_EVERY,
    # SGW_REACH_LISTEN...); the check's take the same values twice.
    environ.apply_environment(parser, os.environ)


def add_check_arguments(
    parser: argparse.ArgumentParser,
    *,
    required: bool = True,
    omit: Collection[str] = (),
) -> None:
    """The options of a check, shared by every command that runs one;
    ``omit`` leaves out options the command defines its own way."""

    def add(name: str, **options: Any) -> None:
        if name not in omit:
            parser.add_argument(name, **options)

    add("--type", choices=GATEWAY_TYPES, dest="gateway_type", required=required)
    add("--region", required=required)
    add("--gateway", metavar="HOST", type=inputs.host)
    add("--appliance", action="store_true")
    add("--dns-server", metavar="ADDR", action="append", type=inputs.ip_address)
    add("--ntp-server", metavar="HOST", action="append", type=inputs.host)
    add("--support-host", metavar="HOST", action="append", type=inputs.host)
    add("--ad-domain", metavar="DOMAIN", type=inputs.domain)
    add("--ad-server", metavar="HOST", action="append", type=inputs.host)
    add("--proxy", metavar="HOST:PORT", type=inputs.host_port)
    add("--bucket", metavar="NAME", action="append", type=inputs.bucket)
    add("--ca-bundle", metavar="FILE", type=inputs.ca_bundle)
    add("--timeout", metavar="SECONDS", type=inputs.seconds, default=5.0)
    add("--max-skew", metavar="SECONDS", type=inputs.seconds, default=60.0)
    add("--concurrency", metavar="N", type=inputs.concurrency, default=64)
    add("--only", metavar="ID|PORT", action="append", default=[])
    add("--skip", metavar="ID|PORT", action="append", default=[])
    add("--format", choices=("table", "json", "junit"), default="table")
    add(
        "--output",
        metavar="FILE",
        type=inputs.output_file,
        help="write the JSON report to FILE (atomically), whatever --format",
    )
    add("--matrix", metavar="FILE", type=inputs.matrix_file)
    add(
        "--diagnose",
        action=argparse.BooleanOptionalAction,
        default=diagnosis.enabled_by_default(),
        help="run raw-packet path diagnostics for the rules that fail "
        f"(default from {diagnosis.ENV_SETTING}, else off)",
    )
    add("--diagnose-timeout", metavar="SECONDS", type=inputs.seconds, default=10.0)
    environ.apply_environment(parser, os.environ)


def main(argv: Sequence[str] | None = None) -> int:
    with _sigterm_interrupts():
        try:
            return _dispatch(argv)
        except UsageError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except Terminated:
            print(f"{PROG}: terminated", file=sys.stderr)
            return EXIT_TERMINATED
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises Terminated while the command runs. Without it, the
    agent as a container's process 1 would ignore ``docker stop``: the
    kernel gives process 1 no default action for SIGTERM. A watch sets
    its own handler, which finishes the round in flight."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(_signum: int, _frame: object) -> None:
    raise Terminated


def _dispatch(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    level = args.log_level or _default_level()
    configure(level)
    if args.command == "rules":
        return _rules(args)
    if args.command == "watch":
        return watch.run(args, lambda: _round_runner(args), level)
    if args.command == "trace":
        return trace.run(args)
    if args.command == "bundle":
        return bundle.run(args)
    if args.command == "report":
        return show.run(args)
    return _check(args)


def _round_runner(args: argparse.Namespace) -> watch.RoundRunner:
    plan = prepare_check(args, refresh_names=True)
    return functools.partial(run_round, plan)


def _default_level() -> str:
    return "warning" if sys.stderr.isatty() else "info"


def _rules(args: argparse.Namespace) -> int:
    rules, _endpoints = load_rules(args)
    if args.format == "json":
        rows = [inputs.rule_as_json(rule) for rule in rules]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        sys.stdout.write(render_rules(rules))
    return 0


def exit_code(report: dict[str, Any]) -> int:
    return EXIT_FAIL if report["summary"]["verdict"] == "fail" else 0


def _check(args: argparse.Namespace) -> int:
    plan = prepare_check(args)
    report = asyncio.run(run_round(plan))
    _emit(report, args)
    return exit_code(report)


def _emit(report: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the report, then write the file: a file that cannot be written
    still leaves the report on standard output."""
    if args.format == "json":
        sys.stdout.write(to_json(report))
    elif args.format == "junit":
        sys.stdout.write(to_junit(report))
    else:
        sys.stdout.write(render_report(report))
    sys.stdout.flush()
    if args.output is not None:
        try:
            write_atomic(args.output, to_json(report))
        except OSError as exc:
            raise UsageError(
                f"--output {args.output}: cannot write: {exc.strerror}"
            ) from exc
