"""The chart's production parts, rendered with the real helm: NetworkPolicies, the
PodDisruptionBudget, the monitors' credentials, NOTES.txt, certificates (the pods'
checksum, cert-manager) and the `helm test` hook."""

import base64
import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart_tools import CHART, helm, render, values_file
from wukong.deploy.chart import ChartError, helm_template

Objects = list[dict[str, Any]]
OPERATOR_SELECTOR = {
    "app.kubernetes.io/name": "wukong",
    "app.kubernetes.io/instance": "wukong",
    "app.kubernetes.io/component": "operator",
}


def _render(tmp_path: Path, values: dict[str, Any], *args: str) -> Objects:
    return render("--namespace", "ops", "-f", str(values_file(tmp_path, values)), *args)


def _of_kind(objects: Objects, kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def _deployment(objects: Objects) -> dict[str, Any]:
    return _of_kind(objects, "Deployment")["wukong"]


def _ports(workload: dict[str, Any]) -> dict[str, int]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return {port["name"]: port["containerPort"] for port in container["ports"]}


# --- NetworkPolicies -------------------------------------------------------------


def test_no_network_policy_unless_asked(tmp_path: Path) -> None:
    assert not _of_kind(_render(tmp_path, {"agent": {"enabled": True}}), "NetworkPolicy")


def test_network_policies_let_in_labelled_scrapers_the_api_server_and_helm_test(
    tmp_path: Path,
) -> None:
    objects = _render(tmp_path, {"networkPolicy": {"enabled": True}})
    policies = _of_kind(objects, "NetworkPolicy")
    assert set(policies) == {
        "wukong-allow-metrics",
        "wukong-allow-webhook",
        "wukong-allow-helm-test",
    }
    deployment = _deployment(objects)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = _ports(deployment)
    for policy in policies.values():
        spec = policy["spec"]
        assert policy["metadata"]["namespace"] == "ops"
        assert spec["policyTypes"] == ["Ingress"]  # egress stays open, as kubebuilder's
        selector = spec["podSelector"]["matchLabels"]
        assert selector == OPERATOR_SELECTOR
        assert selector.items() <= pod_labels.items()

    (metrics,) = policies["wukong-allow-metrics"]["spec"]["ingress"]
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"metrics": "enabled"}}}]
    assert metrics["ports"] == [{"protocol": "TCP", "port": ports["metrics"]}]
    # The API server is no pod: the webhook's port is open to any source, and only it.
    (webhook,) = policies["wukong-allow-webhook"]["spec"]["ingress"]
    assert webhook == {"ports": [{"protocol": "TCP", "port": ports["webhook"]}]}
    # The test pod's labels are the ones the policy lets reach the health port.
    (health,) = policies["wukong-allow-helm-test"]["spec"]["ingress"]
    test_pod = _of_kind(objects, "Pod")["wukong-helm-test"]
    (source,) = health["from"]
    assert source["podSelector"]["matchLabels"].items() <= test_pod["metadata"]["labels"].items()
    assert health["ports"] == [{"protocol": "TCP", "port": ports["health"]}]
    # Nothing else is let in: every container port is named in some policy.
    allowed = {
        p["port"] for pol in policies.values() for r in pol["spec"]["ingress"] for p in r["ports"]
    }
    assert allowed == set(ports.values())


def test_network_policies_take_the_scrapers_labels_the_cidrs_and_the_agent(
    tmp_path: Path,
) -> None:
    values = {
        "agent": {"enabled": True},
        "operator": {"metricsPort": 8443},
        "networkPolicy": {
            "enabled": True,
            "metricsNamespaceLabels": {"kubernetes.io/metadata.name": "monitoring"},
            "webhookFromCIDRs": ["10.0.0.0/24", "fd00::/64"],
        },
    }
    objects = _render(tmp_path, values)
    policies = _of_kind(objects, "NetworkPolicy")
    scrapers = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    (metrics,) = policies["wukong-allow-metrics"]["spec"]["ingress"]
    assert metrics == {"from": [scrapers], "ports": [{"protocol": "TCP", "port": 8443}]}
    (webhook,) = policies["wukong-allow-webhook"]["spec"]["ingress"]
    assert webhook["from"] == [
        {"ipBlock": {"cidr": "10.0.0.0/24"}},
        {"ipBlock": {"cidr": "fd00::/64"}},
    ]
    agent_policy = policies["wukong-agent-allow-metrics"]["spec"]
    agent = _of_kind(objects, "DaemonSet")["wukong-agent"]
    assert agent_policy["podSelector"]["matchLabels"] == agent["spec"]["selector"]["matchLabels"]
    (agent_metrics,) = agent_policy["ingress"]
    assert agent_metrics == {
        "from": [scrapers],
        "ports": [{"protocol": "TCP", "port": _ports(agent)["metrics"]}],
    }
    without_webhook = _render(
        tmp_path, {"webhook": {"enabled": False}, "networkPolicy": {"enabled": True}}
    )
    assert "wukong-allow-webhook" not in _of_kind(without_webhook, "NetworkPolicy")


