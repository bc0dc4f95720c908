"""Command lines of the control-plane components (what envtest passes, plus
what controllers, scheduling and fake nodes need). Everything binds 127.0.0.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devcluster import audit
from devcluster.binaries import Binaries
from devcluster.certs import Pki
from devcluster.network import SERVICE_CIDR
from devcluster.nodes import KWOK_SELECTOR

POD_CIDR = "10.244.0.1/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Only the controllers the project needs: fewer informers, less CPU on a shared
# machine. No taint-eviction-controller: a starved kwok heartbeat must not
# evict test pods.
CONTROLLERS = (
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "horizontal-pod-autoscaler-controller",
    "disruption-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "resourcequota-controller",
    "pod-garbage-collector-controller",
    "ttl-after-finished-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    # Bind PVCs to PVs (the samples mount model volumes) and release the protection
    # finalizers the API server adds, so namespaces holding PVCs can be deleted.
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
    # Removes the not-ready taint the API server puts on every new node.
    "node-lifecycle-controller",
)

CONTROLLER_QPS = 200
# Their /metrics on loopback without a client identity (benchmarks read client-go's rate-limit
# waits there); the defaults are the health paths only.
METRICS_UNAUTHENTICATED = "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics"


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int


@dataclass(frozen=True)
class Layout:
    """Where one cluster keeps its files."""

    state_dir: Path

    @property
    def pki(self) -> Pki:
        return Pki(self.state_dir / "pki")

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def kubeconfig(self, component: str) -> Path:
        return self.state_dir / "kubeconfigs" / f"{component}.kubeconfig"


def etcd(bins: Binaries, lay: Layout, ports: Ports) -> list[str]:
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        str(bins.path("etcd")),
        "--name=bem-devcluster",
        f"--data-dir={lay.state_dir / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=bem-devcluster={peer}",
        "--unsafe-no-fsync",
        "--quota-backend-bytes=2147483648",
        "--log-level=warn",
    ]


def apiserver(bins: Binaries, lay: Layout, ports: Ports) -> list[str]:
    pki = lay.pki
    return [
        str(bins.path("kube-apiserver")),
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        f"--cert-dir={lay.state_dir / 'apiserver-certs'}",
        f"--tls-cert-file={pki.crt('apiserver')}",
        f"--tls-private-key-file={pki.key('apiserver')}",
        f"--client-ca-file={pki.crt('ca')}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=RBAC",
        "--allow-privileged=true",
        # The default admission chain includes ServiceAccount (token volumes),
        # NamespaceLifecycle, DefaultTolerationSeconds and ResourceQuota.
        f"--service-account-issuer={SA_ISSUER}",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        # Endpoints may not hold loopback addresses: no `kubernetes` endpoints.
        "--endpoint-reconciler-type=none",
        f"--requestheader-client-ca-file={pki.crt('front-proxy-ca')}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.crt('front-proxy-client')}",
        f"--proxy-client-key-file={pki.key('front-proxy-client')}",
        # kubectl logs/exec/port-forward reach the real node's kubelet by its InternalIP.
        f"--kubelet-client-certificate={pki.crt('apiserver-kubelet-client')}",
        f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        "--profiling=false",
        # Exit within ~2 s of SIGTERM: without it the HTTP server waits up to the request
        # timeout (60 s) for clients' long-lived HTTP/2 watch connections to go idle.
        "--shutdown-send-retry-after=true",
        # Who wrote what (the operator's ServiceAccounts only): devcluster/audit.py.
        *audit.apiserver_flags(lay.state_dir),
        "--v=1",
    ]


def controller_manager(bins: Binaries, lay: Layout, ports: Ports) -> list[str]:
    return [
        str(bins.path("kube-controller-manager")),
        f"--kubeconfig={lay.kubeconfig('kube-controller-manager')}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.controller_manager}",
        f"--cert-dir={lay.state_dir / 'controller-manager-certs'}",
        "--leader-elect=false",
        f"--controllers={','.join(CONTROLLERS)}",
        f"--service-account-private-key-file={lay.pki.sa_key}",
        f"--root-ca-file={lay.pki.crt('ca')}",
        "--use-service-account-credentials=true",
        # kwok renews leases every few seconds; on a starved shared machine it
        # may lag, so allow two minutes before a node is called unhealthy.
        "--node-monitor-grace-period=120s",
        # client-go's default 20 QPS (burst 30) per controller throttled the replicaset and
        # deployment controllers for minutes at 1000 Deployments (bench/bench_operator.py
        # prints their rate-limit waits); the API server, not the client, should be the limit.
        f"--kube-api-qps={CONTROLLER_QPS}",
        f"--kube-api-burst={2 * CONTROLLER_QPS}",
        METRICS_UNAUTHENTICATED,
        "--profiling=false",
        "--v=1",
    ]


def scheduler(bins: Binaries, lay: Layout, ports: Ports) -> list[str]:
    return [
        str(bins.path("kube-scheduler")),
        f"--kubeconfig={lay.kubeconfig('kube-scheduler')}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.scheduler}",
        f"--cert-dir={lay.state_dir / 'scheduler-certs'}",
        "--leader-elect=false",
        METRICS_UNAUTHENTICATED,
        "--profiling=false",
        "--v=1",
    ]


def kwok(bins: Binaries, lay: Layout) -> list[str]:
    # No --config: kwok then uses its built-in node and pod stages (nodes
    # become Ready, scheduled pods Running and Ready, deleted pods go away).
    return [
        str(bins.path("kwok")),
        f"--kubeconfig={lay.admin_kubeconfig}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_SELECTOR}",
        "--node-lease-duration-seconds=40",
        f"--cidr={POD_CIDR}",
    ]


def kwok_env(lay: Layout) -> dict[str, str]:
    # Keep kwok away from a user's ~/.kwok configuration.
    return {"KWOK_WORKDIR": str(lay.state_dir / "kwok")}
