"""Certificates and keys for the local control plane, generated in Python.

One CA signs the API server's serving certificate and an admin client
certificate (group `system:masters`, so RBAC lets it do anything); a separate
RSA key pair signs service-account tokens. Files are written once per state
directory and reused, so restarting the cluster keeps existing kubeconfigs valid.
"""

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=365)
# First address of --service-cluster-ip-range: the in-cluster `kubernetes` Service.
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/24"
_KUBERNETES_SERVICE_IP = "10.96.0.1"


@dataclass(frozen=True)
class Pki:
    """Paths of the generated PKI files."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.directory / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.directory / "admin.key"

    @property
    def service_account_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.directory / "sa.pub"

    def all_files(self) -> list[Path]:
        return [
            self.ca_cert,
            self.ca_key,
            self.serving_cert,
            self.serving_key,
            self.admin_cert,
            self.admin_key,
            self.service_account_key,
            self.service_account_pub,
        ]


def ensure_pki(directory: Path, *, extra_ips: tuple[str, ...] = ()) -> Pki:
    """Create the PKI under `directory` unless a complete one is already there.

    `extra_ips` are more addresses the serving certificate must name (the dev
    node reaches the API server at its link's host address); a serving
    certificate that lacks one is reissued by the same CA, so kubeconfigs stay valid.
    """
    pki = Pki(directory)
    if all(path.is_file() for path in pki.all_files()):
        if not extra_ips or not set(extra_ips) - _serving_ips(pki):
            return pki
        ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        _write_serving_cert(pki, ca_key, ca_cert, extra_ips)
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wukong-dev-ca")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_serving_cert(pki, ca_key, ca_cert, extra_ips)

    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin_cert = (
        _builder(_name("wukong-admin", "system:masters"), ca_cert.subject, admin_key.public_key())
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.ca_cert, ca_cert)
    _write_key(pki.admin_key, admin_key)
    _write_cert(pki.admin_cert, admin_cert)
    _write_key(pki.service_account_key, sa_key)
    pki.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def _serving_ips(pki: Pki) -> set[str]:
    cert = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}


def _write_serving_cert(
    pki: Pki,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    extra_ips: tuple[str, ...],
) -> None:
    serving_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName(name)
        for name in (
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
    ]
    sans += [
        x509.IPAddress(ipaddress.ip_address(ip))
        for ip in ("127.0.0.1", _KUBERNETES_SERVICE_IP, *extra_ips)
    ]
    serving_cert = (
        _builder(_name("kube-apiserver"), ca_cert.subject, serving_key.public_key())
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.serving_key, serving_key)
    _write_cert(pki.serving_cert, serving_cert)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def ensure_webhook_certificate(pki: Pki, directory: Path) -> Path:
    """A serving certificate for an admission webhook on this machine, signed by `pki`'s CA.

    Written as `tls.crt` and `tls.key` in `directory` (controller-runtime's
    CertDir layout, what `wukong run --webhook-cert-dir` reads), for
    `localhost` and 127.0.0.1; the API server trusts it through a `caBundle`
    holding `pki.ca_cert`. Kept once written. Returns `directory`.
    """
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    if cert_path.is_file() and key_path.is_file():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        _builder(_name("wukong-webhook"), ca_cert.subject, key.public_key())
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return directory


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # Backdated a little so a clock skew of seconds does not reject it.
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
