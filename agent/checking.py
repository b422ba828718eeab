"""A check as a plan and rounds: validate the inputs once, then run the
probes, the diagnostics and the report as often as wanted.

``prepare_check`` turns parsed options into a ``CheckPlan`` or raises
``UsageError`` naming the input; ``run_round`` runs one whole check and
returns its report. ``check`` runs one round, ``watch`` many.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from agent import diagnosis, inputs
from agent.discovery import find_controllers
from agent.errors import UsageError
from agent.plan import Options, SelectionError, plan_checks, select_rules
from agent.progress import Progress
from agent.report import Result, Run, build_report, now
from agent.runner import run_checks
from probes.base import Deadline, ProbeSettings
from probes.registry import PROBES, TRANSPORTS
from rules import Endpoints, Rule, load_endpoints, load_matrix

_log = structlog.get_logger("sgw_reach.check")


def load_rules(args: argparse.Namespace) -> tuple[list[Rule], Endpoints]:
    try:
        matrix = load_matrix(args.matrix, PROBES.keys(), TRANSPORTS)
        endpoints = load_endpoints()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.gateway_type is None:
        return list(matrix.rules), endpoints
    return matrix.select(args.gateway_type, args.appliance), endpoints


@dataclass(frozen=True)
class CheckPlan:
    """A validated check, ready to run as many rounds as wanted."""

    rules: list[Rule]
    options: Options
    endpoints: Endpoints
    diagnose: bool
    diagnose_timeout: float
    # The host names typed, with their flags, looked up again at the start
    # of each round when ``refresh_names`` is set.
    typed: dict[str, str] = field(default_factory=dict)
    refresh_names: bool = False


def prepare_check(
    args: argparse.Namespace, *, refresh_names: bool = False
) -> CheckPlan:
    """Validate every input of a check, or raise UsageError.

    A typed host name that does not resolve is a usage error, unless
    ``refresh_names``: then it is looked up again each round, so that a
    watch started while DNS is down goes on, and follows changes of the
    names' addresses; a name that still fails is left to the probes,
    which report it as a DNS failure.
    """
    rules, endpoints = load_rules(args)
    typed = inputs.typed_hosts(args)
    options = _options(args, endpoints, typed, strict=not refresh_names)
    try:
        selected = select_rules(rules, options.only, options.skip)
    except SelectionError as exc:
        raise UsageError(str(exc)) from exc
    return CheckPlan(
        selected,
        options,
        endpoints,
        args.diagnose,
        args.diagnose_timeout,
        typed,
        refresh_names,
    )


async def run_round(
    plan: CheckPlan, on_result: Callable[[Result], None] | None = None
) -> dict[str, Any]:
    """One whole check: probes, diagnostics if asked, the report.

    ``on_result`` sees each result as it comes, so a caller that cancels
    the round still has what was measured.
    """
    options = plan.options
    started = now()
    if plan.refresh_names:
        options = await _refresh_addresses(options, plan.typed)
    results = await _run(plan.rules, options, plan.endpoints, on_result)
    findings = None
    if plan.diagnose:
        results, findings = await diagnosis.diagnose_failures(
            results, plan.diagnose_timeout
        )
    run = Run(
        options.gateway_type,
        options.region,
        options.gateway,
        options.appliance,
        started,
        now(),
    )
    return build_report(run, results, findings)


async def _run(
    rules: list[Rule],
    options: Options,
    endpoints: Endpoints,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Find the domain controllers if asked and a rule selected needs
    them, then run every check."""
    wants_ad = any(rule.destination == "ad" for rule in rules)
    if wants_ad and options.ad_domain and not options.ad_servers:
        found = await find_controllers(
            options.ad_domain, options.dns_servers, Deadline.after(options.timeout)
        )
        options = replace(options, ad_servers=found.hosts, ad_failure=found.failure)
    checks = plan_checks(rules, options, endpoints)
    settings = _settings(options, endpoints)
    progress = Progress.for_terminal(sys.stderr, len(checks))

    def seen(result: Result, done: int, total: int) -> None:
        progress.update(result, done, total)
        if on_result is not None:
            on_result(result)

    try:
        return await run_checks(checks, settings, options, PROBES, seen)
    finally:
        progress.close()


async def _refresh_addresses(options: Options, typed: dict[str, str]) -> Options:
    addresses, failures = await inputs.resolve_hosts(typed, options.timeout)
    for name, why in failures.items():
        _log.warning("host.unresolved", host=name, flag=typed[name], why=why)
    return replace(options, addresses=addresses)


def _options(
    args: argparse.Namespace,
    endpoints: Endpoints,
    typed: dict[str, str],
    *,
    strict: bool,
) -> Options:
    try:
        endpoints.check_region(args.region)
    except ValueError as exc:
        raise UsageError(f"--region: {exc}") from exc
    addresses = inputs.resolve_all(typed, args.timeout) if strict else {}
    return Options(
        gateway_type=args.gateway_type,
        region=args.region,
        appliance=args.appliance,
        gateway=args.gateway,
        dns_servers=tuple(args.dns_server or inputs.system_resolvers()),
        ntp_servers=tuple(args.ntp_server or endpoints.ntp_servers),
        support_hosts=tuple(args.support_host or endpoints.support_hosts),
        ad_servers=tuple(args.ad_server or ()),
        ad_domain=args.ad_domain,
        proxy=args.proxy,
        buckets=tuple(args.bucket or ()),
        ca_bundle=args.ca_bundle,
        timeout=args.timeout,
        max_skew=args.max_skew,
        concurrency=args.concurrency,
        only=tuple(args.only),
        skip=tuple(args.skip),
        addresses=addresses,
    )


def _settings(options: Options, endpoints: Endpoints) -> ProbeSettings:
    names: list[str] = []
    for group in ("control", "data", "api", "s3", "bucket", "cloudfront"):
        names += endpoints.names(group, options.region, options.buckets)
    return ProbeSettings(
        region=options.region,
        resolvers=options.dns_servers,
        dns_names=tuple(dict.fromkeys(names)),
        ca_bundle=options.ca_bundle,
        max_skew=options.max_skew,
        connect_host=endpoints.activation_host(options.region),
        connect_port=443,
    )
