"""The only module that talks to the Kubernetes API server.

Plain REST over urllib3's connection pool, with the credentials kopf reads for its own
session: server-side apply with our own field manager, get, delete with a uid precondition,
status patch, streaming watches, and the few look-ups the reconcile needs. Blocking calls:
run them off the loop. (No official client: kopf imports its generated models whenever the
package is installed, 11 MB of the operator's 67 MB at start, and nothing here needs them.)
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import kopf
import urllib3
import yaml

from bem_operator.builders.kinds import BEMSERVICE, SERVICE_MONITOR, ChildKind, plural_of
from bem_operator.constants import FIELD_MANAGER
from bem_operator.outage import ConnectionState, error_kind

__all__ = ["ApiError", "Credentials", "CredentialsError", "KubeApi", "NotLeading", "Transport",
           "count_request", "credentials", "object_path", "request_counts"]
logger = logging.getLogger(__name__)
EVENT_MESSAGE_LIMIT = 1024
# Leader election's own writes (the Lease) are the only ones a standby sends.
_ELECTION_PATH = "/apis/coordination.k8s.io/"
# A list of metadata only (names, uids, versions): what a check of presence needs.
_METADATA_LIST = ("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,"
                  "application/json")
# What a pod's service account mounts (the token is rotated by the kubelet).
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0  # client-go reads a rotated token file again each minute

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


class CredentialsError(Exception):
    """No usable credentials: the message says where they were looked for and what to do."""


@dataclasses.dataclass(frozen=True)
class Credentials:
    info: kopf.ConnectionInfo  # server, CA, token or client certificate: kopf's own type
    token_file: Path | None = None  # a service account's, read again as it rotates


def credentials() -> Credentials:
    """How to reach the API server, for our requests and kopf's alike. In a pod: its service
    account, at the address in $KUBERNETES_SERVICE_HOST/_PORT (client-go's in-cluster config:
    no DNS needed). Elsewhere: $KUBECONFIG or ~/.kube/config, read by kopf (tokens, client
    certificates, basic auth; not exec or auth-provider plugins)."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    token_file = SERVICE_ACCOUNT_DIR / "token"
    if host and port and token_file.is_file():
        ca, namespace = SERVICE_ACCOUNT_DIR / "ca.crt", SERVICE_ACCOUNT_DIR / "namespace"
        host = f"[{host}]" if ":" in host else host  # an IPv6 address
        return Credentials(kopf.ConnectionInfo(
            server=f"https://{host}:{port}", ca_path=str(ca) if ca.is_file() else None,
            token=token_file.read_text().strip() or None,
            default_namespace=namespace.read_text().strip() if namespace.is_file() else None),
            token_file)
    try:
        info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    except (OSError, KeyError, TypeError, yaml.YAMLError, kopf.LoginError) as exc:
        raise CredentialsError(f"cannot read the kubeconfig ({type(exc).__name__}: {exc}): "
                               "fix $KUBECONFIG or ~/.kube/config") from None
    if info is None:
        raise CredentialsError(f"found no service account ({token_file} with "
                               "$KUBERNETES_SERVICE_HOST) and no kubeconfig ($KUBECONFIG or "
                               "~/.kube/config)")
    if not info.server:
        raise CredentialsError("the kubeconfig's current context names a cluster with no "
                               "server: set clusters[].cluster.server")
    if not (info.token or info.certificate_path or info.certificate_data or info.username):
        raise CredentialsError(
            "the kubeconfig's current user has no token, client certificate or password (an "
            "exec or auth-provider plugin is not run here): give it a token, e.g. from "
            "`kubectl create token <service-account>`, or a client certificate")
    return Credentials(info)


