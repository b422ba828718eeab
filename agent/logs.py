"""Logging setup: structlog to standard error, JSON lines off a terminal.

A person at a terminal reads coloured key=value lines; a collector gets
one JSON object per line. Results are INFO events, steps are DEBUG, and a
failed rule is never an ERROR: errors are for the agent's own faults.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")


def _factory(stream: TextIO | None) -> Callable[..., structlog.PrintLogger]:
    """Loggers on ``stream``, or on whatever sys.stderr is when each logger
    is made (tests and embedding programs swap it)."""
    if stream is not None:
        return structlog.PrintLoggerFactory(stream)
    return lambda *_args: structlog.PrintLogger(sys.stderr)


class FileSink:
    """A processor that also appends each event, as a JSON line, to a file
    that is rotated once it passes ``limit`` bytes (one old file kept).

    A watch keeps its recent log here for the support bundle. A file that
    cannot be written stops the copy, never the agent.
    """

    def __init__(self, path: Path, limit: int = 1 << 20) -> None:
        self.path = path
        self._limit = limit
        self._stream: TextIO | None = None

    def __call__(
        self, _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        try:
            self._write(json.dumps(event, default=str) + "\n")
        except OSError:
            self.close()
        return event

    def open(self) -> None:
        """Open the file now, so that one that cannot be written is told
        at the start (OSError), not found out later and dropped."""
        if self._stream is None:
            self._stream = self.path.open("a", encoding="utf-8")

    def _write(self, line: str) -> None:
        self.open()
        assert self._stream is not None
        self._stream.write(line)
        self._stream.flush()
        if self._stream.tell() > self._limit:
            self._stream.close()
            self._stream = None
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def configure(
    level: str, stream: TextIO | None = None, sink: FileSink | None = None
) -> None:
    """Send structlog events at ``level`` and above to ``stream``, and to
    ``sink`` when given."""
    out = stream or sys.stderr
    extra: list[structlog.typing.Processor] = [sink] if sink else []
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
            *extra,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=_factory(stream),
        cache_logger_on_first_use=False,
    )
