"""The only module that talks to the Kubernetes API server.

Plain REST over the official client's connection handling: server-side apply
with our own field manager, get, delete with a uid precondition, status patch,
and the few look-ups the reconcile needs. Blocking calls: run them off the loop.
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes import client, config

from bem_operator.builders.kinds import BEMSERVICE, SERVICE_MONITOR, ChildKind, plural_of
from bem_operator.constants import FIELD_MANAGER, HANDOVER_MANAGER
from bem_operator.outage import ConnectionState, error_kind

__all__ = ["ApiError", "KubeApi", "count_request", "object_path", "request_counts"]

# Every request this process's API clients made, by (verb, resource); metrics.py exports it as
# bem_operator_api_requests_total. Process-wide, like the one client, so nothing is wired.
_REQUESTS: Counter[tuple[str, str]] = Counter()
_REQUESTS_LOCK = threading.Lock()


def count_request(method: str, url: str) -> None:
    """Counts one request: verb as the API server names it (GET of a collection is LIST, or
    WATCH with ?watch), resource as plural[/subresource] ("discovery", "version" otherwise)."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    rest = segments[2:] if segments[:1] == ["api"] else segments[3:]  # after the version
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    resource = "/".join(rest[:1] + rest[2:3]) or (
        "discovery" if segments[:1] in (["api"], ["apis"]) else "/".join(segments[:1]))
    verb = method.upper()
    if verb == "GET" and len(rest) == 1:
        verb = "WATCH" if parse_qs(parts.query).get("watch") in (["true"], ["1"]) else "LIST"
    with _REQUESTS_LOCK:
        _REQUESTS[verb, resource] += 1


def request_counts() -> dict[tuple[str, str], int]:
    with _REQUESTS_LOCK:
        return dict(_REQUESTS)


class ApiError(Exception):
    """The API server refused a request; `status` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status in (0, 409, 429) or self.status >= 500


def object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    plural = plural_of(api_version, kind)  # only the registry's kinds (builders/kinds.py)
    if plural is None:
        raise ValueError(f"The operator does not manage {kind} {api_version}")
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class KubeApi:
    """A thin blocking client; one instance is shared by worker threads."""

    def __init__(self, api_client: client.ApiClient, request_timeout: float = 30.0,
                 discovery_ttl: float = 60.0) -> None:
        self._api = api_client
        self._timeout = request_timeout
        self._discovery_ttl = discovery_ttl
        self._discovered: dict[tuple[str, str], tuple[float, bool]] = {}
        # Told of every answer (or its absence): logs an outage once, counts errors by kind.
        self.connection = ConnectionState()

    @classmethod
    def from_environment(cls, request_timeout: float = 30.0) -> KubeApi:
        """In-cluster credentials in a pod, the kubeconfig ($KUBECONFIG) elsewhere."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
        return cls(client.ApiClient(configuration), request_timeout=request_timeout)

    def request(self, method: str, path: str, *, body: Any = None,
                query: list[tuple[str, str]] | None = None,
                content_type: str = "application/json") -> tuple[int, dict[str, Any] | None]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method, url, headers, body, _ = self._api.param_serialize(
            method=method, resource_path=path, query_params=query or [],
            header_params=headers, body=body, auth_settings=["BearerToken"])
        count_request(method, url)
        try:
            response = self._api.call_api(method, url, header_params=headers, body=body,
                                          _request_timeout=self._timeout)
            raw = response.read()
        except client.ApiException as exc:  # transport-level failure (TLS, retries spent)
            self.connection.lost(f"{method} {path}: {exc.reason}")
            raise ApiError(exc.status or 0, str(exc.reason)) from exc
        except Exception as exc:  # urllib3's connection errors, timeouts, OSError
            if not isinstance(exc, OSError) and "urllib3" not in type(exc).__module__:
                raise
            self.connection.lost(f"{type(exc).__name__} on {method} {path}")
            raise ApiError(0, f"{type(exc).__name__}: {exc}") from exc
        if response.status in (502, 503, 504):
            self.connection.lost(f"HTTP {response.status} on {method} {path}", "server")
        else:
            self.connection.ok()
            if response.status >= 400 and response.status != 404:  # 404: "absent", an answer
                self.connection.record_error(error_kind(response.status))
        try:
            data = json.loads(raw) if raw else None
        except ValueError:  # e.g. "404 page not found" from an unknown API group
            data = None
        if response.status >= 400:
            message = data.get("message") if isinstance(data, dict) else None
            raise ApiError(response.status, str(message or raw[:200] or response.reason))
        if data is not None and not isinstance(data, dict):
            raise ApiError(response.status, f"expected a JSON object from {path}")
        return response.status, data

    def apply(self, obj: Mapping[str, Any], *, manager: str = FIELD_MANAGER,
              force: bool = True) -> tuple[dict[str, Any], bool]:
        """Server-side apply; returns the live object and whether it was created."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        query = [("fieldManager", manager), ("force", "true" if force else "false")]
        status, data = self.request("PATCH", path, body=dict(obj), query=query,
                                    content_type="application/apply-patch+yaml")
        assert data is not None
        return data, status == 201

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            _, data = self.request("GET", object_path(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return data

    def delete(self, api_version: str, kind: str, namespace: str, name: str,
               uid: str | None = None) -> bool:
        """Deletes (only the object with `uid` when given); False when already gone."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions",
                                "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", object_path(api_version, kind, namespace, name), body=body)
        except ApiError as exc:
            if exc.status == 404:
                return False
            if exc.status == 409 and uid:  # the name now belongs to another object
                return False
            raise
        return True

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        path = object_path(*BEMSERVICE.key, namespace, name) + "/status"
        self.request("PATCH", path, body={"status": dict(status)},
                     content_type="application/merge-patch+json")

    def get_bemservice(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(*BEMSERVICE.key, namespace, name)

    def pvc_exists(self, namespace: str, name: str) -> bool:
        return self.get("v1", "PersistentVolumeClaim", namespace, name) is not None

    def has_resource(self, group_version: str, plural: str) -> bool:
        """API discovery, cached briefly, so a CRD installed later is noticed."""
        key = (group_version, plural)
        now = time.monotonic()
        cached = self._discovered.get(key)
        if cached and now - cached[0] < self._discovery_ttl:
            return cached[1]
        try:
            _, data = self.request("GET", f"/apis/{group_version}")
            found = any(r.get("name") == plural for r in (data or {}).get("resources", []))
        except ApiError as exc:
            if exc.status not in (403, 404, 503):
                raise
            found = False
        self._discovered[key] = (now, found)
        return found

    def reachable(self) -> bool:
        """Whether the API server answers at all (used to notice the end of an outage)."""
        try:
            self.request("GET", "/version")
        except ApiError as exc:
            return exc.status != 0 and exc.status not in (502, 503, 504)
        return True

    def serves(self, child: ChildKind) -> bool:
        """Whether the cluster serves a child kind (only one with an optional CRD can lack it)."""
        return not child.optional_crd or self.has_resource(child.api_version, child.plural)

    def service_monitor_available(self) -> bool:
        return self.serves(SERVICE_MONITOR)
