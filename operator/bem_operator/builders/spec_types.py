"""The BEMService spec, typed once: each field with its type, bounds, enum, default, description
and the CEL rules (x-kubernetes-validations) the API server enforces.

The CRD's schema is generated from these classes (bem_operator/crdgen, `make crds`); the
operator validates an object that never went through the API server against the same classes
(spec.py turns the errors into SpecError). Cross-field rules exist only as CEL: the API server
enforces them and nothing here checks them a second time.

Markers (spec_schema.py): `core(...)` makes a field's schema a Kubernetes type from the
Kubernetes OpenAPI (crdgen/core_v1.py), `RuntimeEnv` names the runtime setting a field becomes
(runtime_fields.py derives the table), `BUILDER_DEFAULT` keeps a Python default out of the CRD.
Integers are int32 unless their schema says otherwise.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field

from bem_operator.builders.spec_schema import BUILDER_DEFAULT, RuntimeEnv, Section, cel, core, rules

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
LABEL_KEY = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
             r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
PERCENT = r"^(100|[1-9]?[0-9])%$"
# A normalised relative path: segments of letters, digits, '_', '-' and '.', none of them '.'
# or '..', no leading, doubled or trailing '/'. Two spellings of one directory cannot both pass,
# so comparing the strings compares the directories.
_SEGMENT = r"([A-Za-z0-9_-][A-Za-z0-9_.-]*|\.[A-Za-z0-9_-][A-Za-z0-9_.-]*|\.\.[A-Za-z0-9_.-]+)"
MODEL_PATH = rf"^{_SEGMENT}(/{_SEGMENT})*$"
# The runtime's --max-checkpoints default, set explicitly so the operator and the pods agree.
DEFAULT_MAX_CHECKPOINTS = 8


def _int_or_percent(value: int | str) -> int | str:
    if isinstance(value, bool) or (isinstance(value, int) and value < 0) or (
            isinstance(value, str) and not re.match(PERCENT, value)):
        raise ValueError("must be an integer >= 0 or a percentage from 0% to 100%")
    return value


# The Python check and the CEL rule read the same PERCENT: one declaration, two enforcers.
IntOrPercent = Annotated[int | str, AfterValidator(_int_or_percent), Field(json_schema_extra=rules(
    cel(f"type(self) == int ? self >= 0 : self.matches('{PERCENT}')",
        "must be an integer >= 0 or a percentage from 0% to 100%.")))]
DnsName = Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN)]
ModelPath = Annotated[str, Field(max_length=512, pattern=MODEL_PATH)]


class Routing(Section):
    """Overrides of the checkpoint's routing settings; unset fields keep the checkpoint's values."""
    top_k: Annotated[int | None, RuntimeEnv("BEM_TOP_K")] = Field(
        None, ge=1, le=64,
        description="Experts mixed per chunk (at most the checkpoint's number of experts).")
    chunk_size: Annotated[int | None, RuntimeEnv("BEM_CHUNK_SIZE")] = Field(
        None, ge=1, le=8192,
        description="Tokens per routing chunk; a chunk's experts are decided once, before it starts.")
    hysteresis: Annotated[float | None, RuntimeEnv("BEM_HYSTERESIS")] = Field(
        None, ge=0, le=1, description=(
            "Margin in mean probability that a new best expert must beat the previous chunk's "
            "expert by before routing switches (top-1)."))
    temperature: Annotated[float | None, RuntimeEnv("BEM_ROUTER_TEMPERATURE")] = Field(
        None, gt=0, le=100, description="Softmax temperature of the router; lower is sharper.")


class Governance(Section):
    """Overrides of the checkpoint's governance bounds on the expert weight deltas."""
    sigma_max: Annotated[float | None, RuntimeEnv("BEM_SIGMA_MAX")] = Field(
        None, gt=0, description=(
            "Largest singular value an expert delta may have; larger ones are scaled down at load."))
    trust_region: Annotated[float | None, RuntimeEnv("BEM_TRUST_REGION")] = Field(
        None, gt=0, description=(
            "Largest Frobenius norm of an expert delta, as a fraction of the frozen weight's "
            "norm; larger ones are scaled down at load."))
    min_confidence: Annotated[float | None, RuntimeEnv("BEM_MIN_CONFIDENCE")] = Field(
        None, ge=0, le=1, description=(
            "When the chosen expert's mean probability is below this, the chunk uses the base model alone."))


