"""The cluster's addresses, in one place: the Service range (API server flag, serving cert,
real node's route), the real node's bridge address and the cluster DNS Service's ClusterIP.

A /20 holds 4,094 ClusterIPs: the 1000-BEMService benchmark needs 1000 at once, and the
issue asks for room for 4,000. Nothing on a development machine or a CI runner is expected in
10.0.0.0/20; the real node routes it into its bridge (realnode.py), where only kube-proxy's
rules answer.
"""

from __future__ import annotations

import ipaddress

SERVICE_CIDR = "10.0.0.0/20"
_RANGE = ipaddress.ip_network(SERVICE_CIDR)
# The API server gives the `kubernetes` Service the range's first address.
KUBERNETES_SERVICE_IP = str(next(_RANGE.hosts()))
# The real node's bridge (realnode.py): its pods' gateway and the node's InternalIP.
BRIDGE_IP = "10.88.0.1"


def static_band() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The low addresses the API server hands out dynamically only when the rest is full
    (KEP-3070: min(max(16, size/16), 256) addresses), so fixed ClusterIPs go there."""
    size = min(max(16, _RANGE.num_addresses // 16), 256)
    return list(_RANGE.hosts())[:size]


CLUSTER_DOMAIN = "cluster.local"
# kube-dns's ClusterIP, fixed (the kubelet writes it into every pod's resolv.conf before the
# Service exists): the tenth address, as in kubeadm's clusters, inside the static band.
CLUSTER_DNS_IP = str(static_band()[9])
