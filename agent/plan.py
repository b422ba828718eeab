"""Turn the matrix and the user's options into the list of checks to run.

A rule becomes one check per target: one per endpoint name for rules toward
AWS, one per resolver for DNS, one per NTP server, one for the gateway, the
proxy or each directory server. A rule whose target the user did not give
(an inbound rule without ``--gateway``) becomes a check that is already
decided: skipped, with the reason and the option that would enable it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from probes.base import Outcome, Reason, Status
from rules import Endpoints, Rule


class SelectionError(ValueError):
    """An --only or --skip selector that matches no rule."""


@dataclass(frozen=True)
class Options:
    """Everything a check run needs to know, already validated."""

    gateway_type: str
    region: str
    appliance: bool = False
    gateway: str | None = None
    dns_servers: tuple[str, ...] = ()
    ntp_servers: tuple[str, ...] = ()
    support_hosts: tuple[str, ...] = ()
    ad_servers: tuple[str, ...] = ()
    ad_domain: str | None = None
    # Set when --ad-domain found no controller: the directory rules fail
    # with this outcome instead of being probed.
    ad_failure: Outcome | None = None
    proxy: tuple[str, int] | None = None
    buckets: tuple[str, ...] = ()
    ca_bundle: Path | None = None
    timeout: float = 5.0
    max_skew: float = 60.0
    concurrency: int = 64
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    # Host names the user typed, already resolved by the agent.
    addresses: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """One probe to run: a rule, a target, and a verdict if already known."""

    rule: Rule
    host: str
    port: int
    address: str | None = None
    decided: Outcome | None = None


def select_rules(
    rules: list[Rule], only: tuple[str, ...], skip: tuple[str, ...]
) -> list[Rule]:
    """Keep the rules ``only`` names (all when empty), minus ``skip``."""
    for selector in (*only, *skip):
        if not any(_matches(rule, selector) for rule in rules):
            raise SelectionError(f"{selector!r} matches no rule of this gateway type")
    kept = [r for r in rules if not only or any(_matches(r, s) for s in only)]
    return [r for r in kept if not any(_matches(r, s) for s in skip)]


def _matches(rule: Rule, selector: str) -> bool:
    if selector.isdigit():
        return rule.port == int(selector)
    return fnmatch.fnmatchcase(rule.id, selector)


def plan_checks(
    rules: list[Rule], options: Options, endpoints: Endpoints
) -> list[Check]:
    """One check per rule and target, in matrix order."""
    checks: list[Check] = []
    for rule in rules:
        checks.extend(_checks_for(rule, options, endpoints))
    return checks


def _checks_for(rule: Rule, options: Options, endpoints: Endpoints) -> list[Check]:
    hosts, missing = _targets(rule, options, endpoints)
    if not hosts and rule.destination == "ad" and options.ad_failure:
        host = options.ad_domain or ""
        return [Check(rule, host, rule.port, None, options.ad_failure)]
    if not hosts:
        return [_skipped(rule, missing)]
    port = rule.port
    if rule.destination == "proxy" and options.proxy is not None:
        port = options.proxy[1]
    path_style = _path_style_hosts(rule, options, endpoints)
    return [
        Check(rule, host, port, options.addresses.get(host), path_style.get(host))
        for host in hosts
    ]


def _path_style_hosts(
    rule: Rule, options: Options, endpoints: Endpoints
) -> dict[str, Outcome]:
    """The virtual-hosted names of buckets with dots, which TLS cannot
    verify: S3's certificate is for ``*.s3.REGION...``, and a wildcard
    covers one label only. Clients reach such buckets path-style, through
    s3.REGION, which a target of the same rule proves."""
    if rule.probe != "tls" or "bucket" not in rule.targets:
        return {}
    dotted = tuple(bucket for bucket in options.buckets if "." in bucket)
    why = (
        "skipped: a bucket name with dots is reached path-style, through "
        f"s3.{options.region}, since S3's wildcard certificate cannot match it"
    )
    skipped = Outcome(Status.SKIP, Reason.NOT_APPLICABLE, why)
    return dict.fromkeys(endpoints.names("bucket", options.region, dotted), skipped)


def _targets(
    rule: Rule, options: Options, endpoints: Endpoints
) -> tuple[tuple[str, ...], str]:
    """The hosts a rule's probe goes to, or why there are none."""
    role = rule.destination
    if role == "aws":
        names: list[str] = []
        for group in rule.targets:
            if group == "support":
                names.extend(options.support_hosts)
            else:
                names.extend(endpoints.names(group, options.region, options.buckets))
        return tuple(dict.fromkeys(names)), "no endpoint names (give --bucket)"
    by_role: dict[str, tuple[tuple[str, ...], str]] = {
        "dns": (options.dns_servers, "no DNS server: give --dns-server"),
        "ntp": (options.ntp_servers, "no NTP server: give --ntp-server"),
        "gateway": (
            (options.gateway,) if options.gateway else (),
            "needs the gateway's address: give --gateway HOST",
        ),
        "proxy": (
            (options.proxy[0],) if options.proxy else (),
            "needs the appliance's proxy: give --proxy HOST:PORT",
        ),
        "ad": (
            options.ad_servers,
            "needs a domain controller: give --ad-domain DOMAIN or --ad-server HOST",
        ),
    }
    return by_role.get(role, ((), f"no target for role {role}"))


def _skipped(rule: Rule, why: str) -> Check:
    outcome = Outcome(Status.SKIP, Reason.NOT_CONFIGURED, f"skipped: {why}")
    return Check(rule, "", rule.port, None, outcome)
