"""scapy loads only when path diagnostics run: it takes most of a second,
and `--version`, `rules` and a plain `check` must not pay for it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import contextlib, io, sys
    from agent.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        with contextlib.suppress(SystemExit):
            main(["--version"])
        main(["rules"])
        main(["check", "--type", "volume", "--region", "us-east-1",
              "--gateway", "127.0.0.1", "--only", "iscsi.target",
              "--timeout", "1", "--log-level", "error"])
        import probes.pathdiag
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "scapy")
    print(",".join(loaded) or "none")
    """
)


def test_scapy_is_not_imported_without_diagnostics() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"
