"""The Helm chart, checked with the real helm: lint, schema, generated files, hardening."""

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.deploy.chart_tools import CHART, EVERYTHING_ON, REPO, helm, render, values_file
from wukong.dashboards.alerts import alert_rules
from wukong.dashboards.render import render_dashboards
from wukong.deploy.chart import BUNDLE, ChartError, generated_files, render_bundle
from wukong.ebpf import capabilities
from wukong.operator.admission import webhook_configuration
from wukong.runtime import DEFAULT_RECONCILE_TIMEOUT

# The chart adds exactly what the agent says it needs (and why, in its preflight errors).
AGENT_CAPABILITIES = list(capabilities.REQUIRED)


def test_generated_files_and_bundle_are_up_to_date() -> None:
    stale = [
        str(relative)
        for relative, text in generated_files().items()
        if (CHART / relative).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"stale generated chart files (run `wukong deploy render`): {stale}"
    bundle = (REPO / BUNDLE).read_text(encoding="utf-8")
    assert bundle == render_bundle(helm(), CHART), "deploy/wukong.yaml is stale"


@pytest.mark.parametrize("everything", [False, True], ids=["defaults", "everything-on"])
def test_helm_lint(tmp_path: Path, everything: bool) -> None:
    args = ["-f", str(values_file(tmp_path, EVERYTHING_ON))] if everything else []
    result = subprocess.run(
        [str(helm()), "lint", str(CHART), "--strict", "--kube-version", "1.36.3", *args],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator": {"replicas": "two"}}, "at '/operator/replicas': got string, want integer"),
        ({"operator": {"reconcileTimeout": 0}}, "/operator/reconcileTimeout"),
        ({"agent": {"enable": True}}, "additional properties 'enable' not allowed"),
        (
            {"operator": {"resources": {"limits": None}}},  # null deletes the default
            "missing property 'limits'",
        ),
        ({"tracing": {"protocol": "udp"}}, "/tracing/protocol"),
        ({"monitoring": {"serviceMonitor": {"interval": "5 minutes"}}}, "/interval"),
        ({"image": {"repository": ""}}, "/image/repository"),
        ({"webhook": {"failurePolicy": "Retry"}}, "/webhook/failurePolicy"),
        ({"webhook": {"timeoutSeconds": 60}}, "/webhook/timeoutSeconds"),
        ({"webhook": {"existingSecret": "mine"}}, "webhook.caBundle is required"),
        ({"agent": {"extraCapabilities": ["sys_resource"]}}, "/agent/extraCapabilities/0"),
        ({"metrics": {"readers": [{"name": "prometheus"}]}}, "missing property 'namespace'"),
        ({"webhook": {"certManager": {"injectCAFrom": "no-slash"}}}, "/injectCAFrom"),
    ],
)
def test_schema_rejects_bad_values(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    with pytest.raises(ChartError) as error:
        render("-f", str(values_file(tmp_path, values)))
    assert message in str(error.value)


def _containers(
    objects: list[dict[str, Any]], *, pods: bool = False
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) for every container of every workload (and
    of every bare Pod, `helm test`'s, with `pods`)."""
    found = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "DaemonSet") or (pods and obj["kind"] == "Pod"):
            pod = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
            for container in pod["containers"] + pod.get("initContainers", []):
                found.append((obj["metadata"]["name"], pod, container))
    return found


def test_no_container_is_privileged_unbounded_or_root_without_reason(tmp_path: Path) -> None:
    objects = render("-f", str(values_file(tmp_path, EVERYTHING_ON)))
    containers = _containers(objects, pods=True)
    assert {c["name"] for _, _, c in containers} == {"operator", "agent", "helm-test"}
    for workload, pod, container in containers:
        security = container.get("securityContext") or {}
        assert security.get("privileged") is False, workload
        assert security.get("allowPrivilegeEscalation") is False, workload
        assert security.get("readOnlyRootFilesystem") is True, workload
        assert security["capabilities"]["drop"] == ["ALL"], workload
        limits = container["resources"]["limits"]
        assert limits.get("cpu") and limits.get("memory"), f"{workload} has no limits"
        run_as_root = security.get("runAsUser", pod["securityContext"].get("runAsUser")) == 0
        if container["name"] == "agent":
            # Justified in the template: BCC needs effective capabilities.
            assert run_as_root and pod["hostPID"] is True
            assert security["capabilities"]["add"] == AGENT_CAPABILITIES
        else:
            assert not run_as_root and pod["securityContext"]["runAsNonRoot"] is True
            assert "add" not in security["capabilities"]
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    template = (CHART / "templates/agent.yaml").read_text()
    for capability in AGENT_CAPABILITIES:
        line = next(i for i, text in enumerate(template.splitlines()) if f"- {capability}" in text)
        assert template.splitlines()[line - 1].strip().startswith("#"), f"{capability}: why?"


def test_older_kernels_can_give_the_agent_sys_resource(tmp_path: Path) -> None:
    values = {
        **EVERYTHING_ON,
        "agent": {**EVERYTHING_ON["agent"], "extraCapabilities": ["SYS_RESOURCE"]},
    }
    objects = render("-f", str(values_file(tmp_path, values)))
    (agent,) = [c for _, _, c in _containers(objects) if c["name"] == "agent"]
    assert agent["securityContext"]["capabilities"]["add"] == [*AGENT_CAPABILITIES, "SYS_RESOURCE"]


def test_rbac_has_no_wildcards_and_no_secrets() -> None:
    objects = render()
    rules = [
        rule for obj in objects if obj["kind"] in ("ClusterRole", "Role") for rule in obj["rules"]
    ]
    assert rules
    for rule in rules:
        # A rule names API resources, or URLs that are none (metrics-reader's /metrics).
        targets = rule.get("resources") or rule["nonResourceURLs"]
        assert "*" not in rule["verbs"] and "*" not in targets, rule
        assert "secrets" not in targets, rule


def _by_kind_and_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def _metrics_flags(objects: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {
        container["name"]: [arg for arg in container["args"] if "metrics-" in arg]
        for _, _, container in _containers(objects)
    }


def test_metrics_are_secure_and_only_the_readers_are_granted(tmp_path: Path) -> None:
    objects = _by_kind_and_name(
        render("--namespace", "ops", "-f", str(values_file(tmp_path, EVERYTHING_ON)))
    )
    auth = objects[("ClusterRole", "wukong-metrics-auth")]
    assert auth["rules"] == [
        {
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["tokenreviews"],
            "verbs": ["create"],
        },
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["subjectaccessreviews"],
            "verbs": ["create"],
        },
    ]
    assert objects[("ClusterRoleBinding", "wukong-metrics-auth")]["subjects"] == [
        {"kind": "ServiceAccount", "name": "wukong", "namespace": "ops"},
        {"kind": "ServiceAccount", "name": "wukong-agent", "namespace": "ops"},
    ]
    reader = objects[("ClusterRole", "wukong-metrics-reader")]
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    binding = objects[("ClusterRoleBinding", "wukong-metrics-reader")]
    assert binding["roleRef"]["name"] == "wukong-metrics-reader"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"},
        # The ServiceMonitor's own token (tests/deploy/test_chart_operations.py).
        {"kind": "ServiceAccount", "name": "wukong-metrics-scraper", "namespace": "ops"},
    ]
    assert _metrics_flags(list(objects.values())) == {
        "operator": ["--metrics-bind=:8080", "--metrics-secure"],
        "agent": ["--metrics-bind-address=:9464", "--metrics-secure"],
    }
    for workload in (("Deployment", "wukong"), ("DaemonSet", "wukong-agent")):
        annotations = objects[workload]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scheme"] == "https", workload
    (endpoint,) = objects[("ServiceMonitor", "wukong")]["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"] == {"insecureSkipVerify": True}
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "wukong-metrics-scraper-token", "key": "token"},
    }
    (pod_endpoint,) = objects[("PodMonitor", "wukong-agent")]["spec"]["podMetricsEndpoints"]
    assert pod_endpoint["scheme"] == "https"
    assert pod_endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "prometheus-token", "key": "token"},
    }
    # With no readers, no binding: nobody is granted by default.
    defaults = _by_kind_and_name(render())
    assert ("ClusterRole", "wukong-metrics-reader") in defaults
    assert ("ClusterRoleBinding", "wukong-metrics-reader") not in defaults