def _path_rule(field: str) -> dict[str, Any]:
    return rules(cel("!self.split('/').exists(s, s == '' || s == '.' || s == '..')",
                     f"{field} must be a normalised path under /models: no '.' or '..' "
                     "segment, no leading, doubled or trailing '/'", reason="FieldValueInvalid"))


class ModelSpec(Section):
    """Where the base model and the BEM checkpoint are, and optional overrides of the
    checkpoint's routing and governance settings. Both directories live under /models in the
    pod: either a PersistentVolumeClaim mounted read-only there, or files baked into the runtime
    image. Nothing is downloaded at run time."""
    model_config = ConfigDict(json_schema_extra=rules(
        cel("self.source != 'PersistentVolumeClaim' || has(self.claimName)",
            "spec.model.claimName is required when spec.model.source is PersistentVolumeClaim.",
            ".claimName", "FieldValueRequired"),
        cel("self.source != 'Image' || !has(self.claimName)",
            "spec.model.claimName must be unset when spec.model.source is Image.",
            ".claimName", "FieldValueForbidden"),
        cel("self.basePath != self.checkpointPath",
            "spec.model.checkpointPath must differ from spec.model.basePath.", ".checkpointPath"),
        cel("!self.checkpointPath.startsWith(self.basePath + '/') && "
            "!self.basePath.startsWith(self.checkpointPath + '/')",
            "spec.model.checkpointPath and spec.model.basePath must not lie inside each other: the "
            "runtime would read the checkpoint's files as model files (or the other way round).",
            ".checkpointPath", "FieldValueInvalid")))

    source: Literal["PersistentVolumeClaim", "Image"] = Field(
        "PersistentVolumeClaim", description=(
            "PersistentVolumeClaim (default) mounts spec.model.claimName read-only at /models; "
            "Image uses directories the runtime image already has under /models."))
    claim_name: DnsName | None = Field(None, description=(
        "Name of a PersistentVolumeClaim in this namespace that holds the base model and the "
        "checkpoint (source PersistentVolumeClaim only)."))
    base_path: ModelPath = Field("base", json_schema_extra=_path_rule("spec.model.basePath"), description=(
        "Base model directory (Hugging Face layout: config.json, *.safetensors, tokenizer "
        "files), relative to /models (default base)."))
    checkpoint_path: ModelPath = Field("bem", json_schema_extra=_path_rule("spec.model.checkpointPath"), description=(
        "BEM checkpoint directory (bem_config.json and experts.safetensors), relative to "
        "/models (default bem)."))
    served_name: str | None = Field(
        None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$",
        description=("Model id served in /v1/models and accepted in requests. Defaults to the "
                     "BEMService name."))
    routing: Routing | None = None
    governance: Governance | None = None