class Transport:
    """HTTP(S) to one API server over urllib3's pool: the credentials' TLS context and
    Authorization header on every request. A pool of `connections` keeps one open per thread
    that sends at once (a request beyond the pool would pay a new TLS handshake)."""

    def __init__(self, creds: Credentials, connections: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        info = creds.info
        self.server = info.server.rstrip("/")
        self.user_agent = "bem-operator"
        self._authorization = info.as_http_headers()
        self._token_file, self._clock = creds.token_file, clock
        self._token_read = clock()
        tls: dict[str, Any] = {}
        if self.server.startswith("https:"):
            tls["ssl_context"] = info.as_ssl_context()
            if info.insecure:
                tls.update(cert_reqs="CERT_NONE", assert_hostname=False)
        self.pool = urllib3.PoolManager(num_pools=1, maxsize=connections,
                                        retries=urllib3.Retry(3, redirect=False), **tls)

    def _headers(self) -> dict[str, str]:
        """The Authorization header, with the token file read again when a minute old."""
        now = self._clock()
        if self._token_file is not None and now - self._token_read >= TOKEN_REREAD_SECONDS:
            self._token_read = now
            try:
                token = self._token_file.read_text().strip()
            except OSError as exc:  # keep the last one; the API server says when it expires
                logger.warning("Failed to read the service account token again: %s", exc)
            else:
                if token:
                    self._authorization = {"Authorization": f"Bearer {token}"}
        return {**self._authorization, "User-Agent": self.user_agent}

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
             timeout: float | tuple[float, float], stream: bool = False) -> Any:
        """One request to `url` (path and query); the response read whole, or unread when
        `stream` (iterate it by line; `release_conn()` or `close()` it after)."""
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        return self.pool.request(method, self.server + url, body=body,
                                 headers={**headers, **self._headers()},
                                 timeout=urllib3.Timeout(connect=connect, read=read),
                                 preload_content=not stream, redirect=False)


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

    def __init__(self, transport: Transport, request_timeout: float = 30.0,
                 discovery_ttl: float = 60.0) -> None:
        self._transport = transport
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
        self._transport.user_agent = user_agent

    @classmethod
    def from_environment(cls, request_timeout: float = 30.0, connections: int = 10) -> KubeApi:
        """The service account's credentials in a pod, the kubeconfig elsewhere (credentials());
        keeps up to `connections` open, one per thread that sends at once. Raises
        CredentialsError."""
        return cls(Transport(credentials(), connections), request_timeout=request_timeout)

    def _send(self, method: str, path: str, *, body: Any = None,
              query: list[tuple[str, str]] | None = None,
              content_type: str = "application/json", accept: str = "application/json",
              timeout: float | tuple[float, float] | None = None, stream: bool = False) -> Any:
        """Sends one request (a JSON body); returns urllib3's response, read whole (`.data`)
        or, when `stream`, unread. A transport failure is ApiError 0."""
        if method != "GET" and not self.may_write() and not path.startswith(_ELECTION_PATH):
            raise NotLeading()
        url = f"{path}?{urlencode(query)}" if query else path
        count_request(method, url)
        payload = None if body is None else json.dumps(body).encode()
        try:
            return self._transport.send(method, url, {"Accept": accept,
                                                      "Content-Type": content_type},
                                        payload, timeout or self._timeout, stream=stream)
        except Exception as exc:
            raise self._transport_error(exc, method, path) from exc

    def _transport_error(self, exc: Exception, method: str, path: str) -> ApiError:
        """The ApiError of a request that got no answer (TLS, retries spent, urllib3's
        connection errors, timeouts, OSError); anything else is a bug, raised as it is."""
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
        return response.status, self._answered(method, path, response.status, response.data,
                                               response.reason)

    def watch(self, kind: Any, label_selector: str | None, namespace: str | None,
              resource_version: str, timeout_seconds: int, read_timeout: float,
              opened: Callable[[Any], None] = lambda response: None
              ) -> Iterator[tuple[str, dict[str, Any]]]:
        """One watch of a kind (by label, in a namespace or all) from `resource_version`,
        with bookmarks, until the server ends it after `timeout_seconds`: yields (type,
        object) as each event arrives, objects with their apiVersion and kind. An ERROR
        event raises its ApiError (410: the version is gone, list again). `opened` gets the
        response, whose `.shutdown()` ends the watch from another thread."""
        query = [("watch", "true"), ("allowWatchBookmarks", "true"),
                 ("resourceVersion", resource_version), ("timeoutSeconds", str(timeout_seconds))]
        if label_selector:
            query.append(("labelSelector", label_selector))
        path = object_path(kind.api_version, kind.kind, namespace)
        response = self._send("GET", path, query=query, timeout=(self._timeout, read_timeout),
                              stream=True)
        opened(response)
        ended = False  # by the server: the connection can serve another request
        try:
            if response.status != 200:
                self._answered("WATCH", path, response.status, response.read(), response.reason)
                raise ApiError(response.status, f"watch of {kind.plural} answered "
                                                f"{response.status}")
            self.connection.ok()
            for line in response:  # urllib3 yields each line as its chunk arrives
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
                response.release_conn()
            else:  # stopped midway: what is left unread makes the connection unusable
                response.close()

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
