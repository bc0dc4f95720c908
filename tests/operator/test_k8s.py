"""The API layer's request handling, against a stub transport (the e2e tier uses a real one),
and where its credentials come from."""
from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from bem_operator import k8s
from bem_operator.k8s import (ApiError, Credentials, CredentialsError, KubeApi, Transport,
                              credentials, object_path)


class Response:
    def __init__(self, status: int, body: Any, reason: str = "") -> None:
        self.status, self.reason = status, reason
        self.data = body if isinstance(body, bytes) else json.dumps(body).encode()


class StubClient:
    def __init__(self, *responses: Response) -> None:
        self.responses = list(responses)
        self.calls: list[tuple[str, str, Any, dict[str, str]]] = []

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
             timeout: Any, stream: bool = False) -> Response:
        self.calls.append((method, url, None if body is None else json.loads(body), headers))
        return self.responses.pop(0)


def test_object_paths() -> None:
    assert object_path("v1", "Service", "ns", "x") == "/api/v1/namespaces/ns/services/x"
    assert object_path("apps/v1", "Deployment", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert object_path("v1", "Pod", None) == "/api/v1/pods"  # every namespace
    with pytest.raises(ValueError, match="Namespace"):
        object_path("v1", "Namespace", "ns", "x")


def test_apply_is_server_side_with_our_manager_and_reports_creation() -> None:
    stub = StubClient(Response(201, {"metadata": {"name": "x"}}), Response(200, {"metadata": {}}))
    api = KubeApi(stub)  # type: ignore[arg-type]
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "namespace": "ns"}}
    assert api.apply(obj)[1] is True
    assert api.apply(obj)[1] is False
    method, url, _, headers = stub.calls[0]
    assert method == "PATCH" and headers["Content-Type"] == "application/apply-patch+yaml"
    assert "fieldManager=bem-operator" in url and "force=true" in url


def test_errors_carry_the_server_message() -> None:
    api = KubeApi(StubClient(Response(422, {"message": "spec.ports: Required value"}),  # type: ignore[arg-type]
                             Response(404, b"404 page not found"), Response(404, {})))
    with pytest.raises(ApiError, match="spec.ports: Required value") as info:
        api.get("v1", "Service", "ns", "x")
    assert info.value.status == 422 and not info.value.retryable
    assert api.has_resource("monitoring.coreos.com/v1", "servicemonitors") is False
    assert api.get("v1", "Service", "ns", "x") is None


@pytest.mark.parametrize(("status", "retryable"), [(0, True), (409, True), (429, True),
                                                    (503, True), (403, False), (422, False)])
def test_retryable_statuses(status: int, retryable: bool) -> None:
    assert ApiError(status, "x").retryable is retryable


def test_delete_with_uid_precondition_tolerates_gone_or_replaced() -> None:
    stub = StubClient(Response(200, {}), Response(404, {}), Response(409, {"message": "uid"}))
    api = KubeApi(stub)  # type: ignore[arg-type]
    assert api.delete("policy/v1", "PodDisruptionBudget", "ns", "x", uid="u1") is True
    assert stub.calls[0][2]["preconditions"] == {"uid": "u1"}
    assert api.delete("policy/v1", "PodDisruptionBudget", "ns", "x", uid="u1") is False
    assert api.delete("policy/v1", "PodDisruptionBudget", "ns", "x", uid="u1") is False


def _kubeconfig(path: Path, user: dict[str, Any], cluster: dict[str, Any] | None = None) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return path


@pytest.fixture
def outside_a_pod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(k8s, "SERVICE_ACCOUNT_DIR", tmp_path / "no-service-account")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config either
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return tmp_path


def test_the_client_keeps_a_connection_per_thread_that_sends(
        outside_a_pod: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(outside_a_pod / "kc", {"token": "t"})))
    api = KubeApi.from_environment(connections=18)
    transport = api._transport
    assert transport.pool.connection_pool_kw["maxsize"] == 18
    assert transport.server == "https://127.0.0.1:6443"
    assert transport._headers()["Authorization"] == "Bearer t"


def test_in_a_pod_the_service_account_and_the_service_address_are_used(
        outside_a_pod: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    account = outside_a_pod / "sa"
    account.mkdir()
    (account / "token").write_text("first\n")
    (account / "namespace").write_text("bem-system")
    monkeypatch.setattr(k8s, "SERVICE_ACCOUNT_DIR", account)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(outside_a_pod / "kc", {"token": "other"})))
    creds = credentials()
    assert creds.info.server == "https://[fd00::1]:443"  # an address: no cluster DNS needed
    assert creds.info.token == "first" and creds.info.default_namespace == "bem-system"
    assert creds.token_file == account / "token"
    # The kubelet rotates the token: read again once a minute, not on every request.
    now = [0.0]
    transport = Transport(creds, clock=lambda: now[0])
    (account / "token").write_text("second")
    assert transport._headers()["Authorization"] == "Bearer first"
    now[0] = k8s.TOKEN_REREAD_SECONDS
    assert transport._headers()["Authorization"] == "Bearer second"


def test_missing_or_unusable_credentials_say_what_to_fix(
        outside_a_pod: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CredentialsError, match="no service account .* and no kubeconfig"):
        credentials()
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(outside_a_pod / "kc", {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}})))
    with pytest.raises(CredentialsError, match="no token, client certificate or password"):
        credentials()
    monkeypatch.setenv("KUBECONFIG", str(outside_a_pod / "missing"))
    with pytest.raises(CredentialsError, match="cannot read the kubeconfig"):
        credentials()


def test_an_insecure_cluster_skips_verification_and_plain_http_has_no_tls(
        outside_a_pod: Path) -> None:
    info = Credentials(k8s.kopf.ConnectionInfo(server="https://127.0.0.1:6443", token="t",
                                               insecure=True))
    pool = Transport(info).pool
    assert pool.connection_pool_kw["ssl_context"].verify_mode == ssl.CERT_NONE
    assert pool.connection_pool_kw["cert_reqs"] == "CERT_NONE"
    plain = Transport(Credentials(k8s.kopf.ConnectionInfo(server="http://127.0.0.1:8080/")))
    assert plain.server == "http://127.0.0.1:8080" and "ssl_context" not in plain.pool.connection_pool_kw