class Autoscaling(Section):
    """Scale on the request rate per pod, plus optional CPU and memory targets. With provider
    HPA (default) the operator writes a HorizontalPodAutoscaler (autoscaling/v2) on the
    bem_requests_per_second Pods metric, served by a custom-metrics adapter such as
    prometheus-adapter with the chart's rule; with provider KEDA it writes a KEDA ScaledObject
    whose prometheus trigger reads the pods' request rate from Prometheus, and KEDA makes and
    owns the HorizontalPodAutoscaler. Either way the autoscaler owns the replica count. Mutually
    exclusive with spec.replicas."""
    model_config = ConfigDict(json_schema_extra=rules(
        cel("self.minReplicas <= self.maxReplicas",
            "spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas.",
            ".minReplicas"),
        cel("!has(self.requestRate) || self.requestRate || has(self.targetCPUUtilization) || "
            "has(self.targetMemoryUtilization)",
            "spec.autoscaling.requestRate false needs targetCPUUtilization or "
            "targetMemoryUtilization: something must drive the scaling.", ".requestRate")))

    provider: Literal["HPA", "KEDA"] = Field("HPA", description=(
        "What scales the pods. HPA (default): a HorizontalPodAutoscaler on the "
        "bem_requests_per_second Pods metric (needs prometheus-adapter or another custom-metrics "
        "adapter). KEDA: a keda.sh/v1alpha1 ScaledObject with a prometheus trigger on the total "
        "request rate of this service's pods (bem_requests_total of the generation endpoints, as "
        "our ServiceMonitor has Prometheus scrape it) and an AverageValue target of "
        "targetRequestsPerSecond per pod; needs KEDA and a Prometheus that selects the "
        "ServiceMonitor, at the operator's Prometheus address."))
    request_rate: bool = Field(True, description=(
        "Scale on the request rate per pod (default true). false scales on the CPU and memory "
        "targets alone, from the resource metrics API (metrics-server), for clusters without a "
        "custom-metrics adapter or Prometheus: an HPA neither scales down nor up by a metric it "
        "cannot read."))
    min_replicas: int = Field(1, ge=1, le=1000, description="Fewest pods the autoscaler keeps (default 1).")
    max_replicas: int = Field(ge=1, le=1000, description="Most pods the autoscaler may run.")
    target_requests_per_second: float = Field(
        10, gt=0, le=100000,
        description="Average requests per second per pod the autoscaler aims for (default 10).")
    target_cpu_utilization: int | None = Field(
        None, alias="targetCPUUtilization", ge=1, le=100,
        description=("Optional average CPU use as a percentage of the CPU request (needs "
                     "spec.resources.requests.cpu)."))
    target_memory_utilization: int | None = Field(
        None, alias="targetMemoryUtilization", ge=1, le=100, description=(
            "Optional average memory use as a percentage of the memory request (needs "
            "spec.resources.requests.memory)."))
    behavior: dict[str, Any] | None = Field(
        None, json_schema_extra=core("autoscaling.v2.HorizontalPodAutoscalerBehavior"), description=(
        "Scaling speed limits, passed as they are to the HorizontalPodAutoscaler's spec.behavior "
        "(provider KEDA: to the ScaledObject's advanced.horizontalPodAutoscalerConfig.behavior)."))

    @property
    def utilization_targets(self) -> tuple[tuple[str, int], ...]:
        """(resource, percent of its request) of each Utilization target that is set."""
        return tuple((resource, percent) for resource, percent in
                     (("cpu", self.target_cpu_utilization),
                      ("memory", self.target_memory_utilization)) if percent is not None)


class Gpu(Section):
    """NVIDIA GPUs per pod. Sets the nvidia.com/gpu limit and request, a toleration for the
    nvidia.com/gpu taint, and with product a node selector on nvidia.com/gpu.product."""
    model_config = ConfigDict(json_schema_extra=rules(cel(
        "!has(self.product) || (has(self.count) && self.count > 0)",
        "spec.gpu.product needs spec.gpu.count greater than 0.", ".product")))

    count: int = Field(0, ge=0, le=16, json_schema_extra=BUILDER_DEFAULT,
                       description="GPUs per pod; 0 runs on CPU.")
    product: str | None = Field(
        None, max_length=63, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", description=(
        "Value of the nvidia.com/gpu.product node label to schedule on, e.g. NVIDIA-H100-80GB-HBM3."))


