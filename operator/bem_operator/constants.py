"""Names the operator, its builders, the chart and the tests share: each defined once here.

Pure (no imports): the builders, the status derivation and the API layer all read it.
"""
from __future__ import annotations

GROUP = "bem.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "BEMService"
PLURAL = "bemservices"
CHECKPOINT_KIND = "BEMCheckpoint"
CHECKPOINT_PLURAL = "bemcheckpoints"
# The label every child and runtime pod carries; the operator watches children by it.
OWNER_LABEL = f"{GROUP}/service"
# Server-side apply manager of every child, and the one that holds Deployment replicas
# while an HPA takes them over (so dropping the field from our apply does not reset it).
FIELD_MANAGER = "bem-operator"
HANDOVER_MANAGER = "bem-operator-handover"
# Pod-template annotation: a digest of everything that must roll the pods when it changes.
CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"
DEFAULT_RUNTIME_IMAGE = "bem-runtime:0.1.0"
# The Prometheus that KEDA's prometheus trigger queries: prometheus-operator's governing
# Service of a Prometheus in the namespace "monitoring" (kube-prometheus' layout).
DEFAULT_PROMETHEUS_ADDRESS = "http://prometheus-operated.monitoring.svc:9090"
# On every child: a digest of what the operator declared in its last apply of it, so a
# field dropped from the spec shows as a difference from the live object.
APPLIED_ANNOTATION = f"{GROUP}/applied"
