"""The generated PKI: the chain verifies and the certificates say what kube-apiserver needs."""

import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from wukong.devcluster.pki import ensure_pki


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certificates_chain_to_the_ca_and_carry_the_right_names(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    ca = _load(pki.ca_cert)
    serving = _load(pki.serving_cert)
    admin = _load(pki.admin_cert)

    serving.verify_directly_issued_by(ca)
    admin.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    # RBAC grants system:masters everything: the admin kubeconfig's identity.
    organizations = admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [o.value for o in organizations] == ["system:masters"]
    assert oct(pki.admin_key.stat().st_mode & 0o777) == "0o600"


def test_existing_pki_is_reused(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path).ca_cert.read_bytes()
    assert ensure_pki(tmp_path).ca_cert.read_bytes() == first
