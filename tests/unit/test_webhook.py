"""The webhook's pieces that need no API server: durations, deadlines, answers."""

import ssl
from pathlib import Path

import pytest

from wukong.devcluster.pki import ensure_pki, ensure_webhook_certificate
from wukong.operator.run import OperatorSettings, _webhook_tls
from wukong.runtime import Admission
from wukong.runtime._webhook import parse_go_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("2.5s", 2.5), ("1m30s", 90.0), ("500ms", 0.5), ("1h0m0s", 3600.0)],
)
def test_go_durations_as_the_api_server_sends_timeout(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "10x", "1m 30s", "-1s"])
def test_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_go_duration(text)


def test_admissions_carry_their_reason_and_warnings() -> None:
    assert Admission.allow() == Admission(True, "Allowed", "", ())
    unverified = Admission.allow("a", "b", reason="Unverified")
    assert (unverified.message, unverified.warnings) == ("a; b", ("a", "b"))
    denied = Admission.deny("StorageClassNotFound", "spec.disks[0].storageClassName: ...")
    assert not denied.allowed


def test_webhook_bind_0_turns_the_webhook_off_even_with_a_certificate(tmp_path: Path) -> None:
    certs = ensure_webhook_certificate(ensure_pki(tmp_path / "pki"), tmp_path / "certs")
    served = OperatorSettings(webhook_bind="127.0.0.1:0", webhook_cert_dir=certs)
    assert isinstance(_webhook_tls(served), ssl.SSLContext)
    assert _webhook_tls(OperatorSettings(webhook_bind="0", webhook_cert_dir=certs)) is None
