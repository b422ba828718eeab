"""Start and stop the lab's daemons by the process ids recorded at start.

Each daemon runs in the foreground under ``ip netns exec``, which execs
the daemon itself, so the pid of the spawned child is the daemon's pid.
Before any signal the pid's /proc/PID/cmdline is checked to still hold
the daemon's unique marker (its config path inside the lab work
directory): a pid reused by an unrelated process is never signalled.

Limits: children a daemon forks (nginx workers, dnsmasq TCP helpers)
are not tracked here; the namespace cleanup in `netns` catches them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .netns import netns_exec_argv

_TERM_GRACE_S = 3.0
_KILL_GRACE_S = 1.0
_POLL_S = 0.02


def read_cmdline(pid: int) -> str:
    """The process's command line with NULs as spaces, '' if gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def tail(path: Path, lines: int = 20) -> str:
    """Last `lines` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log empty)"


@dataclass
class Daemon:
    """One recorded daemon process."""

    name: str
    argv: list[str]
    marker: str
    log: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, ns: str) -> None:
        env = None if self.env is None else {**os.environ, **self.env}
        with self.log.open("ab") as out:
            # A session of its own: a Ctrl-C in the terminal reaches the
            # test runner, which then stops the daemons in order.
            self.proc = subprocess.Popen(
                netns_exec_argv(ns, self.argv),
                stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )

    def exited(self) -> int | None:
        """Exit status if the process has ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def owns_pid(self) -> bool:
        """True while the recorded pid still runs this daemon."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        return self.marker in read_cmdline(self.proc.pid)

    def send(self, signum: int) -> None:
        if self.proc is not None and self.owns_pid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)

    def describe(self) -> str:
        """Name, state and log tail, for error messages."""
        status = self.exited()
        state = "running" if status is None else f"exited {status}"
        return f"--- {self.name} ({state}), log {self.log}:\n{tail(self.log)}"


def _wait_all(daemons: Sequence[Daemon], budget: float) -> list[Daemon]:
    """Reap what ends within `budget` seconds; return the rest."""
    deadline = time.monotonic() + budget
    alive = [d for d in daemons if d.exited() is None]
    for _ in range(int(budget / _POLL_S) + 1):
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(_POLL_S)
        alive = [d for d in alive if d.exited() is None]
    return alive


def stop_all(daemons: Sequence[Daemon]) -> list[str]:
    """SIGTERM every daemon, SIGKILL stragglers; names of any left."""
    for daemon in daemons:
        daemon.send(signal.SIGTERM)
    alive = _wait_all(daemons, _TERM_GRACE_S)
    for daemon in alive:
        daemon.send(signal.SIGKILL)
    alive = _wait_all(alive, _KILL_GRACE_S)
    return [d.name for d in alive]
