"""Certificates and keys of the local control plane, generated with `cryptography`.

ECDSA P-256 everywhere: every Kubernetes component accepts it and it is much
faster to generate than RSA. Everything is valid for 10 days (a dev cluster).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devcluster.network import BRIDGE_IP, KUBERNETES_SERVICE_IP
from devcluster.nodes import REAL_NODE

VALIDITY = dt.timedelta(days=10)
# Pods reach the API server by the `kubernetes` Service's ClusterIP.
SERVING_IPS = ("127.0.0.1", KUBERNETES_SERVICE_IP)
SERVING_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
# The real node's kubelet serves on its InternalIP (the bridge address) with a cert the cluster
# CA signs, so its clients (the API server, metrics-server) can verify it.
KUBELET_SERVING_IPS = (BRIDGE_IP,)
KUBELET_SERVING_DNS = (REAL_NODE,)
# Client identities: file stem -> (common name = user, organisations = groups).
CLIENTS = {
    "admin": ("bem-devcluster-admin", ("system:masters",)),
    "kube-controller-manager": ("system:kube-controller-manager", ()),
    "kube-scheduler": ("system:kube-scheduler", ()),
    # The real node (devcluster/realnode.py): kubelet, kube-proxy (bound to
    # system:node-proxier by default), and the API server's client for kubelet
    # logs/exec (kubelet authorizes it by webhook: system:masters may do all).
    "kubelet": (f"system:node:{REAL_NODE}", ("system:nodes",)),
    "kube-proxy": ("system:kube-proxy", ()),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
}


@dataclass(frozen=True)
class Pki:
    """Paths of the generated files (all under one folder)."""

    root: Path

    def crt(self, stem: str) -> Path:
        return self.root / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.root / f"{stem}.key"

    @property
    def sa_key(self) -> Path:
        return self.root / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.root / "sa.pub"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _make_ca(pki: Pki, stem: str, cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    name = _name(cn)
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    pki.crt(stem).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.key(stem), key)
    return cert, key


def _make_leaf(
    pki: Pki,
    stem: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    subject: x509.Name,
    *,
    server: bool,
    dns: tuple[str, ...] = SERVING_DNS,
    ips: tuple[str, ...] = SERVING_IPS,
) -> None:
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(subject, ca[0].subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca[1], hashes.SHA256())
    pki.crt(stem).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.key(stem), key)


def generate(root: Path) -> Pki:
    """Write the cluster CA, serving cert, client certs, front-proxy pair and SA keys."""
    root.mkdir(parents=True, exist_ok=True)
    pki = Pki(root)
    ca = _make_ca(pki, "ca", "bem-devcluster-ca")
    _make_leaf(pki, "apiserver", ca, _name("kube-apiserver"), server=True)
    _make_leaf(pki, "kubelet-serving", ca, _name(f"system:node:{REAL_NODE}", ("system:nodes",)),
               server=True, dns=KUBELET_SERVING_DNS, ips=KUBELET_SERVING_IPS)
    for stem, (cn, orgs) in CLIENTS.items():
        _make_leaf(pki, stem, ca, _name(cn, orgs), server=False)
    # Aggregated APIs (e.g. a custom-metrics adapter) trust requests proxied by
    # the API server through this separate CA.
    front = _make_ca(pki, "front-proxy-ca", "bem-devcluster-front-proxy-ca")
    _make_leaf(pki, "front-proxy-client", front, _name("front-proxy-client"), server=False)
    sa = _key()
    _write_key(pki.sa_key, sa)
    pki.sa_pub.write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def generate_edge(root: Path, domain: str) -> Pki:
    """The local Gateway's own CA (clients verify the edge with it) and its serving cert for
    `domain` and every name under it (the hosts BEMServices route through the Gateway)."""
    root.mkdir(parents=True, exist_ok=True)
    pki = Pki(root)
    ca = _make_ca(pki, "ca", "bem-devcluster-edge-ca")
    _make_leaf(pki, "edge", ca, _name(f"*.{domain}"), server=True,
               dns=(domain, f"*.{domain}"), ips=())
    return pki
