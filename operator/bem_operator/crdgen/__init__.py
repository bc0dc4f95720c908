"""The BEMService and BEMCheckpoint CRDs, generated: the schema from the typed spec (builders/spec_types.py) and the
status classes below, Kubernetes types from the Kubernetes OpenAPI (core_v1.py), plus the
names, subresources and printer columns. scripts/gen_crds.py writes it; a unit test checks that
the committed files equal what this returns.

Not imported by the running operator (it needs the dev dependency kubernetes-validate).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from bem_operator.builders.runtime_fields import OPERATOR_FLAGS, RESERVED_ENV
from bem_operator.builders.spec_schema import cel, rules
from bem_operator.builders.spec_types import CheckpointSpec, Spec
from bem_operator.constants import (CHECKPOINT_KIND, CHECKPOINT_PLURAL, GROUP, KIND, PLURAL,
                                    VERSION)
from bem_operator.crdgen.core_v1 import kubernetes_type
from bem_operator.crdgen.structural import from_pydantic


def _map_list(key: str, description: str) -> Any:
    """An optional list merged by `key` (server-side apply, kubectl's strategic merge)."""
    return Field(None, description=description, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]})


def _name(pattern: str, message: str) -> Any:
    """metadata.name: at most 63 characters matching `pattern` (CEL, with our message)."""
    return Field(None, max_length=63, json_schema_extra=rules(cel(f"self.matches('{pattern}')",
                                                                  message)))


class _Status(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel)


