"""The child-kind registry: one record per kind of object the operator creates or reads.

Everything else derives from it: the object paths of the API layer (k8s.py), the owner-label
watches (kopf_config.py, handlers.py), the clean-up of obsolete children (reconcile.py) and the
list of children build_children returns. The RBAC rules of manifests/rbac.yaml and of the
chart are checked against it by tests/install/test_rbac_scope.py.

Adding a child kind: a builder module under builders/, one record in CHILD_REGISTRY, its RBAC
rule in manifests/rbac.yaml and the chart's _rbac-rules.tpl.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bem_operator.builders.autoscaling import hpa_from_spec
from bem_operator.builders.checkpoints import start_list_from_spec
from bem_operator.builders.deployment import deployment_from_spec
from bem_operator.builders.disruption import pdb_from_spec
from bem_operator.builders.edge import (http_route_from_spec, ingress_from_spec,
                                        rate_limit_middleware_from_spec)
from bem_operator.builders.keda import scaled_object_from_spec
from bem_operator.builders.monitoring import service_monitor_from_spec
from bem_operator.builders.network_policy import network_policy_from_spec
from bem_operator.builders.options import BuildOptions
from bem_operator.builders.service import service_from_spec
from bem_operator.builders.spec_types import BEMServiceSpec
from bem_operator.constants import API_VERSION, CHECKPOINT_KIND, CHECKPOINT_PLURAL, KIND, PLURAL

__all__ = ["BEMCHECKPOINT", "BEMSERVICE", "CHILD_REGISTRY", "DEPLOYMENT", "HPA", "HTTP_ROUTE",
           "INGRESS", "NETWORK_POLICY", "POD", "READ_REGISTRY", "SCALED_OBJECT", "SECRET",
           "SERVICE_MONITOR", "TRAEFIK_MIDDLEWARE", "ChildKind", "ReadKind", "child_kind",
           "children_from_spec", "plural_of"]

# Builds one child from the parsed spec; None when the spec does not ask for it.
Builder = Callable[[BEMServiceSpec, BuildOptions], "dict[str, Any] | None"]


@dataclass(frozen=True)
class _Kind:
    api_version: str
    kind: str
    plural: str  # every kind the operator touches is namespaced

    @property
    def key(self) -> tuple[str, str]:
        return (self.api_version, self.kind)

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


@dataclass(frozen=True)
class ChildKind(_Kind):
    """A kind the operator creates (server-side apply) and watches by its owner label."""

    build: Builder
    # Every valid spec gets one: never obsolete, so never deleted (no delete verb).
    always: bool = False
    # The reconcile reads who owns which field (the replicas hand-over): the cache keeps its
    # managedFields (read from the watch like every child, never by get).
    read_back: bool = False
    # Its CRD may be missing from a cluster (ServiceMonitor, KEDA's ScaledObject, HTTPRoute,
    # Traefik's Middleware): the watch is set up only where the API is served, and the builder
    # is told whether it is.
    optional_crd: bool = False
    # Its status feeds the BEMService's (rollout, autoscaling): a change of its status alone
    # asks for a reconcile; for the other kinds only a change of what the operator declares.
    feeds_status: bool = False

    @property
    def verbs(self) -> frozenset[str]:
        """The RBAC verbs the operator needs on this kind."""
        verbs = {"list", "watch", "create", "patch"}
        verbs |= set() if self.always else {"delete"}
        return frozenset(verbs)


@dataclass(frozen=True)
class ReadKind(_Kind):
    """A kind the operator only reads: watched by its owner label (runtime pods), or only
    looked up by name (the Secrets and claims the pods reference)."""

    watched: bool = False
    # The operator also creates it, once, with content no builder makes (the admin token).
    created: bool = False

    @property
    def verbs(self) -> frozenset[str]:
        verbs = {"list", "watch"} if self.watched else {"get"}
        return frozenset(verbs | ({"create"} if self.created else set()))


def _service(spec: BEMServiceSpec, _options: BuildOptions) -> dict[str, Any]:
    return service_from_spec(spec)


def _hpa(spec: BEMServiceSpec, _options: BuildOptions) -> dict[str, Any] | None:
    return hpa_from_spec(spec)


def _pdb(spec: BEMServiceSpec, _options: BuildOptions) -> dict[str, Any] | None:
    return pdb_from_spec(spec)


DEPLOYMENT = ChildKind("apps/v1", "Deployment", "deployments", deployment_from_spec,
                       always=True, read_back=True, feeds_status=True)
SERVICE_MONITOR = ChildKind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors",
                            service_monitor_from_spec, optional_crd=True)
# The autoscaler: one of the two, by spec.autoscaling.provider; the other one is obsolete.
HPA = ChildKind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", _hpa,
                feeds_status=True)
SCALED_OBJECT = ChildKind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects",
                          scaled_object_from_spec, optional_crd=True, feeds_status=True)
# Who may reach the runtime pods' ports (spec.networkPolicy, on by default).
NETWORK_POLICY = ChildKind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies",
                           network_policy_from_spec)
# The edge (spec.gateway or spec.ingress): the route's status says whether a Gateway took it.
# spec.gateway.rateLimit: Traefik's Middleware, which the route names (so applied before it).
TRAEFIK_MIDDLEWARE = ChildKind("traefik.io/v1alpha1", "Middleware", "middlewares",
                               rate_limit_middleware_from_spec, optional_crd=True)
HTTP_ROUTE = ChildKind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes",
                       http_route_from_spec, optional_crd=True, feeds_status=True)
INGRESS = ChildKind("networking.k8s.io/v1", "Ingress", "ingresses", ingress_from_spec)

# In apply order: what the pods mount and the policy that guards them, the Deployment, then
# what points at its pods.
CHILD_REGISTRY: tuple[ChildKind, ...] = (
    ChildKind("v1", "ConfigMap", "configmaps", start_list_from_spec, always=True),
    NETWORK_POLICY,
    DEPLOYMENT,
    ChildKind("v1", "Service", "services", _service, always=True),
    HPA,
    SCALED_OBJECT,
    ChildKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", _pdb),
    SERVICE_MONITOR,
    TRAEFIK_MIDDLEWARE,
    HTTP_ROUTE,
    INGRESS,
)

# Runtime pods: their container states say whether the model loaded (status).
POD = ReadKind("v1", "Pod", "pods", watched=True)

# Secrets the pods reference, read on every run (a change rolls the pods), and each service's
# admin token, which the operator creates (builders/checkpoints.py).
SECRET = ReadKind("v1", "Secret", "secrets", created=True)

READ_REGISTRY: tuple[ReadKind, ...] = (
    POD,
    SECRET,
    # Claims checked before a rollout.
    ReadKind("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
)

# The custom resources (their RBAC rules are the chart's own, not derived from here).
BEMSERVICE = _Kind(API_VERSION, KIND, PLURAL)
BEMCHECKPOINT = _Kind(API_VERSION, CHECKPOINT_KIND, CHECKPOINT_PLURAL)

_PLURALS: dict[tuple[str, str], str] = {
    k.key: k.plural for k in (*CHILD_REGISTRY, *READ_REGISTRY, BEMSERVICE, BEMCHECKPOINT)}
_CHILDREN: dict[tuple[str, str], ChildKind] = {k.key: k for k in CHILD_REGISTRY}


def child_kind(api_version: str, kind: str) -> ChildKind | None:
    """The registry's record of a child kind; None for pods and any other kind."""
    return _CHILDREN.get((api_version, kind))


def plural_of(api_version: str, kind: str) -> str | None:
    """The resource name of a kind the operator touches; None for any other kind."""
    return _PLURALS.get((api_version, kind))


def children_from_spec(spec: BEMServiceSpec, options: BuildOptions) -> list[dict[str, Any]]:
    """All desired children of one parsed BEMService, in apply order."""
    children = (child.build(spec, options) for child in CHILD_REGISTRY)
    return [child for child in children if child is not None]
