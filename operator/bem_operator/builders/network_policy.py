"""The runtime pods' NetworkPolicy (networking.k8s.io/v1): who may reach which port.

- http (the API): pods of the BEMService's own namespace, the peers of spec.networkPolicy.from,
  and the namespaces of the Gateways of spec.gateway (their pods forward the clients' requests);
- metrics: pods of the monitoring namespace (spec.networkPolicy.monitoringNamespace);
- admin: the operator's pods only (their namespace and labels, BuildOptions.operator); none when
  the operator does not know its namespace (run outside the cluster).

Everything else is refused (policyTypes Ingress; egress is left alone). An ingress rule with no
`from` would admit every source, so each rule here names its peers.
"""

from __future__ import annotations

import copy
from typing import Any

from bem_operator.builders.edge import gateway_namespaces
from bem_operator.builders.labels import child_metadata, selector_labels
from bem_operator.builders.options import BuildOptions
from bem_operator.builders.pod import RUNTIME_PORTS
from bem_operator.builders.spec_types import BEMServiceSpec

# The label the API server puts on every namespace (its name): what a namespaceSelector can
# match without the user labelling anything.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _port(name: str) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": RUNTIME_PORTS[name][0]}]


def namespace_peer(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}}


def network_policy_from_spec(spec: BEMServiceSpec, options: BuildOptions) -> dict[str, Any] | None:
    policy = spec.network_policy
    if not policy.enabled:
        return None
    # An empty podSelector alone: every pod of the policy's own namespace.
    api_peers = [{"podSelector": {}}, *(copy.deepcopy(dict(p)) for p in policy.from_),
                 *(namespace_peer(ns) for ns in gateway_namespaces(spec) if ns != spec.namespace)]
    ingress: list[dict[str, Any]] = [
        {"ports": _port("http"), "from": api_peers},
        {"ports": _port("metrics"), "from": [namespace_peer(policy.monitoring_namespace)]},
    ]
    operator = options.operator
    if operator.namespace is not None:
        ingress.append({"ports": _port("admin"), "from": [{
            **namespace_peer(operator.namespace),
            "podSelector": {"matchLabels": dict(operator.labels)}}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(spec),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(spec.name)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