class Rollout(Section):
    """How pods are replaced on a change. On full GPU nodes use maxSurge 0 with maxUnavailable
    1, or strategy Recreate."""
    model_config = ConfigDict(json_schema_extra=rules(
        cel("self.strategy == 'RollingUpdate' || (!has(self.maxSurge) && !has(self.maxUnavailable))",
            "spec.rollout.maxSurge and maxUnavailable apply only to strategy RollingUpdate; "
            "remove them for Recreate.", ".strategy"),
        cel("!(has(self.maxSurge) && has(self.maxUnavailable) && string(self.maxSurge) in ['0', '0%'] "
            "&& string(self.maxUnavailable) in ['0', '0%'])",
            "spec.rollout.maxSurge and maxUnavailable cannot both be zero (the rollout could "
            "never progress).", ".maxUnavailable")))

    strategy: Literal["RollingUpdate", "Recreate"] = Field("RollingUpdate", description=(
        "RollingUpdate (default) replaces pods a few at a time; Recreate stops every old pod "
        "first (no extra GPUs needed)."))
    max_surge: IntOrPercent | None = Field(None, description=(
        'Pods (or percent of replicas, e.g. "25%") that may be created above the desired count '
        "during a rollout."))
    max_unavailable: IntOrPercent | None = Field(
        None, description="Pods (or percent of replicas) that may be unavailable during a rollout.")


class DisruptionBudget(Section):
    """PodDisruptionBudget for voluntary disruptions such as node drains. Enabled by default
    with maxUnavailable 1; pods whose model never loaded may always be evicted."""
    model_config = ConfigDict(json_schema_extra=rules(cel(
        "!(has(self.minAvailable) && has(self.maxUnavailable))",
        "set spec.disruptionBudget.minAvailable or maxUnavailable, not both.", ".minAvailable")))

    enabled: bool = Field(True, description="Create the PodDisruptionBudget (default true).")
    min_available: IntOrPercent | None = Field(
        None, description="Pods (or percent) that must stay available during a disruption.")
    max_unavailable: IntOrPercent | None = Field(
        None, description="Pods (or percent) that may be unavailable during a disruption (default 1).")


class ServiceSpec(Section):
    """The Service in front of the pods; only Ready pods receive traffic."""
    model_config = ConfigDict(json_schema_extra=rules(cel(
        "!has(self.nodePort) || self.type != 'ClusterIP'",
        "spec.service.nodePort needs spec.service.type NodePort or LoadBalancer.", ".nodePort")))

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        "ClusterIP", description="Service type (default ClusterIP).")
    port: int = Field(8080, ge=1, le=65535, description=(
        "Port the Service listens on (default 8080; forwards to the pods' http port 8080)."))
    node_port: int | None = Field(None, ge=1, le=65535, description=(
        "Fixed node port for type NodePort or LoadBalancer (the cluster's node port range applies)."))


class Monitoring(Section):
    """Prometheus scraping of the runtime's /metrics."""
    service_monitor: bool = Field(True, description=(
        "Create a ServiceMonitor when the Prometheus Operator's CRD is installed (without it the "
        "operator says so in a status condition). Default true."))
    interval: str = Field("30s", pattern=r"^([0-9]+(ms|s|m|h))+$",
                          description="Scrape interval, e.g. 30s (default) or 1m.")


class NetworkPolicySpec(Section):
    """The NetworkPolicy the operator writes for the runtime pods (on by default). It admits the
    API port (http, 8080) from pods of this namespace and from the peers in spec.networkPolicy.from,
    the metrics port (9090) from the monitoring namespace, and the admin port (8081) from the
    operator's pods only; everything else is refused. It takes effect only where the cluster's
    network plugin enforces NetworkPolicies."""
    enabled: bool = Field(True, description="Write the NetworkPolicy (default true).")
    from_: list[dict[str, Any]] = Field(
        default_factory=list, alias="from",
        json_schema_extra=core("networking.v1.NetworkPolicyPeer", maxItems=16), description=(
            "More clients allowed on the API port, as core networking/v1 NetworkPolicyPeers "
            "(podSelector, namespaceSelector, ipBlock): e.g. the namespace of a Gateway or an "
            "ingress controller. Pods of this namespace are always allowed."))
    monitoring_namespace: str = Field(
        "monitoring", max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description=(
            "Namespace whose pods may scrape the metrics port (default monitoring), matched by "
            "its kubernetes.io/metadata.name label."))


