"""pytest fixtures for the network labs: `lab`, `faults`, `multihop` and
`multihop_faults`.

Import them into a conftest.py (``from tests.lab.fixtures import
faults, lab, multihop, multihop_faults``) or load this module as a
plugin.

* `lab` (session scope) yields a started `Lab` and stops it at the end;
  `multihop` does the same for the routed `MultiHopLab`.  Where
  namespaces cannot be made (not root, no CAP_SYS_ADMIN, missing
  programs) they skip, except under CI=true, where they fail.
* `faults` and `multihop_faults` (function scope) yield nothing and,
  after the test, clear the faults of their running lab (for the
  routed lab: rules, MTUs and learnt path MTUs).  Neither starts a lab
  itself, so both are safe to make autouse.

Limits: all `lab` fixture instances of one process share one Lab, and
all `multihop` instances one MultiHopLab (the namespace names carry the
pid, so two could not run at once): each is started by its first user
and stopped when its last one finishes.  The two labs use different
names and subnets and may run side by side.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

import pytest

from .errors import LabUnsupported
from .lab import Lab
from .multihop import MultiHopLab


class _Startable(Protocol):
    @property
    def running(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def clear_faults(self) -> None: ...


_L = TypeVar("_L", bound=_Startable)


class _Shared(Generic[_L]):
    """The one lab of a kind in this process, counted by its users."""

    def __init__(self, factory: Callable[[], _L]) -> None:
        self.factory = factory
        self.lab: _L | None = None
        self.users = 0

    def acquire(self) -> _L:
        if self.lab is None:
            lab = self.factory()
            lab.start()
            self.lab = lab
        self.users += 1
        return self.lab

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0 and self.lab is not None:
            lab, self.lab = self.lab, None
            lab.stop()

    def clear_faults(self) -> None:
        if self.lab is not None and self.lab.running:
            self.lab.clear_faults()


_SHARED: _Shared[Lab] = _Shared(Lab)
_SHARED_MULTIHOP: _Shared[MultiHopLab] = _Shared(MultiHopLab)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _acquire(shared: _Shared[_L], what: str) -> _L:
    """Start or share the lab; skip (fail under CI) where impossible."""
    try:
        return shared.acquire()
    except LabUnsupported as exc:
        message = f"{what} unavailable on this machine: {exc}"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """A started Lab for the whole session."""
    running = _acquire(_SHARED, "network lab")
    try:
        yield running
    finally:
        _SHARED.release()


@pytest.fixture
def faults() -> Iterator[None]:
    """Clear every lab fault rule after the test."""
    yield
    _SHARED.clear_faults()


@pytest.fixture(scope="session")
def multihop() -> Iterator[MultiHopLab]:
    """A started MultiHopLab (client, r1, r2, gateway) for the session."""
    running = _acquire(_SHARED_MULTIHOP, "multi-hop lab")
    try:
        yield running
    finally:
        _SHARED_MULTIHOP.release()


@pytest.fixture
def multihop_faults() -> Iterator[None]:
    """Clear the routed lab's faults and MTUs after the test."""
    yield
    _SHARED_MULTIHOP.clear_faults()
