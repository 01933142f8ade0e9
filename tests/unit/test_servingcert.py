"""Where serving certificates come from, and the self-signed one a secure /metrics makes."""

import asyncio
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from wukong.runtime.serving import (
    CertificateError,
    certificate_dir,
    load_serving_certificate,
    self_signed_context,
)


def test_the_flag_wins_then_the_default_directory_if_it_has_a_certificate(
    tmp_path: Path,
) -> None:
    flag, default = tmp_path / "flag", tmp_path / "default"
    default.mkdir()
    assert certificate_dir(flag, default=default) == flag
    assert certificate_dir(None, default=default) is None
    (default / "tls.crt").write_text("")
    assert certificate_dir(None, default=default) is None  # the key is missing
    (default / "tls.key").write_text("")
    assert certificate_dir(None, default=default) == default


def test_an_unloadable_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=f"cannot load tls.crt and tls.key from {tmp_path}"):
        load_serving_certificate(tmp_path)


async def test_the_self_signed_certificate_serves_tls_for_localhost() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(
        answer, "127.0.0.1", 0, ssl=self_signed_context("wukong-metrics")
    )
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE  # what scrapers do with a self-signed certificate
    async with server:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
    certificate = x509.load_der_x509_certificate(der)
    assert certificate.subject == certificate.issuer  # signed by itself
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
