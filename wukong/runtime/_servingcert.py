"""Serving certificates for the endpoints a manager serves over TLS.

Two sources, as in controller-runtime:
- a directory holding `tls.crt` and `tls.key` (its `CertDir`; in a cluster, a
  Secret the chart mounts, or one cert-manager issues);
- a self-signed certificate made at start, for localhost and 127.0.0.1, when
  there is no such directory (the metrics endpoint's default: what matters
  there is that the traffic, bearer tokens included, is encrypted; scrapers
  skip verification, as kubebuilder's ServiceMonitor does).
The admission webhook needs the first: the API server verifies it against the
webhook configuration's caBundle.
"""

import datetime
import ipaddress
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
_SELF_SIGNED_VALIDITY = datetime.timedelta(days=365)


class CertificateError(Exception):
    """A certificate directory whose tls.crt and tls.key cannot be loaded."""


def load_serving_certificate(cert_dir: Path) -> ssl.SSLContext:
    """A TLS server context from `cert_dir`/tls.crt and tls.key (controller-runtime's CertDir)."""
    context = _server_context()
    try:
        context.load_cert_chain(str(cert_dir / CERT_FILE), str(cert_dir / KEY_FILE))
    except (OSError, ssl.SSLError) as exc:
        message = f"cannot load {CERT_FILE} and {KEY_FILE} from {cert_dir}: {exc}"
        raise CertificateError(message) from exc
    return context


def certificate_dir(explicit: Path | None, *, default: Path) -> Path | None:
    """Where the certificate is: `explicit` when given (a --*-cert-dir flag), else
    `default` when it holds one, else None."""
    if explicit is not None:
        return explicit
    if (default / CERT_FILE).is_file() and (default / KEY_FILE).is_file():
        return default
    return None


def self_signed_context(common_name: str) -> ssl.SSLContext:
    """A TLS server context with a new key and a certificate signed by itself.

    The key never leaves this process: `ssl` loads certificates only from
    files, so they are written to a private temporary directory that is gone
    before this returns.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # a little clock skew
        .not_valid_after(now + _SELF_SIGNED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    context = _server_context()
    with tempfile.TemporaryDirectory(prefix="wukong-cert-") as directory:  # mode 0700
        cert_path, key_path = Path(directory, CERT_FILE), Path(directory, KEY_FILE)
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context.load_cert_chain(str(cert_path), str(key_path))
    return context


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
