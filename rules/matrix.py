"""Load and check the port matrix: which rules a gateway type must pass.

The matrix is data (``matrix.toml`` beside this module, or a file the user
names). Loading checks every row against the schema and the probe registry,
and a bad row stops the load with the file, the rule and what is wrong, so a
typo in the matrix never turns into a silently skipped check.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

GATEWAY_TYPES = ("file-nfs", "file-smb", "file", "volume", "tape")
ROLES = frozenset(
    {
        "gateway",
        "aws",
        "dns",
        "ntp",
        "client",
        "browser",
        "initiator",
        "ad",
        "proxy",
    }
)
ENDPOINT_GROUPS = frozenset(
    {"control", "data", "api", "s3", "bucket", "cloudfront", "console", "support"}
)


class MatrixError(ValueError):
    """A matrix file that cannot be used; the message names where and why."""


class Direction(StrEnum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"


@dataclass(frozen=True)
class Rule:
    """One row of the port matrix."""

    id: str
    table_rule: int | None
    types: frozenset[str]
    appliance: bool
    source: str
    destination: str
    direction: Direction
    transport: str
    port: int
    probe: str
    required: bool
    purpose: str
    targets: tuple[str, ...]


@dataclass(frozen=True)
class Matrix:
    """All rules of one matrix file, in file order."""

    rules: tuple[Rule, ...]
    source: str

    def select(self, gateway_type: str, appliance: bool) -> list[Rule]:
        """The rules for a gateway type, with or without the appliance."""
        return [
            rule
            for rule in self.rules
            if gateway_type in rule.types and (appliance or not rule.appliance)
        ]


def default_matrix_path() -> Path:
    return Path(str(resources.files("rules").joinpath("matrix.toml")))


def load_matrix(
    path: Path | None,
    known_probes: Collection[str],
    transports: Mapping[str, Collection[str]] | None = None,
) -> Matrix:
    """Read a matrix file and check each rule, or raise :class:`MatrixError`.

    ``transports``, when given, says which transports each probe speaks:
    a rule that gives a probe another one is refused.
    """
    where = path or default_matrix_path()
    document = read_toml(where)
    rows = document.get("rule")
    if not isinstance(rows, list) or not rows:
        raise MatrixError(f"{where}: no [[rule]] tables")
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, row in enumerate(rows, start=1):
        rule = _parse_rule(row, index, where, known_probes, transports or {})
        if rule.id in seen:
            raise MatrixError(f"{where}: rule {rule.id}: duplicate id")
        seen.add(rule.id)
        rules.append(rule)
    return Matrix(tuple(rules), str(where))


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise MatrixError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError(f"{path}: not valid TOML: {exc}") from exc


_FIELDS: Mapping[str, type] = {
    "id": str,
    "table_rule": int,
    "types": list,
    "appliance": bool,
    "source": str,
    "destination": str,
    "direction": str,
    "transport": str,
    "port": int,
    "probe": str,
    "required": bool,
    "purpose": str,
    "targets": list,
}
_OPTIONAL = frozenset({"table_rule", "appliance", "targets"})


def _parse_rule(
    row: object,
    index: int,
    where: Path,
    known_probes: Collection[str],
    transports: Mapping[str, Collection[str]],
) -> Rule:
    if not isinstance(row, dict):
        raise MatrixError(f"{where}: rule #{index}: not a table")
    name = row.get("id") if isinstance(row.get("id"), str) else f"#{index}"

    def bad(what: str) -> MatrixError:
        return MatrixError(f"{where}: rule {name}: {what}")

    _check_fields(row, bad)
    if row["direction"] not in set(Direction):
        raise bad(f"direction must be inbound or outbound, not {row['direction']!r}")
    rule = _build_rule(row)
    problem = _inconsistency(rule, known_probes) or _mismatch(rule, transports)
    if problem:
        raise bad(problem)
    return rule


def _check_fields(row: dict[str, Any], bad: Callable[[str], MatrixError]) -> None:
    unknown = sorted(set(row) - set(_FIELDS))
    if unknown:
        raise bad(f"unknown field {unknown[0]!r}")
    for field, kind in _FIELDS.items():
        if field not in row:
            if field in _OPTIONAL:
                continue
            raise bad(f"missing field {field!r}")
        value = row[field]
        # bool is an int in Python; a port of `true` is still wrong.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise bad(f"{field} must be {kind.__name__}, not {value!r}")
    for field in ("types", "targets"):
        if not all(isinstance(item, str) for item in row.get(field, [])):
            raise bad(f"{field} must list strings")


def _build_rule(row: dict[str, Any]) -> Rule:
    return Rule(
        id=row["id"],
        table_rule=row.get("table_rule"),
        types=frozenset(row["types"]),
        appliance=row.get("appliance", False),
        source=row["source"],
        destination=row["destination"],
        direction=Direction(row["direction"]),
        transport=row["transport"],
        port=row["port"],
        probe=row["probe"],
        required=row["required"],
        purpose=row["purpose"],
        targets=tuple(row.get("targets", ())),
    )


def _inconsistency(rule: Rule, known_probes: Collection[str]) -> str:
    checks = (
        (not rule.id or " " in rule.id, "id must be a non-empty word"),
        (not 1 <= rule.port <= 65535, f"port {rule.port} out of range 1-65535"),
        (rule.transport not in ("tcp", "udp"), "transport must be tcp or udp"),
        (rule.probe not in known_probes, f"unknown probe {rule.probe!r}"),
        (
            rule.table_rule is not None and not 1 <= rule.table_rule <= 99,
            f"table_rule {rule.table_rule} out of range 1-99",
        ),
        (not rule.purpose.strip(), "purpose is empty"),
        (rule.source == rule.destination, "source and destination are the same"),
        (not rule.types, "types is empty"),
        (
            bool(rule.types - set(GATEWAY_TYPES)),
            _unknown(rule.types, GATEWAY_TYPES),
        ),
        (rule.source not in ROLES, f"unknown source role {rule.source!r}"),
        (rule.destination not in ROLES, f"unknown role {rule.destination!r}"),
        (
            bool(set(rule.targets) - ENDPOINT_GROUPS),
            _unknown(rule.targets, ENDPOINT_GROUPS),
        ),
        (
            rule.destination == "aws" and not rule.targets,
            "a rule toward aws needs targets",
        ),
        (
            rule.destination != "aws" and bool(rule.targets),
            "targets are only for rules toward aws",
        ),
    )
    for wrong, message in checks:
        if wrong:
            return message
    return ""


def _mismatch(rule: Rule, transports: Mapping[str, Collection[str]]) -> str:
    spoken = transports.get(rule.probe)
    if spoken is None or rule.transport in spoken:
        return ""
    return (
        f"probe {rule.probe!r} speaks {' and '.join(sorted(spoken))}, "
        f"not {rule.transport}"
    )


def _unknown(values: Collection[str], allowed: Collection[str]) -> str:
    extra = sorted(set(values) - set(allowed))
    if not extra:
        return ""
    return f"unknown {extra[0]!r}, expected one of {', '.join(sorted(allowed))}"
