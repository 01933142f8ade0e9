"""The client's transport: the environment's proxy is resolved once, not per request."""

import pytest
from kubernetes_asyncio import client as k8s_client

from wukong.runtime._transport import api_client as _api_client


def _configuration(host: str) -> k8s_client.Configuration:
    configuration = k8s_client.Configuration()
    configuration.host = host
    return configuration


@pytest.mark.parametrize(
    ("no_proxy", "expected"),
    [("", "http://proxy.example:3128"), ("10.96.0.1,.cluster.local", None)],
)
async def test_the_environment_proxy_is_resolved_once_for_the_api_server(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str, expected: str | None
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    api = _api_client(_configuration("https://10.96.0.1:443"), "wukong-test")
    try:
        assert api.configuration.proxy == expected
        # ...so no request looks the environment (or ~/.netrc) up again in a thread.
        assert api.rest_client.pool_manager.trust_env is False
        assert api.user_agent == "wukong-test"
    finally:
        await api.close()
