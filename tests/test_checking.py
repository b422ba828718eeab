"""A check's plan: typed host names resolved once and strictly for a
check, every round and leniently for a watch."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from agent import checking, inputs
from agent.cli import build_parser
from agent.errors import UsageError
from agent.plan import plan_checks
from probes.base import Reason, Status

ARGV = ["check", "--type", "volume", "--region", "us-east-1"]
HOSTS = ["--gateway", "gw.invalid", "--ntp-server", "127.0.0.1"]


def test_a_check_refuses_a_name_that_does_not_resolve() -> None:
    args = build_parser().parse_args([*ARGV, *HOSTS])
    with pytest.raises(UsageError, match=r"--gateway gw\.invalid: does not"):
        checking.prepare_check(args)


def test_a_watch_plan_takes_it_and_looks_again_each_round() -> None:
    args = build_parser().parse_args([*ARGV, *HOSTS])
    plan = checking.prepare_check(args, refresh_names=True)
    assert plan.refresh_names
    assert plan.options.addresses == {}
    assert plan.typed == {"gw.invalid": "--gateway", "127.0.0.1": "--ntp-server"}

    refreshed = asyncio.run(checking._refresh_addresses(plan.options, plan.typed))
    assert refreshed.addresses == {"127.0.0.1": "127.0.0.1"}


def test_names_are_resolved_together_within_one_timeout() -> None:
    hosts = {"a.invalid": "--gateway", "127.0.0.1": "--ntp-server"}
    addresses, failures = asyncio.run(inputs.resolve_hosts(hosts, 1.0))
    assert addresses == {"127.0.0.1": "127.0.0.1"}
    assert list(failures) == ["a.invalid"]


def test_a_resolver_that_hangs_costs_the_timeout_not_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()

    def hang(*_args: object, **_kwargs: object) -> list[object]:
        release.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure")

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    started = time.monotonic()
    try:
        with pytest.raises(UsageError, match="no answer in time"):
            inputs.resolve_all({"slow.test": "--gateway"}, 0.2)
        waited = time.monotonic() - started
    finally:
        release.set()
    # Far below the 30 s the lookup holds its thread.
    assert waited < 20


def test_no_controller_lookup_without_a_directory_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []

    async def find(domain: str, *_args: object) -> object:
        asked.append(domain)
        raise AssertionError("looked up controllers")

    monkeypatch.setattr(checking, "find_controllers", find)
    argv = [*ARGV, "--only", "iscsi.target", "--ad-domain", "corp.test"]
    plan = checking.prepare_check(build_parser().parse_args(argv))
    report = asyncio.run(checking.run_round(plan))
    assert asked == []
    assert [r["rule"] for r in report["results"]] == ["iscsi.target"]


def test_a_bucket_with_dots_is_not_probed_virtual_hosted() -> None:
    argv = [*ARGV, "--only", "common.aws-https"]
    argv += ["--bucket", "my.logs.bucket", "--bucket", "plain-bucket"]
    plan = checking.prepare_check(build_parser().parse_args(argv))
    checks = plan_checks(plan.rules, plan.options, plan.endpoints)
    by_host = {check.host: check for check in checks}
    dotted = by_host["my.logs.bucket.s3.us-east-1.amazonaws.com"]
    assert dotted.decided is not None
    assert (dotted.decided.status, dotted.decided.reason) == (
        Status.SKIP,
        Reason.NOT_APPLICABLE,
    )
    assert "path-style" in dotted.decided.detail
    assert by_host["plain-bucket.s3.us-east-1.amazonaws.com"].decided is None
    assert by_host["s3.us-east-1.amazonaws.com"].decided is None
