"""The agent's DaemonSet as a real cluster gets it: pods only, probes, its state, its limits."""

from pathlib import Path
from typing import Any

import pytest

from tests.deploy.chart_tools import render, values_file
from wukong.cli import build_parser
from wukong.deploy.chart import ChartError


def _daemonset(tmp_path: Path, **agent: Any) -> dict[str, Any]:
    values = {"agent": {"enabled": True, **agent.pop("agent_values", {})}, **agent}
    objects = render("-f", str(values_file(tmp_path, values)))
    (daemonset,) = [obj for obj in objects if obj["kind"] == "DaemonSet"]
    return dict(daemonset)


def _container(daemonset: dict[str, Any]) -> dict[str, Any]:
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {var["name"]: var["value"] for var in container["env"] if "value" in var}


def test_defaults(tmp_path: Path) -> None:
    daemonset = _daemonset(tmp_path)
    pod = daemonset["spec"]["template"]["spec"]
    container = _container(daemonset)
    args = container["args"]
    assert "--pods-only" in args
    assert "--metrics-bind-address=:9464" in args
    assert "--health-probe-bind-address=:8081" in args
    assert "--state-dir=/var/run/wukong-agent" in args
    # Every flag the chart passes is one `wukong agent` takes.
    parsed = build_parser().parse_args(args)
    assert (parsed.pods_only, parsed.health_bind) == (True, ":8081")
    assert str(parsed.state_dir) == "/var/run/wukong-agent"

    assert {"name": "health", "containerPort": 8081} in container["ports"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    # The preStop hook detaches (a command `wukong` takes, at the image's path), within
    # the period the detach has before SIGKILL.
    hook = container["lifecycle"]["preStop"]["exec"]["command"]
    assert hook[0] == "/opt/wukong/bin/wukong"
    detach = build_parser().parse_args(hook[1:])
    assert (str(detach.state_dir), detach.timeout) == ("/var/run/wukong-agent", 25)
    assert detach.timeout < pod["terminationGracePeriodSeconds"] == 30

    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "state"]
    assert mount == {"name": "state", "mountPath": "/var/run/wukong-agent"}  # writable
    (volume,) = [v for v in pod["volumes"] if v["name"] == "state"]
    assert volume["hostPath"] == {"path": "/var/run/wukong-agent", "type": "DirectoryOrCreate"}

    assert "tolerations" not in pod  # no taint tolerated unless asked
    assert container["resources"]["requests"]["memory"] == "256Mi"
    assert container["resources"]["limits"]["memory"] == "512Mi"
    assert _env(container)["OTEL_SERVICE_NAME"] == "wukong-agent"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in _env(container)  # tracing off


def test_widened_to_every_process_and_tainted_nodes(tmp_path: Path) -> None:
    control_plane = {
        "key": "node-role.kubernetes.io/control-plane",
        "operator": "Exists",
        "effect": "NoSchedule",
    }
    daemonset = _daemonset(
        tmp_path,
        agent_values={
            "podsOnly": False,
            "tolerations": [control_plane],
            "healthPort": 9000,
            "stateDir": "/var/lib/wukong-agent",
        },
    )
    container = _container(daemonset)
    assert "--pods-only" not in container["args"]
    assert "--health-probe-bind-address=:9000" in container["args"]
    assert "--state-dir=/var/lib/wukong-agent" in container["args"]
    assert daemonset["spec"]["template"]["spec"]["tolerations"] == [control_plane]


def test_tracing_is_set_as_for_the_operator(tmp_path: Path) -> None:
    tracing = {
        "endpoint": "http://otel-collector.observability:4317",
        "resourceAttributes": {"k8s.cluster.name": "eu-1", "deployment.environment": "prod"},
    }
    objects = render(
        "-f", str(values_file(tmp_path, {"agent": {"enabled": True}, "tracing": tracing}))
    )
    env = {
        obj["kind"]: _env(obj["spec"]["template"]["spec"]["containers"][0])
        for obj in objects
        if obj["kind"] in ("Deployment", "DaemonSet")
    }
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_TRACES_SAMPLER_ARG": "",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,k8s.cluster.name=eu-1",
    }
    assert env["DaemonSet"] == {"OTEL_SERVICE_NAME": "wukong-agent", **otel}
    assert {k: v for k, v in env["Deployment"].items() if k.startswith("OTEL_")} == {
        "OTEL_SERVICE_NAME": "wukong-operator",
        **otel,
    }
    assert env["Deployment"]["WUKONG_TRACES_KEEP_RATIO"] == "0.001"
    assert env["Deployment"]["WUKONG_TRACES_KEEP_EVERY"] == "60"
    assert env["Deployment"]["WUKONG_TRACES_SLOW_SHARE"] == "0.5"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"agent": {"stateDir": "run/wukong"}}, "/agent/stateDir"),
        ({"agent": {"podsOnly": "yes"}}, "/agent/podsOnly"),
        ({"tracing": {"resourceAttributes": {"team": "a,b"}}}, "/tracing/resourceAttributes/team"),
    ],
)
def test_schema_rejects(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    with pytest.raises(ChartError) as error:
        render("-f", str(values_file(tmp_path, values)))
    assert message in str(error.value)
