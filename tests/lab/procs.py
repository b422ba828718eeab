"""Start and stop the lab's daemons by the process ids recorded at start.

Each daemon runs in the foreground under ``ip netns exec``, which execs
the daemon itself, so the pid of the spawned child is the daemon's pid.
Before any signal the pid's /proc/PID/cmdline (or, for daemons whose
arguments name no lab file, its environment) is checked to still hold
the daemon's unique marker, a path inside the lab work directory: a pid
reused by an unrelated process is never signalled.

A daemon may get private bind mounts: work directory paths mounted over
host paths (such as /run or /var/log/samba) it writes without asking.
``ip netns exec`` already gives each daemon a mount namespace of its own
whose mounts do not reach the host, so a shell mounts them and then
execs the daemon, keeping the pid.

Daemons stop stage by stage, latest stage first (nfs-ganesha before the
rpcbind it registered with); a daemon's stop commands (tgtadm for tgtd,
which ignores SIGTERM) run before its SIGTERM.

Limits: children a daemon forks (nginx workers, dnsmasq TCP helpers,
samba-dcerpcd) are not tracked here; the namespace cleanup in `netns`
catches them.  Stop commands get 5 s each and their failures are
ignored: SIGKILL follows anyway.
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
_STOP_CMD_TIMEOUT_S = 5.0
MARKER_ENV = "SGWR_LAB_DAEMON"
# Pairs of "SOURCE TARGET" arguments up to "--", then the daemon's argv.
_BIND_THEN_EXEC = (
    'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 125; '
    'shift 2; done; shift; exec "$@"'
)


def read_cmdline(pid: int, what: str = "cmdline") -> str:
    """/proc/PID/cmdline (or `what`: "environ") with NULs as spaces.

    '' if the process is gone.
    """
    try:
        raw = Path(f"/proc/{pid}/{what}").read_bytes()
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
    """One recorded daemon process.

    host: "server" or "impostor", the namespace it runs in; stage: start
    order (a stage starts once the one before answers); binds: (work
    directory path, host path) mounts private to the daemon;
    stop_cmds: commands run outside the namespaces before its SIGTERM.
    """

    name: str
    argv: list[str]
    marker: str
    log: Path
    env: dict[str, str] | None = None
    host: str = "server"
    stage: int = 0
    binds: tuple[tuple[str, str], ...] = ()
    stop_cmds: tuple[tuple[str, ...], ...] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def full_env(self) -> dict[str, str]:
        """Environment of the daemon and of its stop commands."""
        return {**os.environ, **(self.env or {}), MARKER_ENV: self.marker}

    def command(self) -> list[str]:
        """argv to run inside the namespace, with any bind mounts."""
        if not self.binds:
            return self.argv
        pairs = [path for bind in self.binds for path in bind]
        return ["sh", "-c", _BIND_THEN_EXEC, "sh", *pairs, "--", *self.argv]

    def start(self, ns: str) -> None:
        with self.log.open("ab") as out:
            # A session of its own: a Ctrl-C in the terminal reaches the
            # test runner, which then stops the daemons in order.  It
            # also keeps any daemon that signals its whole process group
            # (smbd, nmbd) away from the runner.
            self.proc = subprocess.Popen(
                netns_exec_argv(ns, self.command()),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.full_env(),
                start_new_session=True,
            )

    def exited(self) -> int | None:
        """Exit status if the process has ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def owns_pid(self) -> bool:
        """True while the recorded pid still runs this daemon."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        pid = self.proc.pid
        return self.marker in read_cmdline(pid) or self.marker in read_cmdline(
            pid, "environ"
        )

    def send(self, signum: int) -> None:
        if self.proc is not None and self.owns_pid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)

    def run_stop_cmds(self) -> None:
        """Run the stop commands while the daemon is still ours."""
        for argv in self.stop_cmds:
            if not self.owns_pid():
                return
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    argv,
                    env=self.full_env(),
                    capture_output=True,
                    timeout=_STOP_CMD_TIMEOUT_S,
                    check=False,
                )

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


def _stop_group(daemons: Sequence[Daemon]) -> list[str]:
    for daemon in daemons:
        daemon.run_stop_cmds()
    for daemon in daemons:
        daemon.send(signal.SIGTERM)
    alive = _wait_all(daemons, _TERM_GRACE_S)
    for daemon in alive:
        daemon.send(signal.SIGKILL)
    alive = _wait_all(alive, _KILL_GRACE_S)
    return [d.name for d in alive]


def stop_all(daemons: Sequence[Daemon]) -> list[str]:
    """Stop every daemon, latest stage first; names of any left.

    Per stage: stop commands, SIGTERM, then SIGKILL for stragglers.
    """
    left: list[str] = []
    for stage in sorted({d.stage for d in daemons}, reverse=True):
        left += _stop_group([d for d in daemons if d.stage == stage])
    return left