def test_network_policy_values_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ChartError, match="webhookFromCIDRs/0"):
        _render(tmp_path, {"networkPolicy": {"webhookFromCIDRs": ["10.0.0.1"]}})
    with pytest.raises(ChartError, match="metricsNamespaceLabels"):
        _render(tmp_path, {"networkPolicy": {"metricsNamespaceLabels": {"metrics": True}}})


# --- PodDisruptionBudget ---------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        ({"replicas": 1}, False),
        ({"replicas": 2}, True),
        ({"replicas": 3}, True),
        ({"replicas": 3, "podDisruptionBudget": {"enabled": False}}, False),
    ],
)
def test_a_disruption_budget_only_with_more_than_one_replica(
    tmp_path: Path, operator: dict[str, Any], expected: bool
) -> None:
    objects = _render(tmp_path, {"operator": operator})
    budgets = _of_kind(objects, "PodDisruptionBudget")
    assert bool(budgets) == expected
    if expected:
        spec = budgets["wukong"]["spec"]
        assert spec == {
            "minAvailable": 1,
            "selector": {"matchLabels": _deployment(objects)["spec"]["selector"]["matchLabels"]},
        }


# --- The monitors' credentials -----------------------------------------------------


def test_the_service_monitor_sends_a_readers_token_from_a_secret(tmp_path: Path) -> None:
    values = {"monitoring": {"serviceMonitor": {"enabled": True}}}
    result = _render(tmp_path, values)
    assert "bearerTokenFile" not in yaml.safe_dump_all(result)
    (endpoint,) = _of_kind(result, "ServiceMonitor")["wukong"]["spec"]["endpoints"]
    # What it scrapes: unchanged (the metrics Service's port, HTTPS, OpenMetrics).
    assert endpoint["port"] == "metrics" and endpoint["scheme"] == "https"
    assert endpoint["enableHttp2"] is False and endpoint["tlsConfig"] == {
        "insecureSkipVerify": True
    }
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "wukong-metrics-scraper-token", "key": "token"},
    }
    monitor_selector = _of_kind(result, "ServiceMonitor")["wukong"]["spec"]["selector"]
    service = _of_kind(result, "Service")["wukong-metrics"]
    assert monitor_selector["matchLabels"].items() <= service["metadata"]["labels"].items()
    # The token is of an account that may read /metrics, made for this.
    secret = _of_kind(result, "Secret")["wukong-metrics-scraper-token"]
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": "wukong-metrics-scraper"
    }
    assert "wukong-metrics-scraper" in _of_kind(result, "ServiceAccount")
    binding = _of_kind(result, "ClusterRoleBinding")["wukong-metrics-reader"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "wukong-metrics-scraper", "namespace": "ops"}
    ]


def test_the_monitors_use_a_given_token_secret_and_nothing_is_made(tmp_path: Path) -> None:
    values = {
        "agent": {"enabled": True},
        "metrics": {"readers": [{"namespace": "monitoring", "name": "prometheus"}]},
        "monitoring": {
            "serviceMonitor": {"enabled": True, "tokenSecret": {"name": "prom", "key": "t"}},
            "podMonitor": {"enabled": True, "tokenSecret": {"name": "prom"}},
        },
    }
    result = _render(tmp_path, values)
    (service_endpoint,) = _of_kind(result, "ServiceMonitor")["wukong"]["spec"]["endpoints"]
    (pod_endpoint,) = _of_kind(result, "PodMonitor")["wukong-agent"]["spec"]["podMetricsEndpoints"]
    assert service_endpoint["authorization"]["credentials"] == {"name": "prom", "key": "t"}
    assert pod_endpoint["authorization"]["credentials"] == {"name": "prom", "key": "token"}
    assert "wukong-metrics-scraper" not in _of_kind(result, "ServiceAccount")
    assert "wukong-metrics-scraper-token" not in _of_kind(result, "Secret")
    binding = _of_kind(result, "ClusterRoleBinding")["wukong-metrics-reader"]
    assert [s["name"] for s in binding["subjects"]] == ["prometheus"]


def test_insecure_metrics_send_no_token(tmp_path: Path) -> None:
    values = {"metrics": {"secure": False}, "monitoring": {"serviceMonitor": {"enabled": True}}}
    result = _render(tmp_path, values)
    (endpoint,) = _of_kind(result, "ServiceMonitor")["wukong"]["spec"]["endpoints"]
    assert "authorization" not in endpoint and "scheme" not in endpoint
    assert not _of_kind(result, "Secret").keys() - {"wukong-webhook-cert"}


