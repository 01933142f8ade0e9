"""Rendering the chart with the real helm, and the monitoring CRDs for server-side checks."""

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests import build_progress
from wukong.deploy.chart import CHART_DIR, helm_template
from wukong.devcluster import binaries

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / CHART_DIR
# prometheus-operator's own CRDs (ServiceMonitor, PodMonitor, PrometheusRule), from the
# Go module proxy at this release, so the chart's monitors are checked against the real ones.
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
MONITORING_CRDS = ("servicemonitors", "podmonitors", "prometheusrules")

EVERYTHING_ON: dict[str, Any] = {
    "tracing": {"endpoint": "http://otel-collector.observability:4317"},
    "agent": {"enabled": True},
    "metrics": {"readers": [{"namespace": "monitoring", "name": "prometheus"}]},
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True, "tokenSecret": {"name": "prometheus-token"}},
        "prometheusRule": {"enabled": True},
        "dashboards": {"enabled": True},
    },
    "networkPolicy": {"enabled": True, "webhookFromCIDRs": ["10.0.0.0/8"]},
}


def helm() -> Path:
    return binaries.helm_binary(progress=build_progress.progress)  # built on first use


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def render(*args: str) -> list[dict[str, Any]]:
    """The chart's objects for `helm template` arguments (e.g. -f, --namespace)."""
    result = helm_template(helm(), CHART, *args)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def monitoring_crds() -> list[Path]:
    """Paths of the real monitoring CRDs, downloaded once into the Go module cache."""
    listing = subprocess.run(
        ["go", "mod", "download", "-json", PROMETHEUS_OPERATOR],
        capture_output=True,
        text=True,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
        cwd=REPO,
        check=True,
    )
    module_dir = Path(json.loads(listing.stdout)["Dir"])
    crd_dir = module_dir / "example/prometheus-operator-crd"
    return [crd_dir / f"monitoring.coreos.com_{name}.yaml" for name in MONITORING_CRDS]