class ApiKeySecretRef(Section):
    """Secret in this namespace whose key holds one API key per line; mounted read-only into the pods."""
    name: DnsName = Field(description="Secret name.")
    key: str = Field("api-key", max_length=253, pattern=SECRET_KEY,
                     description="Key inside the Secret (default api-key).")


class RedisUrlSecretRef(Section):
    """Secret in this namespace whose key holds the Redis URL (redis://...)."""
    name: DnsName = Field(description="Secret name.")
    key: str = Field("redis-url", max_length=253, pattern=SECRET_KEY,
                     description="Key inside the Secret (default redis-url).")


class Auth(Section):
    """API keys clients must send (Authorization Bearer or X-API-Key)."""
    api_key_secret_ref: ApiKeySecretRef | None = None


class Cache(Section):
    """Optional shared response cache in Redis; the runtime keeps serving when Redis is down."""
    model_config = ConfigDict(json_schema_extra=rules(cel(
        "has(self.redisUrlSecretRef)", "spec.cache.redisUrlSecretRef is required when spec.cache is set "
        "(the Redis URL may hold a password, so it comes from a Secret).", ".redisUrlSecretRef",
        "FieldValueRequired")))

    redis_url_secret_ref: RedisUrlSecretRef
    ttl_seconds: int = Field(300, ge=1, le=604800,
                             description="How long a cached response lives, in seconds (default 300).")


