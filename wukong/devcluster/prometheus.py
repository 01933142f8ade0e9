"""A real Prometheus scraping local targets, for tests and the demo.

`LocalPrometheus` writes a scrape config for the given targets (1 s interval,
so a short test gathers enough samples) and any further scrape jobs, starts
`prometheus` (Debian's package unless another binary is given) with exemplar
storage enabled on a free loopback port with its data in a temporary
directory, waits for `/-/ready`, and offers the HTTP API's queries (instant,
range, exemplars), its targets and rules. `stop()` terminates it and removes its data.

It can run behind a command prefix (e.g. `nsenter` into the dev node's network
namespace, where the pods are; see `node_prometheus`), listening on an
address of that namespace the host can reach.
"""

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from wukong.devcluster.errors import DevClusterError
from wukong.devcluster.processes import free_port

# Never through an http_proxy from the environment: the address is local (or the node's).
_open = urllib.request.build_opener(urllib.request.ProxyHandler({})).open


def write_config(
    path: Path,
    *,
    scrape_configs: list[dict[str, Any]],
    rule_files: list[Path],
    scrape_interval: str = "1s",
) -> None:
    """prometheus.yml: the scrape jobs and rule files, scraped and evaluated every interval."""
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(rules) for rules in rule_files],
        "scrape_configs": scrape_configs,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))


def server_argv(binary: str, *, config: Path, data: Path, listen: str) -> list[str]:
    """The command line of a Prometheus server with its data in `data`."""
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address={listen}",
        "--enable-feature=exemplar-storage",
    ]


def is_ready(url: str) -> bool:
    """True once the Prometheus at `url` answers /-/ready."""
    try:
        with _open(f"{url}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class LocalPrometheus:
    def __init__(
        self,
        *,
        targets: list[str] | None = None,
        job: str = "wukong",
        labels: dict[str, str] | None = None,
        rule_files: list[Path] | None = None,
        scrape_interval: str = "1s",
        scrape_configs: list[dict[str, Any]] | None = None,
        binary: Path | None = None,
        command_prefix: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        """`targets` (a file-discovered job named `job`) and/or `scrape_configs`; `port`
        defaults to a free one on `host` (give one when `host` is not the host's own)."""
        self._dir = Path(tempfile.mkdtemp(prefix="wukong-prometheus-"))
        self._binary = binary
        self._command_prefix = tuple(command_prefix)
        self._listen = f"{host}:{port if port is not None else free_port(host)}"
        self.url = f"http://{self._listen}"
        self.log_file = self._dir / "prometheus.log"
        self._targets_file = self._dir / "targets.json"
        jobs = list(scrape_configs or [])
        if targets is not None:
            self.set_targets(targets, labels=labels or {})
            # A file Prometheus watches: targets can change while it runs.
            jobs.insert(
                0, {"job_name": job, "file_sd_configs": [{"files": [str(self._targets_file)]}]}
            )
        write_config(
            self._dir / "prometheus.yml",
            scrape_configs=jobs,
            rule_files=rule_files or [],
            scrape_interval=scrape_interval,
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def set_targets(self, targets: list[str], *, labels: dict[str, str]) -> None:
        """Scrape `targets` with `labels` from now on (a new `pod` label: a new series, as
        when a pod is replaced)."""
        staged = self._targets_file.with_suffix(".tmp")
        staged.write_text(json.dumps([{"targets": targets, "labels": labels}]))
        staged.replace(self._targets_file)  # atomic: Prometheus never reads half a file

    def start(self, *, timeout: float = 30.0) -> None:
        binary = str(self._binary) if self._binary else shutil.which("prometheus")
        if binary is None:
            raise DevClusterError("prometheus is not installed (run `make setup`)")
        with self.log_file.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    *self._command_prefix,
                    *server_argv(
                        binary,
                        config=self._dir / "prometheus.yml",
                        data=self._dir / "data",
                        listen=self._listen,
                    ),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DevClusterError(f"prometheus exited at start; log: {self.log_file}")
            if is_ready(self.url):
                return
            time.sleep(0.2)
        raise DevClusterError(f"prometheus not ready after {timeout:.0f}s; log: {self.log_file}")

    def start_again_if_gone(self) -> None:
        """Start again, on the same data, unless it answers: a Prometheus in a network
        namespace is cut off when the node that made the namespace goes down and up."""
        if is_ready(self.url):
            return
        self._end_process()
        self.start()

    def stop(self) -> None:
        self._end_process()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _end_process(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def _get(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with _open(url, timeout=10) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise DevClusterError(f"prometheus query failed: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (or matrix) as a list."""
        data = self._get("/api/v1/query", {"query": expr})
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(
        self, expr: str, *, start: float, end: float, step: float = 1.0
    ) -> list[dict[str, Any]]:
        """Range query: one entry per series, `values` a list of [time, "value"]."""
        data = self._get(
            "/api/v1/query_range",
            {"query": expr, "start": str(start), "end": str(end), "step": str(step)},
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets: labels, scrapeUrl, health, lastError."""
        active: list[dict[str, Any]] = self._get("/api/v1/targets", {"state": "active"})[
            "activeTargets"
        ]
        return active

    def rules(self) -> list[dict[str, Any]]:
        """The loaded rule groups, each with its rules' health and last evaluation."""
        groups: list[dict[str, Any]] = self._get("/api/v1/rules", {})["groups"]
        return groups

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts pending or firing now: labels, state, activeAt."""
        alerts: list[dict[str, Any]] = self._get("/api/v1/alerts", {})["alerts"]
        return alerts

    def exemplars(self, expr: str, *, seconds: float = 600) -> list[dict[str, Any]]:
        now = time.time()
        data = self._get(
            "/api/v1/query_exemplars",
            {"query": expr, "start": str(now - seconds), "end": str(now)},
        )
        return list(data)