def test_a_certificate_secret_is_mounted_where_the_flag_points(tmp_path: Path) -> None:
    values = {**EVERYTHING_ON, "metrics": {"certSecret": "metrics-tls"}}
    objects = render("-f", str(values_file(tmp_path, values)))
    for _, pod, container in _containers(objects):
        assert "--metrics-cert-dir=/etc/wukong/metrics-certs" in container["args"]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "metrics-certs"]
        assert mount["mountPath"] == "/etc/wukong/metrics-certs" and mount["readOnly"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "metrics-certs"]
        assert volume["secret"] == {"secretName": "metrics-tls"}


def test_insecure_metrics_grant_nothing_and_say_http(tmp_path: Path) -> None:
    values = {
        **EVERYTHING_ON,
        "metrics": {"secure": False, "readers": [{"namespace": "m", "name": "p"}]},
    }
    objects = render("-f", str(values_file(tmp_path, values)))
    assert not [obj for obj in objects if "metrics-" in obj["metadata"]["name"]]
    assert _metrics_flags(objects) == {
        "operator": ["--metrics-bind=:8080", "--no-metrics-secure"],
        "agent": ["--metrics-bind-address=:9464", "--no-metrics-secure"],
    }
    for obj in objects:
        if obj["kind"] in ("Deployment", "DaemonSet"):
            assert (
                obj["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scheme"] == "http"
            )
        if obj["kind"] == "ServiceMonitor":
            assert "scheme" not in obj["spec"]["endpoints"][0]


