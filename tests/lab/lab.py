"""The `Lab` object: build, run, fault and tear down the network lab.

A Lab owns three network namespaces (agent, servers, impostor) on one
bridged segment, a private work directory (certificates, configs,
daemon logs and state) and the daemons it started.  See `topology` for
who listens where.

Start runs in stages: a stage's daemons start, its setup steps run (the
tgtadm commands that build the iSCSI targets), its readiness checks
pass, then the next stage starts (nfs-ganesha needs a running rpcbind).

Limits: one running Lab per process (namespace names carry the pid);
needs root; traffic never leaves the three namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import netns
from .certs import make_pki
from .errors import LabError, LabUnsupported
from .procs import Daemon, stop_all
from .services import Check, Step, build, find_binaries

REPO_ROOT = Path(__file__).resolve().parents[2]
_PROBE = Path(__file__).resolve().with_name("probe.py")
_START_BUDGET_S = 10.0
_PROBE_ROUND_S = 0.5
_MAX_PROBE_ROUNDS = 1000
_STEP_TIMEOUT_S = 10.0
_STEP_RETRY_PAUSE_S = 0.02
_MAX_STEP_TRIES = 500


def _remove_stale_workdirs(stale_ns: str) -> None:
    # Only work directories of a run that died without tearing down
    # (its namespaces were still there); a kept directory of a run that
    # stopped cleanly stays for whoever asked to keep it.
    owner = stale_ns.removeprefix("sgwr")[:-1]
    pattern = f"sgwr-lab-{owner}-*"
    for path in Path(tempfile.gettempdir()).glob(pattern):
        shutil.rmtree(path, ignore_errors=True)


class Lab:
    """Agent and server namespaces with every lab service running."""

    def __init__(
        self, *, keep_workdir: bool = False, start_budget: float = _START_BUDGET_S
    ) -> None:
        self.pid = os.getpid()
        self._names = netns.names_for(self.pid)
        self.agent_ns: str = self._names.agent
        self.server_ns: str = self._names.server
        self.impostor_ns: str = self._names.impostor
        self.keep_workdir = keep_workdir
        self.start_budget = start_budget
        self._workdir: Path | None = None
        self._ca_bundle: Path | None = None
        self._inspect_ca: Path | None = None
        self._daemons: list[Daemon] = []
        self._created_ns = False
        self._running = False

    # -- paths known once started -------------------------------------

    @property
    def workdir(self) -> Path:
        return self._need(self._workdir)

    @property
    def ca_bundle(self) -> Path:
        """PEM of the trusted lab root CA (the good CA only)."""
        return self._need(self._ca_bundle)

    @property
    def inspect_ca(self) -> Path:
        """PEM of the "Lab Inspecting Firewall CA"."""
        return self._need(self._inspect_ca)

    @property
    def running(self) -> bool:
        return self._running

    def log(self, daemon: str) -> Path:
        """Log file of the daemon called `daemon` (e.g. "nginx")."""
        return self.workdir / "logs" / f"{daemon}.log"

    @staticmethod
    def _need(value: Path | None) -> Path:
        if value is None:
            raise LabError("the lab has not been started")
        return value

    # -- lifecycle ------------------------------------------------------

    def start(self) -> None:
        """Bring everything up and wait until every service answers."""
        if self._running:
            raise LabError("the lab is already running")
        bins = self._preflight()
        try:
            self._start(bins)
        except BaseException as exc:
            # Keep configs and logs for a post-mortem, unless the machine
            # simply cannot host a lab: then they hold nothing of use.
            unsupported = isinstance(exc, LabUnsupported)
            left = self._teardown(keep_workdir=not unsupported)
            if isinstance(exc, LabError) and self._workdir is not None:
                note = f"(lab files kept in {self._workdir})"
                if left:
                    note += f"\n(daemons that did not stop: {left})"
                raise type(exc)(f"{exc}\n{note}") from exc
            raise
        self._running = True

    def _preflight(self) -> dict[str, str]:
        if os.geteuid() != 0:
            raise LabUnsupported("network namespaces need root")
        bins = find_binaries()
        for ns in netns.remove_stale(self.pid):
            _remove_stale_workdirs(ns)
        existing = set(netns.list_namespaces())
        if set(self._names.namespaces) & existing:
            raise LabError(
                f"namespaces {'/'.join(self._names.namespaces)} already "
                "exist: another Lab in this process is running"
            )
        return bins

    def _start(self, bins: dict[str, str]) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix=f"sgwr-lab-{self.pid}-"))
        self._created_ns = True
        try:
            netns.create(self.pid)
        except LabError as exc:
            # Typical inside unprivileged containers: root, yet no
            # CAP_SYS_ADMIN or no /run/netns mount.
            raise LabUnsupported(f"cannot create namespaces: {exc}") from exc
        pki = make_pki(self._workdir / "pki")
        self._ca_bundle = pki.ca_bundle
        self._inspect_ca = pki.inspect_ca
        daemons, steps, checks = build(self._workdir, pki, bins)
        deadline = time.monotonic() + self.start_budget
        for stage in sorted({d.stage for d in daemons}):
            for daemon in daemons:
                if daemon.stage == stage:
                    self._daemons.append(daemon)
                    daemon.start(self._ns_of(daemon.host))
            self._run_steps([s for s in steps if s.stage == stage], deadline)
            self._wait_ready([c for c in checks if c.stage == stage], deadline)

    def _ns_of(self, host: str) -> str:
        return {"server": self.server_ns, "impostor": self.impostor_ns}[host]

    def stop(self) -> None:
        """Stop everything this lab started; safe to call at any time."""
        left = self._teardown(keep_workdir=self.keep_workdir)
        if left:
            raise LabError(f"daemons did not stop: {', '.join(left)}")

    def _teardown(self, *, keep_workdir: bool) -> list[str]:
        """Stop daemons, delete namespaces; names of daemons left."""
        self._running = False
        left = stop_all(self._daemons)
        self._daemons = []
        if self._created_ns:
            # Also kills children the daemons forked, inside our own
            # namespaces only.
            for ns in self._names.namespaces:
                netns.delete_namespace(ns)
            self._created_ns = False
        if self._workdir is not None and not keep_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        return left

    # -- setup steps ----------------------------------------------------

    def _run_steps(self, steps: list[Step], deadline: float) -> None:
        for step in steps:
            tries = _MAX_STEP_TRIES if step.retry else 1
            error = ""
            for _ in range(tries):
                self._raise_if_dead()
                error = self._run_step(step)
                if not error or time.monotonic() >= deadline:
                    break
                time.sleep(_STEP_RETRY_PAUSE_S)
            if error:
                daemon = [d for d in self._daemons if d.name == step.daemon]
                raise LabError(
                    "\n".join(
                        [
                            f"setup of {step.daemon} failed: {error}",
                            *(d.describe() for d in daemon),
                        ]
                    )
                )

    @staticmethod
    def _run_step(step: Step) -> str:
        """'' on success, else what went wrong."""
        try:
            done = subprocess.run(
                step.argv,
                env={**os.environ, **step.env},
                capture_output=True,
                text=True,
                timeout=_STEP_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(step.argv)}: {exc}"
        if done.returncode == 0:
            return ""
        return (
            f"{' '.join(step.argv)} exited {done.returncode}: "
            f"{done.stderr.strip() or done.stdout.strip()}"
        )

    # -- readiness ------------------------------------------------------

    def _wait_ready(self, checks: list[Check], deadline: float) -> None:
        # Short probe rounds so a daemon that died is reported at once
        # with its log, rather than as a timeout at the end.
        if not checks:
            return
        pending = checks
        failed: dict[str, str] = {}
        for _ in range(_MAX_PROBE_ROUNDS):
            self._raise_if_dead()
            budget = min(_PROBE_ROUND_S, deadline - time.monotonic())
            failed = self._probe(pending, max(budget, 0.0))
            pending = [c for c in pending if c.name in failed]
            if not pending:
                return
            if time.monotonic() >= deadline:
                break
        raise LabError(self._not_ready_message(pending, failed))

    def _raise_if_dead(self) -> None:
        dead = [d for d in self._daemons if d.exited() is not None]
        if dead:
            raise LabError(
                "daemon exited during start:\n" + "\n".join(d.describe() for d in dead)
            )

    def _probe(self, checks: list[Check], wait: float) -> dict[str, str]:
        spec = json.dumps([c.as_json() for c in checks])
        done = self.exec_agent_ns(
            [sys.executable, "-I", str(_PROBE), f"{wait:.3f}", spec],
            timeout=wait + 20.0,
        )
        if done.returncode != 0:
            raise LabError(f"readiness probe failed: {done.stderr.strip()}")
        result: dict[str, str] = json.loads(done.stdout)
        return result

    def _not_ready_message(self, pending: list[Check], failed: dict[str, str]) -> str:
        lines = [f"services not answering after {self.start_budget:.0f} s:"]
        lines += [f"  {failed[c.name]}" for c in pending]
        names = sorted({c.daemon for c in pending})
        lines += [d.describe() for d in self._daemons if d.name in names]
        return "\n".join(lines)

    # -- faults -----------------------------------------------------------

    def fault(
        self, action: str, address: str, port: int | None = None, proto: str = "tcp"
    ) -> None:
        """Make the server side misbehave for traffic to `address`.

        action: "drop" (silence), "reset" (TCP RST, tcp only),
        "prohibited" (ICMP admin-prohibited) or "host-unreachable"
        (ICMP host-unreachable).  With `port` the rule matches that
        `proto` port; without it every packet to `address` matches
        (tcp only for "reset").  The rule goes to the namespace that owns
        `address` (the impostor's own, or the server namespace).
        """
        rule = netns.fault_rule(action, address, port, proto)
        netns.add_fault(netns.namespace_for(self._names, address), rule)

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        for ns in (self.server_ns, self.impostor_ns):
            netns.clear_faults(ns)

    # -- running things in the namespaces -----------------------------

    def exec_agent_ns(
        self, argv: list[str], timeout: float = 30, *, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the agent namespace, capturing text output.

        `stdin` is fed to the command; without it stdin is empty.
        """
        return self._exec(self.agent_ns, argv, timeout, stdin)

    def exec_server_ns(
        self, argv: list[str], timeout: float = 30, *, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the server namespace (for inbound probes)."""
        return self._exec(self.server_ns, argv, timeout, stdin)

    def exec_impostor_ns(
        self, argv: list[str], timeout: float = 30, *, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the impostor namespace."""
        return self._exec(self.impostor_ns, argv, timeout, stdin)

    def run_agent(
        self, *args: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m agent ARGS`` in the agent namespace."""
        return self.exec_agent_ns(
            [sys.executable, "-m", "agent", *args], timeout=timeout
        )

    @staticmethod
    def _exec(
        ns: str, argv: list[str], timeout: float, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        # Input "" rather than an inherited stdin: nothing run here may
        # wait on the test runner's terminal.
        return subprocess.run(
            netns.netns_exec_argv(ns, argv),
            input=stdin or "",
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO_ROOT,
            check=False,
        )

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
