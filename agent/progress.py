"""A one-line progress indicator on a terminal, and nothing off one."""

from __future__ import annotations

from typing import TextIO

from agent.report import Result


class Progress:
    """Rewrites one line of standard error as results come in."""

    def __init__(self, stream: TextIO | None, total: int) -> None:
        self._stream = stream
        self._total = total

    @classmethod
    def for_terminal(cls, stream: TextIO, total: int) -> Progress:
        return cls(stream if stream.isatty() else None, total)

    def update(self, result: Result, done: int, total: int) -> None:
        if self._stream is None:
            return
        line = f"checking {done}/{total}: {result.rule.id} {result.status}"
        self._stream.write("\r\x1b[K" + line[:100])
        self._stream.flush()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
