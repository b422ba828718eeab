"""Shared fixtures: the network-namespace lab and its faults."""

from collections.abc import Iterator

import pytest
import structlog

from tests.lab.fixtures import faults, lab, multihop, multihop_faults

__all__ = ["faults", "lab", "multihop", "multihop_faults"]


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Each test starts with structlog's defaults, whatever the last set."""
    yield
    structlog.reset_defaults()