class Condition(_Status):
    """One condition (metav1.Condition)."""
    type: str = Field(max_length=316, description="Condition type, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str | None = Field(None, max_length=1024, description="CamelCase reason for the last transition.")
    message: str | None = Field(None, max_length=32768, description="What happened, for humans.")
    last_transition_time: str | None = Field(None, json_schema_extra={"format": "date-time"},
                                             description="When status last changed.")
    observed_generation: int | None = Field(None, json_schema_extra={"format": "int64"},
                                            description="metadata.generation the condition was set from.")


class AutoscalingStatus(_Status):
    """What the autoscaler reports (with spec.autoscaling): the provider, the
    HorizontalPodAutoscaler that scales the Deployment and its last reading. The Autoscaling
    condition says whether it can scale, and if not, why."""
    provider: str | None = Field(None, description="HPA or KEDA, from spec.autoscaling.provider.")
    horizontal_pod_autoscaler: str | None = Field(None, description=(
        "Name of the HorizontalPodAutoscaler that scales the Deployment: the BEMService's name "
        "(HPA), or keda-hpa-NAME, which KEDA creates (KEDA)."))
    scaled_object: str | None = Field(None, description="Name of the KEDA ScaledObject (provider KEDA only).")
    active: bool | None = Field(None,
        description="KEDA's Active condition of the ScaledObject (the trigger sees load).")
    current_replicas: int | None = Field(None, description="Replicas the HorizontalPodAutoscaler last saw.")
    desired_replicas: int | None = Field(None,
        description="Replicas the HorizontalPodAutoscaler last asked for.")
    current_requests_per_second: float | None = Field(
        None, description="Requests per second per pod the HorizontalPodAutoscaler last read.")
    last_scale_time: str | None = Field(None, json_schema_extra={"format": "date-time"}, description=(
        "When the HorizontalPodAutoscaler last changed the replica count."))


class CheckpointsSummary(_Status):
    """The BEMCheckpoints of this service (present once one names it)."""
    declared: int | None = Field(None, description="BEMCheckpoints that name this service.")
    ready: int | None = Field(None, description="Of those, the ones loaded on every Ready pod.")
    waiting: int | None = Field(None, description=(
        "Of those, the ones beyond spec.runtime.maxCheckpoints - 1, which no pod loads "
        "(Degraded, reason CheckpointCapacity) until a slot frees up or the limit is raised."))
    resident: int | None = Field(None, description=(
        "Checkpoints besides the service's own that the pods held at the operator's last "
        "look (a deleted BEMCheckpoint counts until every pod unloaded it)."))


class GatewayParentStatus(_Status):
    """What the controller of one Gateway of spec.gateway.parentRefs reported on the route."""
    gateway: str | None = Field(None, description="NAMESPACE/NAME of the Gateway (and its listener).")
    accepted: Literal["True", "False", "Unknown"] | None = Field(None, description=(
        "The route's Accepted condition for this Gateway; Unknown until its controller reports."))
    resolved_refs: Literal["True", "False", "Unknown"] | None = Field(None, description=(
        "The route's ResolvedRefs condition for this Gateway (the Service was found)."))


class GatewayStatus(_Status):
    """The HTTPRoute of spec.gateway. The Gateway condition sums it up."""
    http_route: str | None = Field(None, description="Name of the HTTPRoute (the BEMService's name).")
    url: str | None = Field(None, description=(
        "https://HOST/PREFIX through the Gateway: the first host name of spec.gateway.hostnames "
        "that is not a wildcard, and spec.gateway.pathPrefix."))
    parents: list[GatewayParentStatus] | None = Field(None, description="One per parentRef.")


class Status(_Status):
    """Observed state, written by the operator."""
    observed_generation: int | None = Field(None, json_schema_extra={"format": "int64"}, description=(
        "metadata.generation of the BEMService that this status describes."))
    phase: str | None = Field(None,
        description="Summary of the conditions. Pending, Progressing, Ready or Degraded.")
    replicas: int | None = Field(None, description="Runtime pods that exist (from the Deployment).")
    ready_replicas: int | None = Field(None,
        description="Runtime pods that are ready to serve (model loaded and warm).")
    selector: str | None = Field(None,
        description="Label selector of the runtime pods, for the scale subresource.")
    endpoint: str | None = Field(None,
        description="In-cluster URL of the service, e.g. http://NAME.NAMESPACE.svc:8080.")
    autoscaling: AutoscalingStatus | None = None
    checkpoints: CheckpointsSummary | None = None
    gateway: GatewayStatus | None = None
    conditions: list[Condition] | None = _map_list(
        "type", "Ready, Progressing and Degraded, each with a reason and a message.")


class _Metadata(BaseModel):
    name: str | None = _name("^[a-z]([-a-z0-9]*[a-z0-9])?$", (
        "must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter, at "
        "most 63 characters): it also names the Service."))


class BEMService(BaseModel):
    """BEMService serves a frozen base language model with a BEM expert checkpoint (low-rank
    experts with chunk-sticky routing). The bem-operator turns it into a Deployment of runtime
    pods, a Service, an optional HorizontalPodAutoscaler (or KEDA ScaledObject), a
    PodDisruptionBudget, a ServiceMonitor, a NetworkPolicy and an optional HTTPRoute (or
    Ingress), and reports their state in status."""
    model_config = ConfigDict(populate_by_name=True)
    api_version: str | None = Field(None, alias="apiVersion",
                                    description=f"Versioned schema of this object; {GROUP}/{VERSION}.")
    kind: str | None = Field(None, description=f"Kind of this object; {KIND}.")
    metadata: _Metadata | None = None
    spec: Spec
    status: Status | None = None


class CheckpointPod(_Status):
    """What one Ready pod of the service answered on GET /v1/checkpoints."""
    name: str = Field(description="Pod name.")
    loaded: bool = Field(description="Whether the pod serves this checkpoint from spec.path.")
    loaded_at: str | None = Field(None, json_schema_extra={"format": "date-time"},
                                  description="When the pod loaded it (the runtime's loaded_at).")
    message: str | None = Field(None, max_length=4096, description=(
        "Why it is not loaded there: the runtime's own answer to the load, or why the pod "
        "could not be asked."))


class CheckpointStatus(_Status):
    """Observed state, written by the operator from what each pod says."""
    observed_generation: int | None = Field(None, json_schema_extra={"format": "int64"}, description=(
        "metadata.generation of the BEMCheckpoint that this status describes."))
    replicas: int | None = Field(None, description="Ready pods of the service.")
    loaded_replicas: int | None = Field(None, description="Of those, the pods that serve this checkpoint.")
    loaded: str | None = Field(None, description="loadedReplicas/replicas, e.g. 2/3 (for kubectl get).")
    pods: list[CheckpointPod] | None = _map_list(
        "name", "Each Ready pod of the service and whether it serves this checkpoint.")
    conditions: list[Condition] | None = _map_list(
        "type", "Ready (served by every Ready pod) and Degraded, with a reason and a message.")


class _CheckpointMetadata(BaseModel):
    name: str | None = _name("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", (
        "must be a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters): it "
        "is the model name clients send."))


class BEMCheckpoint(BaseModel):
    """BEMCheckpoint puts one more BEM checkpoint on every Ready pod of a BEMService, over the
    service's base model: clients select it by sending its name as `model`. The bem-operator
    loads it on the running pods through the runtime's admin API, lists it in the start list
    of new pods, and reports in status what each pod says it serves."""
    model_config = ConfigDict(populate_by_name=True)
    api_version: str | None = Field(None, alias="apiVersion",
                                    description=f"Versioned schema of this object; {GROUP}/{VERSION}.")
    kind: str | None = Field(None, description=f"Kind of this object; {CHECKPOINT_KIND}.")
    metadata: _CheckpointMetadata | None = None
    spec: CheckpointSpec
    status: CheckpointStatus | None = None


Column = tuple[str, str, str, str, bool]  # name, type, JSON path, description, -o wide only

PRINTER_COLUMNS: tuple[Column, ...] = (
    ("Ready", "integer", ".status.readyReplicas",
     "Pods that passed their readiness probe (model loaded and warm).", False),
    ("Replicas", "integer", ".status.replicas", "Pods that exist for this service.", False),
    ("Phase", "string", ".status.phase", "Summary of the conditions.", False),
    ("Endpoint", "string", ".status.endpoint", "In-cluster URL of the service.", False),
    ("URL", "string", ".status.gateway.url", "URL through the Gateway, with spec.gateway.", True),
    ("Autoscaler", "string", ".status.autoscaling.provider",
     "HPA or KEDA, when spec.autoscaling is set.", True),
    ("Desired", "integer", ".status.autoscaling.desiredReplicas", "Replicas the autoscaler asks for.", True),
    ("RPS/Pod", "number", ".status.autoscaling.currentRequestsPerSecond",
     "Requests per second per pod the autoscaler last read.", True),
    ("Checkpoints", "integer", ".status.checkpoints.declared",
     "BEMCheckpoints that name this service.", True),
    ("Waiting", "integer", ".status.checkpoints.waiting",
     "Of those, the ones beyond spec.runtime.maxCheckpoints.", True),
)

CHECKPOINT_COLUMNS: tuple[Column, ...] = (
    ("Service", "string", ".spec.service", "The BEMService whose pods serve it.", False),
    ("Loaded", "string", ".status.loaded", "Ready pods that serve it, of the Ready pods.", False),
    ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status',
     "Served by every Ready pod of the service.", False),
    ("Path", "string", ".spec.path", "Checkpoint directory under /models.", True),
)


