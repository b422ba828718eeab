"""The deployment examples: they parse, and they use the metric names and
options the agent really has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from agent.cli import build_parser

EXAMPLES = Path(__file__).parent.parent / "examples"
METRICS = {
    "sgw_reach_rule_status",
    "sgw_reach_rule_reason",
    "sgw_reach_rule_duration_seconds",
    "sgw_reach_rule_last_success_timestamp_seconds",
    "sgw_reach_rounds_total",
    "sgw_reach_round_overruns_total",
    "sgw_reach_round_failures_total",
    "sgw_reach_watch_start_timestamp_seconds",
    "sgw_reach_tasks",
    "sgw_reach_round_duration_seconds",
    "sgw_reach_last_round_timestamp_seconds",
}


def load_yaml(name: str) -> list[Any]:
    yaml = pytest.importorskip("yaml")
    with (EXAMPLES / name).open(encoding="utf-8") as stream:
        return list(yaml.safe_load_all(stream))


def containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document["spec"]
    if document["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "Default"
    found: list[dict[str, Any]] = pod["containers"]
    return found


def parses(args: list[str], env: list[dict[str, str]], folder: Path) -> None:
    """The container's arguments are accepted by the agent's parser, with
    its environment standing in for the missing options (and ``folder``
    for the container's volumes, which must exist to be written)."""
    args = [re.sub(r"=/(reports|var/lib)/", f"={folder}/", a) for a in args]
    with pytest.MonkeyPatch.context() as patch:
        for variable in env:
            patch.setenv(variable["name"], variable["value"])
        build_parser().parse_args(args)


def test_the_cronjob_runs_a_check_hourly(tmp_path: Path) -> None:
    documents = load_yaml("kubernetes/cronjob-check.yaml")
    cronjob = next(d for d in documents if d["kind"] == "CronJob")
    assert cronjob["spec"]["schedule"] == "0 * * * *"
    (container,) = containers(cronjob)
    assert container["args"][0] == "check"
    names = {e["name"] for e in container["env"]}
    assert {"SGW_REACH_TYPE", "SGW_REACH_REGION", "SGW_REACH_GATEWAY"} <= names
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert any(arg.startswith("--output=/reports/") for arg in container["args"])
    assert "/reports" in mounts
    parses(container["args"], container["env"], tmp_path)


def test_the_deployment_watches_without_a_liveness_probe(tmp_path: Path) -> None:
    (deployment,) = load_yaml("kubernetes/deployment-watch.yaml")
    (container,) = containers(deployment)
    assert container["args"][0] == "watch"
    assert "--listen=0.0.0.0:9877" in container["args"]
    assert "livenessProbe" not in container
    assert container["readinessProbe"]["httpGet"]["path"] != "/healthz"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9877"
    parses(container["args"], container["env"], tmp_path)


def test_the_alerts_use_only_exported_metrics() -> None:
    (document,) = load_yaml("prometheus/alerts.yml")
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    alerts = {rule["alert"]: rule for rule in rules}
    assert {"SgwReachRequiredRuleFailing", "SgwReachStale", "SgwReachDown"} <= set(
        alerts
    )
    assert alerts["SgwReachRequiredRuleFailing"]["for"] == "10m"
    text = (EXAMPLES / "prometheus/alerts.yml").read_text()
    used = set(re.findall(r"\bsgw_reach_[a-z_]+", text))
    assert used
    assert used <= METRICS


def test_the_service_unit_runs_a_watch_with_its_state_directory(
    tmp_path: Path,
) -> None:
    text = (EXAMPLES / "sgw-reach-watch.service").read_text()
    settings: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings[key] = value
    command = settings["ExecStart"].split()
    assert command[1:3] == ["watch", "--every"]
    assert "--listen" in command
    assert command[command.index("--state-dir") + 1] == "%S/sgw-reach"
    assert settings["StateDirectory"] == "sgw-reach"
    assert settings["AmbientCapabilities"] == "CAP_NET_RAW"
    assert settings["Restart"] == "on-failure"
    assert "PrivateNetwork" not in settings
    state_dir = command.index("--state-dir")
    args = [*command[1:state_dir], "--state-dir", str(tmp_path)]
    env = [
        {"name": name, "value": value}
        for name, _, value in (
            item.partition("=") for item in settings["Environment"].split()
        )
    ]
    parses(args, env, tmp_path)
