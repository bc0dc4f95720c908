"""The API layer's request handling, against a stub transport (the e2e tier uses a real one)."""
from __future__ import annotations

import json
from typing import Any

import pytest

from bem_operator.k8s import ApiError, KubeApi, object_path


class Response:
    def __init__(self, status: int, body: Any, reason: str = "") -> None:
        self.status, self.reason = status, reason
        self._raw = body if isinstance(body, bytes) else json.dumps(body).encode()

    def read(self) -> bytes:
        return self._raw


class StubClient:
    def __init__(self, *responses: Response) -> None:
        self.responses = list(responses)
        self.calls: list[tuple[str, str, Any, dict[str, str]]] = []

    def param_serialize(self, method: str, resource_path: str, query_params: list[tuple[str, str]],
                        header_params: dict[str, str], body: Any,
                        auth_settings: list[str]) -> tuple[Any, ...]:
        query = "&".join(f"{k}={v}" for k, v in query_params)
        return method, f"{resource_path}?{query}", header_params, body, None

    def call_api(self, method: str, url: str, header_params: dict[str, str], body: Any,
                 _request_timeout: float) -> Response:
        self.calls.append((method, url, body, header_params))
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


def test_the_client_keeps_a_connection_per_thread_that_sends(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    # $KUBECONFIG is read when the client is imported: point its default there instead
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION",
                        str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    api = KubeApi.from_environment(connections=18)
    assert api._api.rest_client.pool_manager.connection_pool_kw["maxsize"] == 18