# --- NOTES.txt ----------------------------------------------------------------------


def _notes(tmp_path: Path, values: dict[str, Any]) -> str:
    """NOTES.txt as `helm install` renders it. Helm prints notes only when it installs
    (which needs a cluster), so a copy of the chart renders them into a ConfigMap with
    `tpl`, under the same values and named templates."""
    chart = tmp_path / "chart"
    if not chart.exists():
        shutil.copytree(CHART, chart)
        shutil.copy(chart / "templates/NOTES.txt", chart / "files/NOTES.txt")
        (chart / "templates/notes-for-test.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
            'data: {notes: {{ tpl (.Files.Get "files/NOTES.txt") . | quote }}}\n'
        )
    result = helm_template(
        helm(),
        chart,
        "--namespace",
        "ops",
        "--show-only",
        "templates/notes-for-test.yaml",
        "-f",
        str(values_file(tmp_path, values)),
    )
    return str(yaml.safe_load(result.stdout)["data"]["notes"])


def test_notes_say_what_runs_and_how_to_read_the_metrics(tmp_path: Path) -> None:
    reader = {"namespace": "monitoring", "name": "prometheus"}
    notes = _notes(tmp_path, {"metrics": {"readers": [reader]}, "agent": {"enabled": True}})
    assert "Deployment wukong, 2 replica(s)" in notes
    assert "Service wukong-webhook" in notes
    assert "DaemonSet wukong-agent" in notes
    assert "kubectl get wukongs -A" in notes
    assert "helm test wukong -n ops" in notes
    assert "metrics.readers" in notes and "monitoring/prometheus" in notes
    assert "kubectl create token prometheus -n monitoring" in notes
    assert 'curl -sk -H "Authorization: Bearer $TOKEN" https://localhost:8080/metrics' in notes

    plain = _notes(tmp_path, {"metrics": {"secure": False}, "webhook": {"enabled": False}})
    assert "no webhook" in plain and "agent" not in plain
    assert "curl -s http://localhost:8080/metrics" in plain and "TOKEN" not in plain
    unset = _notes(tmp_path, {})
    assert "(none yet: add your Prometheus's account" in unset


# --- Certificates --------------------------------------------------------------------


def _checksum(objects: Objects) -> str | None:
    annotations = _deployment(objects)["spec"]["template"]["metadata"]["annotations"]
    checksum = annotations.get("checksum/webhook-cert")
    return None if checksum is None else str(checksum)


def test_the_pods_roll_with_each_certificate_the_chart_makes(tmp_path: Path) -> None:
    first, second = _render(tmp_path, {}), _render(tmp_path, {})
    for objects in (first, second):
        data = _of_kind(objects, "Secret")["wukong-webhook-cert"]["data"]
        (webhook,) = _of_kind(objects, "ValidatingWebhookConfiguration")["wukong"]["webhooks"]
        # One certificate per render: the Secret, the caBundle and the checksum agree.
        assert webhook["clientConfig"]["caBundle"] == data["ca.crt"]
        expected = "\n".join(data[key] for key in ("ca.crt", "tls.crt", "tls.key"))
        assert _checksum(objects) == hashlib.sha256(expected.encode()).hexdigest()
    # No cluster to look the Secret up in (`helm template`, GitOps): a new CA each
    # render, so the pods' template changes with the caBundle and they roll.
    assert _checksum(first) != _checksum(second)


def test_a_secret_made_elsewhere_rolls_nothing(tmp_path: Path) -> None:
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n...").decode()
    values = {"webhook": {"existingSecret": "mine", "caBundle": ca}}
    first, second = _render(tmp_path, values), _render(tmp_path, values)
    assert first == second  # stable: nothing generated
    assert _checksum(first) is None  # the operator reloads the files instead
    assert not _of_kind(first, "Secret")
    (webhook,) = _of_kind(first, "ValidatingWebhookConfiguration")["wukong"]["webhooks"]
    assert webhook["clientConfig"]["caBundle"] == ca
    volumes = _deployment(first)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "webhook-certs", "secret": {"secretName": "mine"}} in volumes


