"""Logging setup: structlog to standard error, JSON lines off a terminal.

A person at a terminal reads coloured key=value lines; a collector gets
one JSON object per line. Results are INFO events, steps are DEBUG, and a
failed rule is never an ERROR: errors are for the agent's own faults.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")


def _factory(stream: TextIO | None) -> Callable[..., structlog.PrintLogger]:
    """Loggers on ``stream``, or on whatever sys.stderr is when each logger
    is made (tests and embedding programs swap it)."""
    if stream is not None:
        return structlog.PrintLoggerFactory(stream)
    return lambda *_args: structlog.PrintLogger(sys.stderr)


def configure(level: str, stream: TextIO | None = None) -> None:
    """Send structlog events at ``level`` and above to ``stream``."""
    out = stream or sys.stderr
    renderer: structlog.typing.Processor
    if out.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=_factory(stream),
        cache_logger_on_first_use=False,
    )