class Runtime(Section):
    """The runtime container."""
    image: str | None = Field(None, min_length=1, max_length=512, json_schema_extra=rules(cel(
        "self.matches('^[A-Za-z0-9][A-Za-z0-9._:/@-]*$') && !self.endsWith(':') && !self.contains('//')",
        "must be an image reference such as registry.example.com/bem-runtime:0.1.0 (no spaces, no scheme).",
        reason="FieldValueInvalid")),
        description="Runtime image; defaults to the operator's configured runtime image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Image pull policy of the runtime container.")
    image_pull_secrets: list[Annotated[DnsName, Field(
        description="Name of a docker-registry Secret.")]] = Field(
        default_factory=list, max_length=8,
        description="Names of Secrets in this namespace used to pull the image.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Runtime log level (default info).")
    max_batch_size: Annotated[int | None, RuntimeEnv("BEM_MAX_BATCH_SIZE")] = Field(
        None, ge=1, le=512, description="Most requests batched into one forward pass (runtime default 16).")
    max_queue: Annotated[int | None, RuntimeEnv("BEM_MAX_QUEUE")] = Field(None, ge=1, le=100000, description=(
        "Requests waiting per pod before new ones get 503 with Retry-After (runtime default 256)."))
    max_checkpoints: Annotated[int, RuntimeEnv("BEM_MAX_CHECKPOINTS")] = Field(
        DEFAULT_MAX_CHECKPOINTS, ge=1, le=64, description=(
            "BEM checkpoints each pod holds at once over its one base model, the service's own "
            "(spec.model.checkpointPath) included (default 8): the BEMCheckpoints of this service "
            "beyond maxCheckpoints - 1 wait, Degraded with reason CheckpointCapacity."))
    trusted_proxies: Annotated[list[Annotated[str, Field(max_length=64, description="One CIDR.", json_schema_extra=rules(
        cel("isCIDR(self)", "must be a CIDR such as 10.0.0.0/8 or 2001:db8::/64.",
            reason="FieldValueInvalid")))]] | None, RuntimeEnv("BEM_TRUSTED_PROXIES")] = Field(
        None, max_length=32, description=(
            "CIDRs of the proxies in front of the pods (e.g. the Gateway's pod network) whose "
            "X-Forwarded-For the runtime believes: its per-client rate limit then keys on the "
            "right-most address outside them. Unset: the peer address. A valid API key keys the "
            "limit whatever the address."))
    startup_timeout_seconds: int = Field(600, ge=10, le=7200, description=(
        "Time a pod may take to load and warm up the model before it is restarted; liveness "
        "checks start only after. Default 600."))
    # The CEL rules that refuse the flags and names the operator sets (extraArgs, env) are
    # generated from runtime_fields.py and the runtime's settings table (crdgen/__init__.py).
    extra_args: list[Annotated[str, Field(max_length=1024, description="One argument.")]] = Field(
        default_factory=list, max_length=64, description=(
            'Extra arguments appended to "bem-runtime serve". Flags the operator sets from spec '
            "fields (--model-dir, --bem-dir, --port, --log-level, ...) are refused: set the field instead."))
    env: list[dict[str, Any]] = Field(default_factory=list, json_schema_extra=core(
        "core.v1.EnvVar", maxItems=64,
        **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
        description=("Extra environment variables of the runtime container, e.g. BEM_RATE_LIMIT_RPS. "
                     "The BEM_* variables that mirror spec fields are refused (set the field)."))


SECTION_DEFAULT = {"default": {}}  # defaulted as a whole, so its defaults show in kubectl get -o yaml
# Gateway API's own patterns (gateway.networking.k8s.io/v1): a Hostname, a Duration.
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DURATION = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"
Hostname = Annotated[str, Field(max_length=253, pattern=HOSTNAME, description=(
    "A host name such as bem.example.com, or a wildcard such as *.example.com."))]
PathPrefix = Annotated[str, Field(max_length=1024, pattern=r"^/[A-Za-z0-9/._~%!$&'()*+,;=:@-]*$")]
# A streamed generation can run for minutes: the edge's timeouts must not cut it.
DEFAULT_EDGE_TIMEOUT = "600s"


class ParentRef(Section):
    """A Gateway the route attaches to."""
    name: Annotated[str, Field(min_length=1, max_length=253)] = Field(description="Gateway name.")
    namespace: str | None = Field(None, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                                  description="Gateway namespace (default: this namespace).")
    section_name: str | None = Field(None, max_length=253, pattern=DNS_SUBDOMAIN, description=(
        "One listener of the Gateway (default: every listener that admits the route)."))


class GatewayTimeouts(Section):
    """HTTPRoute timeouts (Gateway API durations such as 600s or 10m)."""
    model_config = ConfigDict(json_schema_extra=rules(cel(
        "!has(self.request) || !has(self.backendRequest) || duration(self.request) == duration('0s') || "
        "duration(self.backendRequest) <= duration(self.request)",
        "spec.gateway.timeouts.backendRequest must not exceed request.", ".backendRequest")))

    request: str = Field(DEFAULT_EDGE_TIMEOUT, max_length=32, pattern=DURATION, description=(
        "How long the Gateway waits for the whole response, streaming included (default 600s; "
        "0s: no limit)."))
    backend_request: str = Field(DEFAULT_EDGE_TIMEOUT, max_length=32, pattern=DURATION,
                                 description="How long one try at a runtime pod may take (default 600s).")


# RFC 6797's max-age: a year by default, two years at most (what HSTS preload lists ask for).
DEFAULT_HSTS_MAX_AGE = 31_536_000
MAX_HSTS_MAX_AGE = 63_072_000


class GatewayRateLimit(Section):
    """Per-client rate limit at the Gateway. The operator writes a Traefik Middleware
    (traefik.io/v1alpha1, rateLimit, per second) and names it in the route's rule with an
    ExtensionRef filter, so the Gateway must be Traefik with its kubernetescrd provider.
    Traefik keys the limit on the client address it sees (its default source criterion: the
    request's remote address); a load balancer in front of the Gateway must keep that address
    (externalTrafficPolicy Local). The limit belongs here: behind the Gateway the runtime sees
    only the Gateway's pods as clients, and its own per-pod limit stays a last line."""
    average: int = Field(ge=1, le=100000, description=(
        "Requests per second each client address may send on average."))
    burst: int | None = Field(None, ge=1, le=100000, description=(
        "Requests a client address may send at once (the size of its token bucket; default: "
        "average)."))


class GatewaySpec(Section):
    """The Gateway API HTTPRoute the operator writes (gateway.networking.k8s.io/v1): the
    Gateways named here route hostnames and a path prefix to this service's Service. The
    cluster needs the Gateway API CRDs and a Gateway controller; the route's Accepted and
    ResolvedRefs conditions show in status.gateway."""
    parent_refs: list[ParentRef] = Field(min_length=1, max_length=32, description=(
        "Gateways the route attaches to."))
    hostnames: list[Hostname] = Field(default_factory=list, max_length=16, description=(
        "Host names the route answers (default: every host of the listener). The first one "
        "makes status.gateway.url."))
    path_prefix: PathPrefix = Field("/", description="Path prefix routed to the service (default /).")
    timeouts: GatewayTimeouts = Field(default_factory=GatewayTimeouts, json_schema_extra=SECTION_DEFAULT)
    hsts_max_age_seconds: int = Field(
        DEFAULT_HSTS_MAX_AGE, ge=0, le=MAX_HSTS_MAX_AGE, description=(
            "max-age of the Strict-Transport-Security header (with includeSubDomains) the route "
            "adds to every response (default 31536000, a year; 0: no header). Only the TLS edge "
            "can send it: browsers ignore it over plain HTTP. The runtime sends the other "
            "security headers itself (X-Content-Type-Options, X-Frame-Options, Referrer-Policy, "
            "Content-Security-Policy, Cache-Control)."))
    rate_limit: GatewayRateLimit | None = None


class IngressSpec(Section):
    """The networking.k8s.io/v1 Ingress the operator writes, for clusters without Gateway API."""
    ingress_class_name: str | None = Field(None, max_length=253, pattern=DNS_SUBDOMAIN, description=(
        "IngressClass that serves it (default: the cluster's default class)."))
    hosts: list[Hostname] = Field(
        default_factory=list, max_length=16,
        description="Host names routed to the service (default: every host).")
    path_prefix: PathPrefix = Field("/", description="Path prefix routed to the service (default /).")
    tls_secret_name: DnsName | None = Field(None, description=(
        "kubernetes.io/tls Secret in this namespace with the certificate of the hosts; unset: "
        "plain HTTP."))



class Spec(Section):
    """Desired state of the service. Only model is required."""
    model_config = ConfigDict(json_schema_extra=rules(
        cel("!(has(self.replicas) && has(self.autoscaling))",
            "spec.replicas and spec.autoscaling are mutually exclusive: the HorizontalPodAutoscaler "
            "(ours, or KEDA's) owns the replica count while spec.autoscaling is set (so kubectl "
            "scale is refused); remove one of them.", ".replicas", "FieldValueForbidden"),
        *(cel(f"!has(self.autoscaling) || !has(self.autoscaling.target{pct}Utilization) || "
              f"(has(self.resources) && ((has(self.resources.requests) && "
              f"'{res}' in self.resources.requests) || "
              f"(has(self.resources.limits) && '{res}' in self.resources.limits)))",
              f"spec.autoscaling.target{pct}Utilization is a percentage of the {what} request: set "
              f"spec.resources.requests.{res} too.", f".autoscaling.target{pct}Utilization")
          for pct, res, what in (("CPU", "cpu", "CPU"), ("Memory", "memory", "memory"))),
        cel("!has(self.autoscaling) || !has(self.autoscaling.provider) || "
            "self.autoscaling.provider != 'KEDA' || !has(self.monitoring) || "
            "!has(self.monitoring.serviceMonitor) || self.monitoring.serviceMonitor",
            "spec.monitoring.serviceMonitor must be true with spec.autoscaling.provider KEDA: its "
            "Prometheus query selects the series by the labels our ServiceMonitor gives them.",
            ".monitoring.serviceMonitor"),
        cel("!(has(self.gateway) && has(self.ingress))",
            "spec.gateway and spec.ingress are mutually exclusive: set the one your cluster "
            "serves (Gateway API's HTTPRoute, or an Ingress).", ".ingress", "FieldValueForbidden")))

    model: ModelSpec
    replicas: int | None = Field(None, ge=0, le=1000, description=(
        "Fixed number of runtime pods (default 1). Mutually exclusive with spec.autoscaling. "
        "Also written by kubectl scale."))
    autoscaling: Autoscaling | None = None
    resources: dict[str, dict[str, int | str]] = Field(default_factory=dict, json_schema_extra=core(
        "core.v1.ResourceRequirements"), description=(
            "CPU, memory and other resources of the runtime container. GPUs are set with "
            "spec.gpu, not here."))
    gpu: Gpu = Field(default_factory=Gpu)
    node_selector: dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] = Field(
        default_factory=dict, max_length=32, json_schema_extra=rules(cel(
            f"self.all(k, k.matches(r'{LABEL_KEY}'))",
            "every key must be a node label key (an optional DNS prefix and '/', then at most 63 "
            "letters, digits, '-', '_' or '.').", reason="FieldValueInvalid")),
        description=("Extra node labels the pods must match; merged with the GPU product selector "
                     "(these win on a conflict)."))
    tolerations: list[dict[str, Any]] = Field(default_factory=list, json_schema_extra=core(
        "core.v1.Toleration", maxItems=32), description=(
            "Extra tolerations; the GPU toleration is added for you when spec.gpu.count > 0."))
    affinity: dict[str, Any] | None = Field(None, json_schema_extra=core("core.v1.Affinity"), description=(
        "A core/v1 Affinity (nodeAffinity, podAffinity, podAntiAffinity), copied to the pods as "
        "it is and checked with core/v1's own schema and rules, so a misspelt field or operator "
        "is refused here instead of being ignored by the scheduler."))
    rollout: Rollout = Field(default_factory=Rollout, json_schema_extra=SECTION_DEFAULT)
    disruption_budget: DisruptionBudget = Field(default_factory=DisruptionBudget,
                                                json_schema_extra=SECTION_DEFAULT)
    service: ServiceSpec = Field(default_factory=ServiceSpec, json_schema_extra=SECTION_DEFAULT)
    monitoring: Monitoring = Field(default_factory=Monitoring, json_schema_extra=SECTION_DEFAULT)
    network_policy: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec,
                                              json_schema_extra=SECTION_DEFAULT)
    gateway: GatewaySpec | None = None
    ingress: IngressSpec | None = None
    auth: Auth | None = None
    cache: Cache | None = None
    runtime: Runtime = Field(default_factory=Runtime, json_schema_extra=SECTION_DEFAULT)


class BEMServiceSpec(Spec):
    """The spec as the builders read it: the typed spec plus the object's identity."""
    name: str
    namespace: str
    uid: str

    @property
    def served_name(self) -> str:
        return self.model.served_name or self.name

    @property
    def api_keys(self) -> ApiKeySecretRef | None:
        return self.auth.api_key_secret_ref if self.auth is not None else None


class CheckpointSpec(Section):
    """Desired state of a BEMCheckpoint: one more BEM checkpoint served by every Ready pod of
    a BEMService in this namespace, over the same base model, under the BEMCheckpoint's name."""

    service: str = Field(max_length=63, pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", json_schema_extra=rules(
        cel("self == oldSelf", "spec.service cannot change: delete this BEMCheckpoint and create "
            "one for the other BEMService.", reason="FieldValueForbidden")),
        description="Name of the BEMService (in this namespace) whose pods serve this checkpoint.")
    path: ModelPath = Field(json_schema_extra=_path_rule("spec.path"),
        description=("Checkpoint directory (bem_config.json and experts.safetensors), relative to "
                     "/models in the service's pods (its model volume or image). Changing it "
                     "replaces the checkpoint on the running pods; requests already running "
                     "finish on the old one."))
