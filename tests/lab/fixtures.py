"""pytest fixtures for the network lab: `lab` and `faults`.

Import both into a conftest.py (``from tests.lab.fixtures import
faults, lab``) or load this module as a plugin.

* `lab` (session scope) yields a started `Lab` and stops it at the end.
  Where namespaces cannot be made (not root, no CAP_SYS_ADMIN, missing
  daemons) it skips, except under CI=true, where it fails.
* `faults` (function scope) yields nothing and, after the test, clears
  the fault rules of the running lab.  It never starts a lab itself, so
  it is safe to make autouse.

Limits: all `lab` fixture instances of one process share one Lab (the
namespace names carry the pid, so two could not run at once): the lab
is started by the first user and stopped when the last one finishes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .errors import LabUnsupported
from .lab import Lab


class _Shared:
    """The one Lab of this process, counted by its fixture users."""

    def __init__(self) -> None:
        self.lab: Lab | None = None
        self.users = 0

    def acquire(self) -> Lab:
        if self.lab is None:
            lab = Lab()
            lab.start()
            self.lab = lab
        self.users += 1
        return self.lab

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0 and self.lab is not None:
            lab, self.lab = self.lab, None
            lab.stop()


_SHARED = _Shared()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """A started Lab for the whole session."""
    try:
        running = _SHARED.acquire()
    except LabUnsupported as exc:
        message = f"network lab unavailable on this machine: {exc}"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield running
    finally:
        _SHARED.release()


@pytest.fixture
def faults() -> Iterator[None]:
    """Clear every lab fault rule after the test."""
    yield
    if _SHARED.lab is not None and _SHARED.lab.running:
        _SHARED.lab.clear_faults()
