"""Find a domain's controllers the way a joining gateway does: DNS SRV.

A gateway that joins Active Directory asks its DNS servers for
``_ldap._tcp.dc._msdcs.DOMAIN`` and, failing that, ``_ldap._tcp.DOMAIN``
(RFC 2782 records). When neither answers, the join fails before any port
matters, so that is reported as a DNS failure of the directory rules.

Limits: SRV targets are taken in priority order, then by weight; the
port in the record is not used (the matrix names the ports to prove).
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdtypes.IN.SRV
import dns.resolver

from probes.base import Deadline, Outcome, Reason, failed


@dataclass(frozen=True)
class Controllers:
    """What the lookup found: host names, or why there are none."""

    hosts: tuple[str, ...]
    failure: Outcome | None


def srv_names(domain: str) -> tuple[str, str]:
    return (f"_ldap._tcp.dc._msdcs.{domain}", f"_ldap._tcp.{domain}")


async def find_controllers(
    domain: str, resolvers: tuple[str, ...], deadline: Deadline
) -> Controllers:
    """Look up the SRV names in turn; the first that answers wins."""
    resolver = dns.asyncresolver.Resolver(configure=not resolvers)
    if resolvers:
        resolver.nameservers = list(resolvers)
    tried: dict[str, str] = {}
    for name in srv_names(domain):
        hosts, why = await _lookup(resolver, name, deadline)
        if hosts:
            return Controllers(hosts, None)
        tried[name] = why
    servers = ", ".join(str(s) for s in resolver.nameservers)
    return Controllers((), _not_found(domain, tried, servers))


async def _lookup(
    resolver: dns.asyncresolver.Resolver, name: str, deadline: Deadline
) -> tuple[tuple[str, ...], str]:
    try:
        answer = await resolver.resolve(
            name, "SRV", lifetime=max(deadline.remaining(), 0.01)
        )
    except dns.resolver.NXDOMAIN:
        return (), "NXDOMAIN"
    except dns.resolver.NoAnswer:
        return (), "no SRV record"
    except dns.resolver.NoNameservers:
        return (), "SERVFAIL or REFUSED"
    except dns.exception.Timeout:
        return (), "no answer in time"
    records = [r for r in answer if isinstance(r, dns.rdtypes.IN.SRV.SRV)]
    records.sort(key=lambda r: (r.priority, -r.weight))
    hosts = [str(r.target).rstrip(".") for r in records]
    return tuple(dict.fromkeys(h for h in hosts if h)), ""


def _not_found(domain: str, tried: dict[str, str], servers: str) -> Outcome:
    looked = "; ".join(f"{name}: {why}" for name, why in tried.items())
    return failed(
        Reason.DNS_FAILURE,
        f"no domain controller of {domain} found through DNS ({looked})",
        f"Make the gateway's DNS servers ({servers}) serve the SRV records "
        f"of {domain}: the gateway finds its domain controllers that way. "
        "Usually this means pointing the gateway at the domain's own DNS.",
        domain=domain,
        resolver=servers,
        srv=dict(tried),
    )