def _columns(schema: dict[str, Any], columns: tuple[Column, ...]) -> list[dict[str, Any]]:
    out = []
    for name, kind, path, description, wide in columns:
        node = schema
        # A column must name a field of the schema (a filter such as [?(@.type=="Ready")]
        # picks an item of a list).
        for part in re.sub(r"\[[^\]]*\]", "", path).strip(".").split("."):
            node = node["properties"][part]
            if node["type"] == "array":
                node = node["items"]
        if node["type"] != kind:
            raise ValueError(f"printer column {name}: {path} is {node['type']}, not {kind}")
        out.append({"name": name, "type": kind, **({"priority": 1} if wide else {}),
                    "description": description, "jsonPath": path})
    return [*out, {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]


def _refusals(runtime: dict[str, Any]) -> None:
    """CEL rules that refuse, in spec.runtime.env and extraArgs, the env vars the operator sets
    and the flags the runtime's settings table gives them (runtime_fields.py)."""
    names = ", ".join(f"'{name}'" for name in sorted(RESERVED_ENV))
    runtime["env"]["items"]["x-kubernetes-validations"].insert(0, cel(
        f"!(self.name in [{names}])", "this variable is set by the operator from spec fields "
        "(spec.model, spec.runtime, spec.auth, spec.cache); set that field instead.", ".name"))
    flags = "|".join(sorted(flag.removeprefix("--") for flag in OPERATOR_FLAGS))
    runtime["extraArgs"]["x-kubernetes-validations"] = [cel(
        f"self.all(a, !a.matches('^--({flags})(=.*)?$'))",
        "overrides a flag the operator sets from spec fields (spec.model, spec.gpu, spec.runtime, "
        "spec.auth, spec.cache); set that field instead (only flags such as --merge-decode that no "
        "field sets belong here).", reason="FieldValueForbidden")]


def openapi_schema() -> dict[str, Any]:
    schema = from_pydantic(BEMService.model_json_schema(by_alias=True), kubernetes_type)
    _refusals(schema["properties"]["spec"]["properties"]["runtime"]["properties"])
    return schema


def _crd(kind: str, plural: str, short_name: str, schema: dict[str, Any],
         columns: tuple[Column, ...], subresources: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {
            "app.kubernetes.io/name": "bem-operator", "app.kubernetes.io/component": "crd"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower(), "shortNames": [short_name], "categories": ["bem"]},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": subresources,
                "additionalPrinterColumns": _columns(schema, columns),
                "schema": {"openAPIV3Schema": schema},
            }],
        },
    }


def bemservice_crd() -> dict[str, Any]:
    # kubectl scale writes spec.replicas; it is refused while spec.autoscaling is set, so
    # nobody fights the HorizontalPodAutoscaler.
    return _crd(KIND, PLURAL, "bems", openapi_schema(), PRINTER_COLUMNS, {"status": {}, "scale": {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}})


def bemcheckpoint_crd() -> dict[str, Any]:
    schema = from_pydantic(BEMCheckpoint.model_json_schema(by_alias=True), kubernetes_type)
    return _crd(CHECKPOINT_KIND, CHECKPOINT_PLURAL, "bemck", schema, CHECKPOINT_COLUMNS,
                {"status": {}})
