"""What to change, for a failure the probe itself did not explain.

Probes that understand their protocol give their own remedy (an
intercepted certificate, a clock that is off). For the plain transport
failures every probe shares, the fix depends on the rule's direction and
on the reason, and is worded here once.
"""

from __future__ import annotations

from probes.base import Reason
from rules import Rule

_TEMPLATES = {
    Reason.TIMEOUT: (
        "Allow {path} in every firewall and security group between them: "
        "the packets are dropped without an answer."
    ),
    Reason.PROHIBITED: (
        "A filter rejects {path}: allow it on the device that sent the "
        "ICMP error (see the evidence)."
    ),
    Reason.REFUSED: (
        "Nothing accepts {path}: check that the service runs and listens "
        "there, or remove the firewall rule that resets it."
    ),
    Reason.UNREACHABLE: (
        "Fix the route for {path}: the host or its network cannot be reached from here."
    ),
    Reason.DNS_FAILURE: "Make the gateway's DNS servers resolve {host}.",
    Reason.WRONG_PROTOCOL: (
        "Another service answers on {path}: point the rule at the right "
        "host or free the port."
    ),
    Reason.INTERNAL_ERROR: (
        "The probe itself broke: run again with --log-level debug and send "
        "the report and the log to the sgw-reach maintainers."
    ),
}
_OTHERWISE = "Check {path}; the detail says what was seen."


def remedy_for(rule: Rule, reason: Reason, host: str, port: int) -> str:
    """A sentence saying what to change so that this rule passes."""
    template = _TEMPLATES.get(reason, _OTHERWISE)
    return template.format(path=_path(rule, host, port), host=host)


def _path(rule: Rule, host: str, port: int) -> str:
    transport = rule.transport.upper()
    if rule.direction == "inbound":
        return f"{transport} {port} from the {rule.source}s to {host}"
    return f"{transport} {port} from the gateway to {host}"