def test_cert_manager_issues_the_certificate_and_injects_the_ca(tmp_path: Path) -> None:
    objects = _render(tmp_path, {"webhook": {"certManager": {"enabled": True}}})
    configuration = _of_kind(objects, "ValidatingWebhookConfiguration")["wukong"]
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "ops/wukong-webhook"
    }
    (webhook,) = configuration["webhooks"]
    assert "caBundle" not in webhook["clientConfig"]  # the injector owns it
    certificate = _of_kind(objects, "Certificate")["wukong-webhook"]
    assert certificate["metadata"]["namespace"] == "ops"
    assert certificate["spec"] == {
        "secretName": "wukong-webhook-cert",
        "dnsNames": ["wukong-webhook.ops.svc", "wukong-webhook.ops.svc.cluster.local"],
        "issuerRef": {"kind": "Issuer", "name": "wukong-selfsigned"},
    }
    assert _of_kind(objects, "Issuer")["wukong-selfsigned"]["spec"] == {"selfSigned": {}}
    assert not _of_kind(objects, "Secret")  # cert-manager writes it
    assert _checksum(objects) is None
    volumes = _deployment(objects)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "webhook-certs", "secret": {"secretName": "wukong-webhook-cert"}} in volumes

    issuer = {"kind": "ClusterIssuer", "name": "corporate-ca"}
    signed = _render(tmp_path, {"webhook": {"certManager": {"enabled": True, "issuerRef": issuer}}})
    assert _of_kind(signed, "Certificate")["wukong-webhook"]["spec"]["issuerRef"] == issuer
    assert not _of_kind(signed, "Issuer")


def test_cert_manager_can_inject_from_a_certificate_made_elsewhere(tmp_path: Path) -> None:
    values = {
        "webhook": {
            "existingSecret": "webhook-tls",
            "certManager": {"enabled": True, "injectCAFrom": "certs/wukong-webhook"},
        }
    }
    objects = _render(tmp_path, values)
    configuration = _of_kind(objects, "ValidatingWebhookConfiguration")["wukong"]
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "certs/wukong-webhook"
    }
    assert not _of_kind(objects, "Certificate") and not _of_kind(objects, "Issuer")
    volumes = _deployment(objects)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "webhook-certs", "secret": {"secretName": "webhook-tls"}} in volumes


# --- helm test -------------------------------------------------------------------------


def test_helm_test_checks_readiness_and_the_webhook_with_least_privilege(tmp_path: Path) -> None:
    objects = _render(tmp_path, {})
    hooks = [o for o in objects if (o["metadata"].get("annotations") or {}).get("helm.sh/hook")]
    assert {o["metadata"]["annotations"]["helm.sh/hook"] for o in hooks} == {"test"}
    pod = _of_kind(hooks, "Pod")["wukong-helm-test"]
    (container,) = pod["spec"]["containers"]
    (operator,) = _deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == operator["image"]
    assert container["imagePullPolicy"] == operator["imagePullPolicy"]
    assert pod["spec"]["restartPolicy"] == "Never"
    (script,) = container["args"]
    compile(script, "helm-test", "exec")  # the rendered script is Python
    assert f":{_ports(_deployment(objects))['health']}/readyz" in script
    assert "?dryRun=All" in script and "storageClassName" in script
    # Its account may list pods and create Wukongs (as dry runs), nothing else.
    rules = sorted(
        (rule["resources"], rule["verbs"])
        for role in _of_kind(hooks, "Role").values()
        for rule in role["rules"]
    )
    assert rules == [(["pods"], ["list"]), (["wukongs"], ["create"])]
    for binding in _of_kind(hooks, "RoleBinding").values():
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "wukong-helm-test", "namespace": "ops"}
        ]
    # RBAC first, the pod after; all kept when the test fails, for its logs.
    for hook in hooks:
        annotations = hook["metadata"]["annotations"]
        weight = int(annotations.get("helm.sh/hook-weight", "0"))
        assert weight == (0 if hook["kind"] == "Pod" else -1), hook["kind"]
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"


def test_helm_test_without_the_webhook_checks_readiness_only(tmp_path: Path) -> None:
    objects = _render(tmp_path, {"webhook": {"enabled": False}})
    pod = _of_kind(objects, "Pod")["wukong-helm-test"]
    (script,) = pod["spec"]["containers"][0]["args"]
    compile(script, "helm-test", "exec")
    assert "/readyz" in script and "dryRun" not in script
    assert "wukong-helm-test-wukongs" not in _of_kind(objects, "Role")


def test_helm_test_tries_the_watched_namespace(tmp_path: Path) -> None:
    objects = _render(tmp_path, {"operator": {"watchNamespace": "vms"}})
    role = _of_kind(objects, "Role")["wukong-helm-test-wukongs"]
    assert role["metadata"]["namespace"] == "vms"
    (script,) = _of_kind(objects, "Pod")["wukong-helm-test"]["spec"]["containers"][0]["args"]
    assert 'WUKONGS.path(namespace="vms")' in script


# --- webhook answers on error ------------------------------------------------------


def test_admitting_on_error_is_an_explicit_value(tmp_path: Path) -> None:
    def args(values: dict[str, Any]) -> list[str]:
        (container,) = _deployment(_render(tmp_path, values))["spec"]["template"]["spec"][
            "containers"
        ]
        return list(container["args"])

    assert "--webhook-admit-on-error" not in args({})
    assert "--webhook-admit-on-error" in args({"webhook": {"admitOnError": True}})
