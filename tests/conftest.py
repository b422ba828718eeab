"""Shared fixtures: the network-namespace lab and its faults."""

from tests.lab.fixtures import faults, lab

__all__ = ["faults", "lab"]
