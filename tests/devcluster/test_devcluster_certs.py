"""The generated PKI: every leaf chains to its CA with the identity components expect."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devcluster import certs
from devcluster.network import KUBERNETES_SERVICE_IP


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> certs.Pki:
    return certs.generate(tmp_path_factory.mktemp("pki"))


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _verify(leaf: x509.Certificate, ca: x509.Certificate) -> None:
    # Raises InvalidSignature when the leaf was not signed by this CA.
    ca.public_key().verify(leaf.signature, leaf.tbs_certificate_bytes,
                           ec.ECDSA(leaf.signature_hash_algorithm))


def test_serving_cert_covers_loopback_and_service_names(pki: certs.Pki) -> None:
    cert = _load(pki.crt("apiserver"))
    _verify(cert, _load(pki.crt("ca")))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address(KUBERNETES_SERVICE_IP) in san.get_values_for_type(x509.IPAddress)
    assert {"localhost", "kubernetes.default.svc"} <= set(san.get_values_for_type(x509.DNSName))
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


@pytest.mark.parametrize(
    ("stem", "user", "groups"),
    [
        ("admin", "bem-devcluster-admin", ["system:masters"]),
        ("kube-controller-manager", "system:kube-controller-manager", []),
        ("kube-scheduler", "system:kube-scheduler", []),
    ],
)
def test_client_identities(pki: certs.Pki, stem: str, user: str, groups: list[str]) -> None:
    cert = _load(pki.crt(stem))
    _verify(cert, _load(pki.crt("ca")))
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == user
    assert [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == groups
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_front_proxy_client_is_signed_by_its_own_ca(pki: certs.Pki) -> None:
    client = _load(pki.crt("front-proxy-client"))
    _verify(client, _load(pki.crt("front-proxy-ca")))
    with pytest.raises(Exception):  # noqa: B017 - any signature failure
        _verify(client, _load(pki.crt("ca")))


def test_private_keys_are_private(pki: certs.Pki) -> None:
    for key in [pki.sa_key, pki.key("ca"), pki.key("admin")]:
        assert key.stat().st_mode & 0o077 == 0, key
    assert pki.sa_pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
