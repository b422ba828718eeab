"""Exceptions raised by the network test lab."""

from __future__ import annotations


class LabError(RuntimeError):
    """The lab could not be set up or driven; the message says why."""


class LabUnsupported(LabError):
    """This machine cannot host the lab (not root, no namespaces, ...)."""
