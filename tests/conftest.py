"""Shared fixtures: the network-namespace lab and its faults, and name
lookups kept on this machine."""

import functools
import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent import checking, watch
from agent.report import build_report
from tests import reports
from tests.lab.fixtures import faults, lab, multihop, multihop_faults
from tests.schema import validate_report

__all__ = ["faults", "lab", "multihop", "multihop_faults"]


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Each test starts with structlog's defaults, whatever the last set."""
    yield
    structlog.reset_defaults()


_real_getaddrinfo = socket.getaddrinfo


def _local_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    """getaddrinfo for address literals and this machine's own names;
    any other name fails at once as unknown, so that a test of a name
    that does not resolve asks no name server off this machine."""
    name = host.decode() if isinstance(host, bytes) else host
    if name is None or _is_local(str(name)):
        return _real_getaddrinfo(host, *args, **kwargs)
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def _is_local(name: str) -> bool:
    try:
        ipaddress.ip_address(name.partition("%")[0])
    except ValueError:
        return name.lower().rstrip(".") in _hosts_file_names()
    return True


@functools.cache
def _hosts_file_names() -> frozenset[str]:
    try:
        text = Path("/etc/hosts").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    names = {"localhost"}
    for line in text.splitlines():
        names.update(word.lower() for word in line.split("#")[0].split()[1:])
    return frozenset(names)


@pytest.fixture(autouse=True)
def _no_lookups_off_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _local_getaddrinfo)


@pytest.fixture(autouse=True)
def _every_report_built_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every report built in a test's own process is checked against the
    shipped JSON Schema as it is made; tests of a command run as another
    process validate what it printed themselves."""

    def validating(*args: Any, **kwargs: Any) -> dict[str, Any]:
        report = build_report(*args, **kwargs)
        validate_report(report)
        return report

    for module in (checking, watch, reports):
        monkeypatch.setattr(module, "build_report", validating)