def test_monitoring_objects_come_from_the_same_sources(tmp_path: Path) -> None:
    objects = render("-f", str(values_file(tmp_path, EVERYTHING_ON)))
    rule = next(obj for obj in objects if obj["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"] == alert_rules()["groups"]
    dashboards = {
        key: json.loads(value)
        for obj in objects
        if obj["kind"] == "ConfigMap"
        for key, value in obj["data"].items()
    }
    assert dashboards == {name: json.loads(text) for name, text in render_dashboards().items()}
    configmaps = [obj for obj in objects if obj["kind"] == "ConfigMap"]
    assert all(obj["metadata"]["labels"]["grafana_dashboard"] == "1" for obj in configmaps)


def test_the_chart_defaults_to_the_operators_deadline() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["operator"]["reconcileTimeout"] == DEFAULT_RECONCILE_TIMEOUT
    (deployment,) = [obj for obj in render() if obj["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert f"--reconcile-timeout={DEFAULT_RECONCILE_TIMEOUT:g}" in container["args"]


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    dockerfiles = sorted((REPO / "deploy/images").glob("*.Dockerfile"))
    assert len(dockerfiles) == 2
    result = subprocess.run([str(hadolint), *map(str, dockerfiles)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_operator_image_uses_an_interpreter_with_probes() -> None:
    text = (REPO / "deploy/images/operator.Dockerfile").read_text()
    assert "FROM debian:" in text and "FROM python:" not in text


def test_the_webhook_is_registered_through_a_service_with_its_ca(tmp_path: Path) -> None:
    objects = render(
        "--namespace",
        "ops",
        "-f",
        str(values_file(tmp_path, {"webhook": {"failurePolicy": "Fail"}})),
    )
    by_kind = {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}
    configuration = by_kind["ValidatingWebhookConfiguration", "wukong"]
    secret = by_kind["Secret", "wukong-webhook-cert"]
    service = by_kind["Service", "wukong-webhook"]
    (webhook,) = configuration["webhooks"]
    # The same registration as the code's, but through the Service.
    expected = webhook_configuration(
        "wukong",
        service={"name": "wukong-webhook", "namespace": "ops", "port": 443},
        ca_bundle=base64.b64decode(secret["data"]["ca.crt"]),
        failure_policy="Fail",
        timeout_seconds=10,
    )["webhooks"][0]
    assert webhook == expected
    assert service["spec"]["ports"] == [{"name": "webhook", "port": 443, "targetPort": "webhook"}]
    # The certificate names the Service, and the CA in the configuration signed it.
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    assert cert.issuer == ca.subject
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "wukong-webhook.ops.svc" in names.get_values_for_type(x509.DNSName)
    (_, pod, container) = next(c for c in _containers(objects) if c[0] == "wukong")
    assert "--webhook-bind=:9443" in container["args"]
    assert "--webhook-cert-dir=/etc/wukong/webhook-certs" in container["args"]
    assert {"name": "webhook", "containerPort": 9443} in container["ports"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "webhook-certs")
    assert mount == {
        "name": "webhook-certs",
        "mountPath": "/etc/wukong/webhook-certs",
        "readOnly": True,
    }
    volume = next(v for v in pod["volumes"] if v["name"] == "webhook-certs")
    assert volume["secret"]["secretName"] == "wukong-webhook-cert"


def test_the_webhook_can_be_turned_off_and_the_bundle_has_it_off(tmp_path: Path) -> None:
    objects = render("-f", str(values_file(tmp_path, {"webhook": {"enabled": False}})))
    kinds = {obj["kind"] for obj in objects}
    assert "ValidatingWebhookConfiguration" not in kinds
    (_, _, container) = next(c for c in _containers(objects) if c[0] == "wukong")
    assert "--webhook-bind=0" in container["args"]
    bundle = (REPO / BUNDLE).read_text(encoding="utf-8")
    assert "--webhook-bind=0" in bundle
    assert "BEGIN" not in bundle  # no key or certificate is ever committed
