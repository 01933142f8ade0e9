"""Prometheus' HTTP API, read-only: instant queries and the alerts it evaluates."""

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

from wukong.errors import UserError


class CannotTell(UserError):
    """The telemetry needed for a diagnosis cannot be read (or holds nothing to read)."""


class Queries(Protocol):
    """Anything that answers a PromQL instant query with the API's `result` list."""

    def query(self, expr: str) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Alert:
    name: str
    state: str  # "firing" or "pending"
    labels: dict[str, str]
    active_at: str  # RFC 3339, when it became pending

    def describe(self) -> str:
        return f"{self.name} ({self.state})"


class PrometheusAPI:
    """Prometheus at `url` (e.g. http://prometheus:9090), over its HTTP API."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        # Never through an http_proxy from the environment: SREs port-forward.
        self._open = urllib.request.build_opener(urllib.request.ProxyHandler({})).open

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = f"{self.url}{path}"
        if params:
            url += f"?{urllib.parse.urlencode(params)}"
        try:
            with self._open(url, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise CannotTell(f"Prometheus at {self.url} answered {exc.code}: {detail}") from None
        except (OSError, ValueError) as exc:
            raise CannotTell(f"Prometheus at {self.url} cannot be read: {exc}") from None
        if answer.get("status") != "success":
            raise CannotTell(f"Prometheus at {self.url}: {answer.get('error', answer)}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector (each item's `metric` and `value`)."""
        data = self._get("/api/v1/query", {"query": expr})
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
        return result

    def scalar(self, expr: str) -> float | None:
        """The first sample of an instant query, None when it has none (or NaN)."""
        result = self.query(expr)
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if value != value else value

    def alerts(self) -> list[Alert]:
        """The alerts pending or firing now, as the rules evaluated them last."""
        return [
            Alert(
                name=item["labels"].get("alertname", "?"),
                state=item.get("state", "?"),
                labels=dict(item["labels"]),
                active_at=item.get("activeAt", ""),
            )
            for item in self._get("/api/v1/alerts")["alerts"]
        ]
