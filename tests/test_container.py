"""The container image, built from the Dockerfile and run against the lab.

The image is built with podman on a base image made here (see
`tests.container.images`), then run inside the lab's agent namespace
with ``--network host``, as the README tells users to run it: a healthy
check passes, a faulty one fails with its report written to a mounted
folder, options come from SGW_REACH_* variables as well as flags, the
agent runs as a user other than root yet opens raw sockets when the
container may, says how to allow them when it may not, and the image's
health check follows a watch's /healthz.

Podman runs with Docker's default capabilities (see
``tests/container/containers.conf``), so a run without --cap-add or
--cap-drop sees what a plain ``docker run`` sees.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container import images
from tests.lab import Lab
from tests.lab import topology as t
from tests.schema import validate_report

pytestmark = [
    pytest.mark.container,
    pytest.mark.usefixtures("faults"),
    # The first test makes the images: on a cold machine, debootstrap and
    # the build take minutes.
    pytest.mark.timeout(900),
]

CA_IN_CONTAINER = "/lab/ca.pem"
RUN_TIMEOUT = 90.0
HEALTH_PORT = 9877
WATCH_WAIT = 30.0
WATCH_POLL = 0.5

LAB_INPUTS = (
    "--dns-server",
    t.DNS,
    "--ca-bundle",
    CA_IN_CONTAINER,
    "--timeout",
    "2",
)
HEALTHY = (
    "--gateway",
    t.GATEWAY,
    "--ntp-server",
    t.NTP_GOOD,
    "--support-host",
    t.SSH,
    "--bucket",
    "lab-bucket",
)
NO_RAW = "--cap-add NET_RAW"


@pytest.fixture(scope="session")
def image() -> str:
    """The project's image, built for this session."""
    try:
        return images.prepare()
    except images.ContainersUnsupported as exc:
        message = f"containers unavailable on this machine: {exc}"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def lab_ca(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's CA bundle where the image's user can read it."""
    folder = tmp_path_factory.mktemp("container-ca")
    folder.chmod(0o755)
    copy = folder / "ca.pem"
    shutil.copyfile(lab.ca_bundle, copy)
    copy.chmod(0o644)
    return copy


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    """A folder for the container's reports, writable by the image's user."""
    folder = tmp_path / "reports"
    folder.mkdir()
    os.chown(folder, images.IMAGE_UID, -1)
    return folder


def podman_run(
    image: str,
    *args: str,
    options: tuple[str, ...] = (),
    lab: Lab | None = None,
) -> subprocess.CompletedProcess[str]:
    """``podman run --rm IMAGE ARGS``, in the lab's agent namespace with
    host networking when a lab is given."""
    argv = ["podman", "run", "--rm", "--no-healthcheck", *options, image, *args]
    if lab is not None:
        argv[3:3] = ["--network", "host"]
        argv = images.in_namespace(lab.agent_ns, argv)
    return images.run(argv, RUN_TIMEOUT)


def mounts(ca: Path, reports: Path | None = None) -> tuple[str, ...]:
    found: tuple[str, ...] = ("--volume", f"{ca}:{CA_IN_CONTAINER}:ro")
    if reports is not None:
        found += ("--volume", f"{reports}:/reports")
    return found


def saved_report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    validate_report(report)
    return report


def statuses(report: dict[str, Any]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for result in report["results"]:
        found.setdefault(result["rule"], set()).add(result["status"])
    return found


def test_image_runs_the_agent_as_an_unprivileged_user(image: str) -> None:
    config = json.loads(images.podman("image", "inspect", image))[0]["Config"]
    assert config["User"] == "sgw"
    assert config["Entrypoint"] == ["sgw-reach"]
    done = podman_run(image, "-u", options=("--entrypoint", "id"))
    assert done.stdout.strip() == str(images.IMAGE_UID), done.stderr
    version = podman_run(image, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("sgw-reach ")


def test_image_stays_small(image: str) -> None:
    size = int(images.podman("image", "inspect", "--format", "{{.Size}}", image))
    # The base is about 130 MB, the agent with its dependencies about 55.
    assert size < 260_000_000, f"the image grew to {size / 1e6:.0f} MB"


@pytest.mark.lab
def test_healthy_gateway_passes(
    lab: Lab, image: str, lab_ca: Path, reports: Path
) -> None:
    done = podman_run(
        image,
        "check",
        "--type",
        "file",
        "--region",
        "us-east-1",
        *LAB_INPUTS,
        *HEALTHY,
        "--output",
        "/reports/sgw-reach.json",
        options=mounts(lab_ca, reports),
        lab=lab,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = saved_report(reports / "sgw-reach.json")
    assert report["summary"]["verdict"] == "pass"
    assert t.AGENT in report["agent"]["addresses"]
    assert "pass" in statuses(report)["file.control-https"]


@pytest.mark.lab
def test_fault_fails_with_the_report_in_the_mounted_folder(
    lab: Lab, image: str, lab_ca: Path, reports: Path
) -> None:
    lab.fault("reset", t.TLS_GOOD, 443)
    done = podman_run(
        image,
        "check",
        "--type",
        "file",
        "--region",
        "us-east-1",
        *LAB_INPUTS,
        "--only",
        "file.control-https",
        "--output",
        "/reports/sgw-reach.json",
        options=mounts(lab_ca, reports),
        lab=lab,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    report = saved_report(reports / "sgw-reach.json")
    assert report["summary"]["verdict"] == "fail"
    for result in report["results"]:
        assert (result["status"], result["reason"]) == ("fail", "refused")


@pytest.mark.lab
def test_options_from_the_environment(
    lab: Lab, image: str, lab_ca: Path, reports: Path
) -> None:
    variables = {
        "SGW_REACH_TYPE": "volume",
        "SGW_REACH_REGION": "us-east-1",
        "SGW_REACH_DNS_SERVER": t.DNS,
        "SGW_REACH_CA_BUNDLE": CA_IN_CONTAINER,
        "SGW_REACH_TIMEOUT": "2",
        "SGW_REACH_ONLY": "common.dns-udp,common.aws-https",
        "SGW_REACH_FORMAT": "json",
        "SGW_REACH_OUTPUT": "/reports/from-env.json",
    }
    options = mounts(lab_ca, reports)
    for name, value in variables.items():
        options += ("--env", f"{name}={value}")
    done = podman_run(image, "check", options=options, lab=lab)
    assert done.returncode == 0, done.stdout + done.stderr
    report = saved_report(reports / "from-env.json")
    assert json.loads(done.stdout) == report
    assert report["gateway_type"] == "volume"
    assert set(statuses(report)) == {"common.dns-udp", "common.aws-https"}

    # A flag wins over its variable.
    done = podman_run(
        image, "check", "--only", "common.dns-udp", options=options, lab=lab
    )
    assert done.returncode == 0, done.stdout + done.stderr
    overridden = saved_report(reports / "from-env.json")
    assert set(statuses(overridden)) == {"common.dns-udp"}


def test_a_bad_variable_is_a_usage_error(image: str) -> None:
    done = podman_run(
        image,
        "check",
        "--type",
        "file",
        "--region",
        "us-east-1",
        options=("--env", "SGW_REACH_TIMEOUT=soon"),
    )
    assert done.returncode == 2
    assert done.stderr.startswith("sgw-reach: error: SGW_REACH_TIMEOUT: 'soon'")
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def trace_gateway(
    lab: Lab, image: str, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``sgw-reach trace`` to the gateway's activation port, from the lab."""
    return podman_run(
        image,
        "trace",
        t.GATEWAY,
        "80",
        "--format",
        "json",
        "--timeout",
        "5",
        options=options,
        lab=lab,
    )


@pytest.mark.lab
def test_raw_sockets_with_cap_add(lab: Lab, image: str) -> None:
    done = trace_gateway(lab, image, ("--cap-add", "NET_RAW"))
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(done.stdout)["diagnosis"]
    assert found["trace"]["reached"]
    assert found["syn"]["state"] == "open"


@pytest.mark.lab
def test_raw_sockets_from_the_file_capability_alone(lab: Lab, image: str) -> None:
    # Docker gives a user other than root no capability of its own, not
    # even an added one: only the interpreter's file capability can.
    script = (
        "grep -E '^Cap(Inh|Amb)' /proc/self/status && exec sgw-reach trace "
        f"{t.GATEWAY} 80 --format json --timeout 5"
    )
    shell = ("--entrypoint", "/bin/sh")
    done = podman_run(image, "-c", script, options=shell, lab=lab)
    lines = done.stdout.splitlines()
    assert lines[:2] == ["CapInh:\t0000000000000000", "CapAmb:\t0000000000000000"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads("\n".join(lines[2:]))["diagnosis"]["trace"]["reached"]


@pytest.mark.lab
def test_without_net_raw_the_agent_says_how_to_add_it(
    lab: Lab, image: str, lab_ca: Path, reports: Path
) -> None:
    options = ("--cap-drop", "NET_RAW")
    done = trace_gateway(lab, image, options)
    assert done.returncode == 2, done.stdout + done.stderr
    assert NO_RAW in done.stderr
    assert "Traceback" not in done.stderr

    lab.fault("drop", t.TLS_GOOD, 443)
    done = podman_run(
        image,
        "check",
        "--type",
        "file",
        "--region",
        "us-east-1",
        *LAB_INPUTS,
        "--only",
        "file.control-https",
        "--diagnose",
        "--output",
        "/reports/sgw-reach.json",
        options=options + mounts(lab_ca, reports),
        lab=lab,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    diagnostics = saved_report(reports / "sgw-reach.json")["diagnostics"]
    assert diagnostics["ran"] is False
    assert NO_RAW in diagnostics["reason"]


@pytest.fixture
def watch(lab: Lab, image: str, lab_ca: Path) -> Iterator[str]:
    """A detached watch in the lab serving /healthz; its container id."""
    argv = [
        "podman",
        "run",
        "--detach",
        "--network",
        "host",
        # Health checks run by hand below: no timer (and no systemd) needed.
        "--health-interval",
        "disable",
        *mounts(lab_ca),
        image,
        "watch",
        "--type",
        "file",
        "--region",
        "us-east-1",
        *LAB_INPUTS,
        "--only",
        "file.control-https",
        "--every",
        "1s",
        "--listen",
        f"127.0.0.1:{HEALTH_PORT}",
    ]
    started = images.run(images.in_namespace(lab.agent_ns, argv), RUN_TIMEOUT)
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip().splitlines()[-1]
    try:
        yield container
    finally:
        images.run(["podman", "rm", "--force", "--time", "2", container])


def wait_for_health(lab: Lab, container: str, healthy: bool) -> None:
    """Run the image's health check until it gives `healthy`, bounded."""
    # A container on the host's network has no namespace of its own: a
    # command run in it uses the caller's, here the lab's agent namespace.
    argv = images.in_namespace(lab.agent_ns, ["podman", "healthcheck", "run"])
    deadline = time.monotonic() + WATCH_WAIT
    outputs: list[str] = []
    while time.monotonic() < deadline:
        done = images.run([*argv, container])
        if (done.returncode == 0) is healthy:
            return
        outputs.append((done.stdout + done.stderr).strip())
        time.sleep(WATCH_POLL)
    logs = images.run(["podman", "logs", container])
    pytest.fail(
        f"health check never became {'healthy' if healthy else 'unhealthy'}: "
        f"{outputs[-3:]}\n{logs.stderr[-3000:]}"
    )


@pytest.mark.lab
def test_health_check_follows_the_watch(lab: Lab, watch: str) -> None:
    wait_for_health(lab, watch, healthy=True)
    lab.fault("reset", t.TLS_GOOD, 443)
    wait_for_health(lab, watch, healthy=False)
    lab.clear_faults()
    wait_for_health(lab, watch, healthy=True)
