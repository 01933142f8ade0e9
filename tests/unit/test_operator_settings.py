"""What `wukong run`'s settings decide: workers per namespace, whether the webhook is served."""

import ssl
from pathlib import Path

import pytest

from wukong.devcluster.pki import ensure_pki, ensure_webhook_certificate
from wukong.operator.run import OperatorSettings, _webhook_tls


@pytest.mark.parametrize(
    ("workers", "given", "limit"),
    [(4, None, 2), (5, None, 3), (1, None, 1), (4, 4, 4), (8, 1, 1)],
)
def test_one_namespace_gets_half_the_workers_unless_told(
    workers: int, given: int | None, limit: int
) -> None:
    settings = OperatorSettings(
        max_concurrent_reconciles=workers, max_concurrent_reconciles_per_namespace=given
    )
    assert settings.per_namespace_limit == limit


def test_webhook_bind_0_turns_the_webhook_off_even_with_a_certificate(tmp_path: Path) -> None:
    certs = ensure_webhook_certificate(ensure_pki(tmp_path / "pki"), tmp_path / "certs")
    served = OperatorSettings(webhook_bind="127.0.0.1:0", webhook_cert_dir=certs)
    assert isinstance(_webhook_tls(served), ssl.SSLContext)
    assert _webhook_tls(OperatorSettings(webhook_bind="0", webhook_cert_dir=certs)) is None
