"""What `services.build` produces: daemons, setup steps and checks.

`Builder` collects them while the service modules write config files
into the work directory.  Everything carries a stage: the lab starts a
stage's daemons, runs its steps, waits for its checks, then moves on.

Limits: steps run outside the namespaces, so they suit only tools that
reach their daemon through a file in the work directory (tgtadm and its
control socket).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .procs import Daemon


@dataclass(frozen=True)
class Check:
    """One readiness check, run from the agent namespace."""

    name: str
    kind: str
    address: str
    port: int
    daemon: str
    stage: int = 0

    def as_json(self) -> list[str | int]:
        return [self.name, self.kind, self.address, self.port]


@dataclass(frozen=True)
class Step:
    """One setup command for a running daemon.

    retry: the daemon may not accept commands yet, so failures are
    retried (bounded by the lab's start budget); otherwise a failure
    ends the start at once.
    """

    daemon: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    retry: bool = False
    stage: int = 0


class Builder:
    """Accumulates daemons, steps and checks while writing config files."""

    def __init__(self, workdir: Path, bins: dict[str, str]) -> None:
        self.workdir = workdir
        self.bins = bins
        self.daemons: list[Daemon] = []
        self.steps: list[Step] = []
        self.checks: list[Check] = []

    def conf(self, name: str, text: str) -> Path:
        path = self.workdir / "conf" / f"{name}.conf"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def dir(self, *parts: str) -> Path:
        """A directory of the work directory, made if missing."""
        path = self.workdir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, daemon: Daemon) -> None:
        self.daemons.append(daemon)

    def daemon(
        self, name: str, argv: list[str], conf: Path, env: dict[str, str] | None = None
    ) -> Daemon:
        """Add a stage-0 server-namespace daemon with the usual log."""
        log = self.log(name)
        made = Daemon(name, argv, str(conf), log, env)
        self.add(made)
        return made

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def stage_of(self, daemon: str) -> int:
        return next(d.stage for d in self.daemons if d.name == daemon)

    def step(
        self, daemon: str, argv: list[str], env: dict[str, str], *, retry: bool = False
    ) -> None:
        self.steps.append(Step(daemon, argv, env, retry, self.stage_of(daemon)))

    def check(self, daemon: str, kind: str, address: str, port: int) -> None:
        name = f"{daemon} {kind} {address}:{port}"
        self.checks.append(
            Check(name, kind, address, port, daemon, self.stage_of(daemon))
        )
