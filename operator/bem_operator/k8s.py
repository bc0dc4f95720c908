"""The only module that talks to the Kubernetes API server.

Plain REST over the official client's connection handling: server-side apply
with our own field manager, get, delete with a uid precondition, status patch,
and the few look-ups the reconcile needs. Blocking calls: run them off the loop.
"""
from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes import client, config

from bem_operator.builders.kinds import BEMSERVICE, SERVICE_MONITOR, ChildKind, plural_of
from bem_operator.constants import FIELD_MANAGER, HANDOVER_MANAGER
from bem_operator.outage import ConnectionState, error_kind

__all__ = ["ApiError", "KubeApi", "NotLeading", "count_request", "object_path", "request_counts"]
logger = logging.getLogger(__name__)
EVENT_MESSAGE_LIMIT = 1024
# Leader election's own writes (the Lease) are the only ones a standby sends.
_ELECTION_PATH = "/apis/coordination.k8s.io/"
# A list of metadata only (names, uids, versions): what a check of presence needs.
_METADATA_LIST = ("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,"
                  "application/json")

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


class NotLeading(ApiError):
    """A write refused before it left: this replica no longer holds the leader Lease."""

    def __init__(self) -> None:
        super().__init__(0, "this replica is not the leader: it writes nothing")


def object_path(api_version: str, kind: str, namespace: str | None,
                name: str | None = None) -> str:
    """The path of an object, or of its kind in a namespace (every namespace: None)."""
    plural = plural_of(api_version, kind)  # only the registry's kinds (builders/kinds.py)
    if plural is None:
        raise ValueError(f"The operator does not manage {kind} {api_version}")
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/{plural}" if namespace is None \
        else f"{prefix}/namespaces/{namespace}/{plural}"
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
        # Asked before every write: False on a replica that does not hold the leader Lease
        # (or lost it a moment ago), which then writes nothing.
        self.may_write: Callable[[], bool] = lambda: True
        self.on_apply: Callable[[str], None] = lambda kind: None  # counts child applies
        self.identity = "bem-operator"  # reportingInstance of the events it posts

    def identify(self, identity: str, user_agent: str) -> None:
        """Names this replica in the events it posts and in every request (the audit log)."""
        self.identity = identity
        self._api.user_agent = user_agent

    @classmethod
    def from_environment(cls, request_timeout: float = 30.0, connections: int = 10) -> KubeApi:
        """In-cluster credentials in a pod, the kubeconfig ($KUBECONFIG) elsewhere. Keeps up to
        `connections` open (one per thread that sends requests at once): the client's default
        (5 per CPU) is less than the workers on a small node, and a connection beyond the pool
        is closed after one request, so the next one pays a new TLS handshake."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = connections
        return cls(client.ApiClient(configuration), request_timeout=request_timeout)

    def _send(self, method: str, path: str, *, body: Any = None,
              query: list[tuple[str, str]] | None = None,
              content_type: str = "application/json", accept: str = "application/json",
              timeout: float | tuple[float, float] | None = None) -> Any:
        """Sends one request; returns its response unread (its `.response` is urllib3's,
        whose body can be streamed). A transport failure is ApiError 0."""
        if method != "GET" and not self.may_write() and not path.startswith(_ELECTION_PATH):
            raise NotLeading()
        headers = {"Accept": accept, "Content-Type": content_type}
        method, url, headers, body, _ = self._api.param_serialize(
            method=method, resource_path=path, query_params=query or [],
            header_params=headers, body=body, auth_settings=["BearerToken"])
        count_request(method, url)
        try:
            return self._api.call_api(method, url, header_params=headers, body=body,
                                      _request_timeout=timeout or self._timeout)
        except Exception as exc:
            raise self._transport_error(exc, method, path) from exc

    def _transport_error(self, exc: Exception, method: str, path: str) -> ApiError:
        """The ApiError of a request that got no answer (TLS, retries spent, urllib3's
        connection errors, timeouts, OSError); anything else is a bug, raised as it is."""
        if isinstance(exc, client.ApiException):
            self.connection.lost(f"{method} {path}: {exc.reason}")
            return ApiError(exc.status or 0, str(exc.reason))
        if not isinstance(exc, OSError) and "urllib3" not in type(exc).__module__:
            raise exc
        self.connection.lost(f"{type(exc).__name__} on {method} {path}")
        return ApiError(0, f"{type(exc).__name__}: {exc}")

    def _answered(self, method: str, path: str, status: int, raw: bytes,
                  reason: str) -> dict[str, Any] | None:
        """Tells the connection state of an answer; returns its JSON body, or raises the
        ApiError of a refusal."""
        if status in (502, 503, 504):
            self.connection.lost(f"HTTP {status} on {method} {path}", "server")
        else:
            self.connection.ok()
            if status >= 400 and status != 404:  # 404: "absent", an answer
                self.connection.record_error(error_kind(status))
        try:
            data = json.loads(raw) if raw else None
        except ValueError:  # e.g. "404 page not found" from an unknown API group
            data = None
        if status >= 400:
            message = data.get("message") if isinstance(data, dict) else None
            raise ApiError(status, str(message or raw[:200] or reason))
        if data is not None and not isinstance(data, dict):
            raise ApiError(status, f"expected a JSON object from {path}")
        return data

    def request(self, method: str, path: str, *, body: Any = None,
                query: list[tuple[str, str]] | None = None,
                content_type: str = "application/json",
                accept: str = "application/json") -> tuple[int, dict[str, Any] | None]:
        response = self._send(method, path, body=body, query=query,
                              content_type=content_type, accept=accept)
        try:
            raw = response.read()
        except Exception as exc:
            raise self._transport_error(exc, method, path) from exc
        return response.status, self._answered(method, path, response.status, raw,
                                               response.reason)

    def watch(self, kind: Any, label_selector: str | None, namespace: str | None,
              resource_version: str, timeout_seconds: int, read_timeout: float,
              opened: Callable[[Any], None] = lambda response: None
              ) -> Iterator[tuple[str, dict[str, Any]]]:
        """One watch of a kind (by label, in a namespace or all) from `resource_version`,
        with bookmarks, until the server ends it after `timeout_seconds`: yields (type,
        object) as each event arrives, objects with their apiVersion and kind. An ERROR
        event raises its ApiError (410: the version is gone, list again). `opened` gets the
        response, whose `.response.shutdown()` ends the watch from another thread."""
        query = [("watch", "true"), ("allowWatchBookmarks", "true"),
                 ("resourceVersion", resource_version), ("timeoutSeconds", str(timeout_seconds))]
        if label_selector:
            query.append(("labelSelector", label_selector))
        path = object_path(kind.api_version, kind.kind, namespace)
        response = self._send("GET", path, query=query, timeout=(self._timeout, read_timeout))
        opened(response)
        ended = False  # by the server: the connection can serve another request
        try:
            if response.status != 200:
                self._answered("WATCH", path, response.status, response.read(), response.reason)
                raise ApiError(response.status, f"watch of {kind.plural} answered "
                                                f"{response.status}")
            self.connection.ok()
            for line in response.response:  # urllib3 yields each line as its chunk arrives
                if not line.strip():
                    continue
                event = json.loads(line)
                event_type, obj = event.get("type", ""), event.get("object") or {}
                if event_type == "ERROR":
                    raise ApiError(int(obj.get("code") or 500), str(obj.get("message", "")))
                obj.setdefault("apiVersion", kind.api_version)
                obj.setdefault("kind", kind.kind)
                yield event_type, obj
            ended = True
        except ApiError:
            raise
        except Exception as exc:
            raise self._transport_error(exc, "WATCH", path) from exc
        finally:
            if ended:
                response.response.release_conn()
            else:  # stopped midway: what is left unread makes the connection unusable
                response.response.close()

    def apply(self, obj: Mapping[str, Any], *, manager: str = FIELD_MANAGER,
              force: bool = True) -> tuple[dict[str, Any], bool]:
        """Server-side apply; returns the live object and whether it was created."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        query = [("fieldManager", manager), ("force", "true" if force else "false")]
        status, data = self.request("PATCH", path, body=dict(obj), query=query,
                                    content_type="application/apply-patch+yaml")
        assert data is not None
        self.on_apply(obj["kind"])
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

    def _list_one(self, kind: Any, label_selector: str | None, namespace: str | None,
                  accept: str = "application/json") -> tuple[str, list[dict[str, Any]]]:
        """Every object of a kind (by label) in a namespace (None: all), and the list's
        resourceVersion as the server wrote it."""
        query = [("labelSelector", label_selector)] if label_selector else []
        _, data = self.request("GET", object_path(kind.api_version, kind.kind, namespace),
                               query=query, accept=accept)
        version = str(((data or {}).get("metadata") or {}).get("resourceVersion", ""))
        return version, list((data or {}).get("items") or [])

    def _list(self, kind: Any, label_selector: str | None, namespaces: tuple[str, ...],
              accept: str = "application/json") -> tuple[int | None, list[dict[str, Any]]]:
        """Every object of a kind (by label, in `namespaces` or all), and the list's
        resourceVersion (the oldest one when several namespaces are listed)."""
        items: list[dict[str, Any]] = []
        versions: list[int] = []
        for namespace in namespaces or (None,):
            version, listed = self._list_one(kind, label_selector, namespace, accept)
            versions.append(int(version) if version.isdigit() else -1)
            items.extend(listed)
        oldest = min(versions) if versions else -1
        return (oldest if oldest >= 0 else None), items

    def list_to_watch(self, kind: Any, label_selector: str | None, namespace: str | None
                      ) -> tuple[str, list[dict[str, Any]]]:
        """Every object of a kind (by label) in a namespace (None: all), whole, with its
        apiVersion and kind, and the resourceVersion a watch of what follows starts from."""
        version, items = self._list_one(kind, label_selector, namespace)
        return version, [{**item, "apiVersion": kind.api_version, "kind": kind.kind}
                         for item in items]

    def list_present(self, kind: Any, label_selector: str | None,
                     namespaces: tuple[str, ...] = ()) -> tuple[int | None, set[tuple[str, str, str]]]:
        """(namespace, name, uid) of every object of a kind (metadata only, by label), and the
        list's resourceVersion."""
        listed_at, items = self._list(kind, label_selector, namespaces, _METADATA_LIST)
        metas = [item.get("metadata") or {} for item in items]
        return listed_at, {(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""))
                           for meta in metas}

    def list_objects(self, kind: Any, label_selector: str | None,
                     namespaces: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Every object of a kind (by label), whole, each with its apiVersion and kind (a
        list's items carry neither)."""
        _, items = self._list(kind, label_selector, namespaces)
        return [{**item, "apiVersion": kind.api_version, "kind": kind.kind} for item in items]

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Creates an object (409 when the name is taken); returns it as written."""
        meta = obj["metadata"]
        _, data = self.request("POST", object_path(obj["apiVersion"], obj["kind"], meta["namespace"]),
                               body=dict(obj), query=[("fieldManager", FIELD_MANAGER)])
        assert data is not None
        return data

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any],
                     kind: tuple[str, str] = BEMSERVICE.key) -> dict[str, Any]:
        """Merge-patches the status of a BEMService (or a BEMCheckpoint); returns the object as
        written."""
        path = object_path(*kind, namespace, name) + "/status"
        _, data = self.request("PATCH", path, body={"status": dict(status)},
                               query=[("fieldManager", FIELD_MANAGER)],
                               content_type="application/merge-patch+json")
        assert data is not None
        return data

    def post_event(self, about: Mapping[str, Any], event_type: str, reason: str,
                   message: str) -> None:
        """Posts a core/v1 Event about an object; a failure is logged, never raised (an
        event is a courtesy: the status says the same)."""
        meta = about["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": about.get("apiVersion"), "kind": about.get("kind"),
                               "name": meta["name"], "namespace": meta["namespace"],
                               "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "type": event_type, "reason": str(reason),
            "message": message[:EVENT_MESSAGE_LIMIT],
            "source": {"component": FIELD_MANAGER}, "reportingComponent": FIELD_MANAGER,
            "reportingInstance": self.identity,
            "firstTimestamp": now, "lastTimestamp": now, "eventTime": None, "count": 1,
        }
        try:
            self.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=body)
        except ApiError as exc:
            logger.debug("Failed to post the event %s about %s %s/%s: %s", reason,
                         about.get("kind"), meta["namespace"], meta["name"], exc)

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
