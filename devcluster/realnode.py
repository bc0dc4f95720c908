"""A real worker node joined to the local control plane: pods that actually run.

containerd (CRI, overlayfs, runc) + the bridge CNI plugin + kubelet + kube-proxy,
as components of the cluster's state folder, stopped by the same machinery. What
they change on the host (iptables, links, mounts, cgroups, sysctls, host paths)
is recorded before start (`hoststate.snapshot`) in a machine-wide owner record
and put back by `teardown`: after a normal stop, and, when the owner was killed
outright, by the next start or `bem-devcluster down` (`sweep_dead_owner`).

One real node per machine: the kubelet's ports, the bridge and iptables are
machine-wide. Images live in a containerd root in the user's cache folder, so an
image imported once serves every later cluster on this machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devcluster import hoststate, processes
from devcluster import kubeconfig as kcfg
from devcluster.binaries import Binaries, cache_root
from devcluster.components import POD_CIDR as KWOK_POD_CIDR
from devcluster.health import StartupError, http_ok, wait_for_component, wait_until
from devcluster.network import BRIDGE_IP, CLUSTER_DNS_IP, CLUSTER_DOMAIN, SERVICE_CIDR
from devcluster.nodes import REAL_NODE, node_ready

NODE_NAME = REAL_NODE
NODE_LABEL = "bem.ai/node"  # =real on the real node
POD_CIDR = "10.88.0.0/24"  # kwok hands its fake pods 10.244.0.0/16
KWOK_POD_RANGE = str(ipaddress.ip_network(KWOK_POD_CIDR, strict=False))
BRIDGE = "bemnode0"
# Pods reach the API server (loopback-only) through the `kubernetes` Service:
# kube-proxy sends its ClusterIP:443 to this forwarder on the bridge address.
APISERVER_BRIDGE_PORT = 6443
KUBELET_PORT = 10250
CNI_BIN_DIR = "/usr/lib/cni"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
COMPONENTS = ("containerd", "apiserver-bridge", "kubelet", "kube-proxy")
NODE_ROOT = Path("/var/lib/bem-devcluster")
TOOLS = ("containerd", "runc", "ctr", "iptables", "ip", "socat")


class NodeInUse(RuntimeError):
    """Another live cluster on this machine holds the real node."""


def node_dir() -> Path:
    """Machine-wide state of the real node: owner record, containerd's image store."""
    return cache_root() / "node"


def owner_file() -> Path:
    return node_dir() / "owner.json"


@dataclass(frozen=True)
class NodeLayout:
    """Where one cluster's real node keeps its per-run files."""

    state_dir: Path

    @property
    def root(self) -> Path:
        """The node's files (containerd state, kubelet root, CNI): a short path, one per
        state folder. containerd and the kubelet make unix sockets in there, and socket
        paths are limited to ~104 bytes (a pytest temp folder is longer)."""
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        return NODE_ROOT / digest

    @property
    def containerd_sock(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def containerd_root(self) -> Path:
        return node_dir() / "containerd-root"

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def ctr(lay: NodeLayout, *args: str, check: bool = True,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """containerd's own client on this node's socket, in the CRI namespace."""
    argv = ["ctr", "-a", str(lay.containerd_sock), "-n", "k8s.io", *args]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args[:2])} failed ({out.returncode}): "
                               f"{out.stderr.strip()[-2000:]}")
        return out
    except subprocess.TimeoutExpired:
        if check:
            raise
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {timeout}s")


# ---- configuration files -------------------------------------------------------------
def containerd_config(lay: NodeLayout) -> str:
    return f"""version = 2
root = "{lay.containerd_root}"
state = "{lay.path('containerd', 'state')}"
[grpc]
  address = "{lay.containerd_sock}"
[ttrpc]
  address = "{lay.containerd_sock}.ttrpc"
[debug]
  address = "{lay.root / 'debug.sock'}"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    netns_mounts_under_state_dir = true
    # root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start
    restrict_oom_score_adj = true
    enable_unprivileged_ports = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{CNI_BIN_DIR}"
      conf_dir = "{lay.path('cni', 'net.d')}"
  [plugins."io.containerd.internal.v1.opt"]
    path = "{lay.path('containerd', 'opt')}"
"""


def cni_config(lay: NodeLayout) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "bem-node-net",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(lay.path("cni", "ipam"))}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }


def kubelet_config(lay: NodeLayout, pki_dir: Path) -> dict[str, Any]:
    sock = f"unix://{lay.containerd_sock}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,  # these machines run cgroup v1
        "failSwapOn": False,
        "containerRuntimeEndpoint": sock,
        "imageServiceEndpoint": sock,
        "podLogsDir": str(lay.path("kubelet", "pod-logs")),
        "volumePluginDir": str(lay.path("kubelet", "volume-plugins")),
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki_dir / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        # The pods resolve through the cluster's CoreDNS (devcluster/kubesystem.py) only: no
        # host resolv.conf, so no pod learns the machine's own resolvers or search domains.
        "clusterDNS": [CLUSTER_DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "",
        # Served with a cert the cluster CA signs (certs.py): the API server and metrics-server
        # verify the kubelet instead of skipping the check.
        "tlsCertFile": str(pki_dir / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki_dir / "kubelet-serving.key"),
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        # The kubelet sets a few kernel tunables (overcommit, panic); teardown puts them back.
        "protectKernelDefaults": False,
        "maxPods": 50,
        "serializeImagePulls": False,
        # A dev machine's disk fills with images: never evict pods for it.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "shutdownGracePeriod": "0s",
        "localStorageCapacityIsolation": True,
    }


def kube_proxy_config(lay: NodeLayout) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(lay.path("kube-proxy.kubeconfig"))},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False,
                     "minSyncPeriod": "1s", "syncPeriod": "30s"},
        # All zero: kube-proxy leaves the host's conntrack sysctls alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
    }


def kubernetes_endpoints() -> dict[str, Any]:
    """The `kubernetes` Service's endpoints: the forwarder on the bridge address."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes-bridge",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes",
                       "endpointslice.kubernetes.io/managed-by": "bem-devcluster"},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [BRIDGE_IP], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": APISERVER_BRIDGE_PORT, "protocol": "TCP"}],
    }


def node_rbac() -> dict[str, Any]:
    # The control plane authorizes with RBAC only (no Node authorizer).
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "bem-devcluster:real-nodes"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "system:node"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                      "name": "system:nodes"}],
    }


# ---- lifecycle ----------------------------------------------------------------------
def claim(state_dir: Path) -> None:
    """Take the machine's real node for the cluster in state_dir: refuse when another
    holds it (DevCluster.start has swept a dead owner already) and record the host
    baseline before anything changes."""
    record = _owner()
    if record is not None:
        other = record["state_dir"]
        raise NodeInUse(
            f"the real node is in use by the cluster in {other}; stop it with "
            f"`bem-devcluster --state-dir {other} down` (one real node per machine)"
        )
    if missing_tools():
        raise StartupError(
            f"the real node needs {', '.join(missing_tools())}: run scripts/setup.sh "
            "(or pass --no-real-node)")
    node_dir().mkdir(parents=True, exist_ok=True)
    record = {"state_dir": str(state_dir), "baseline": hoststate.snapshot()}
    tmp = owner_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.rename(owner_file())


class RealNode:
    """Start and stop the real node of the cluster in `state_dir`."""

    def __init__(self, state_dir: Path, bins: Binaries, *, kubectl, pki_dir: Path,
                 server: str, die_with_parent: bool) -> None:
        self.lay = NodeLayout(state_dir)
        self.state_dir = state_dir
        self.bins = bins
        self.kubectl = kubectl
        self.pki_dir = pki_dir
        self.server = server
        self.die = die_with_parent

    # -- start --------------------------------------------------------------
    def start(self, timeout: float) -> None:
        lay = self.lay
        for sub in ("containerd", "cni/net.d", "kubelet/pod-logs", "kubelet/root"):
            lay.path(*sub.split("/")).mkdir(parents=True, exist_ok=True)
        lay.root.chmod(0o700)
        lay.containerd_root.mkdir(parents=True, exist_ok=True)
        self._bridge()
        lay.path("containerd", "config.toml").write_text(containerd_config(lay))
        lay.path("cni", "net.d", "10-bem-bridge.conflist").write_text(
            json.dumps(cni_config(lay), indent=1))
        ca = self.pki_dir / "ca.crt"
        for comp in ("kubelet", "kube-proxy"):
            kcfg.write(lay.path(f"{comp}.kubeconfig"), server=self.server, ca_file=ca,
                       user=comp, cert_file=self.pki_dir / f"{comp}.crt",
                       key_file=self.pki_dir / f"{comp}.key")
        self.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "List",
             "items": [node_rbac(), kubernetes_endpoints()]}))

        containerd = self._spawn("containerd", ["containerd", "--config",
                                                str(lay.path("containerd", "config.toml"))])
        self._wait("containerd socket", containerd, timeout,
                   lambda: lay.containerd_sock.exists()
                   and ctr(lay, "version", check=False, timeout=10).returncode == 0)
        purge_containers(lay)
        from devcluster import images  # the pause image must be there before any pod

        images.ensure_pause(lay)
        self._spawn("apiserver-bridge", [
            "socat", f"TCP-LISTEN:{APISERVER_BRIDGE_PORT},bind={BRIDGE_IP},reuseaddr,fork",
            f"TCP:127.0.0.1:{self.server.rsplit(':', 1)[1]}"])

        lay.path("kubelet", "config.yaml").write_text(
            yaml.safe_dump(kubelet_config(lay, self.pki_dir)))
        kubelet = self._spawn("kubelet", [
            str(self.bins.path("kubelet")),
            f"--config={lay.path('kubelet', 'config.yaml')}",
            f"--kubeconfig={lay.path('kubelet.kubeconfig')}",
            f"--root-dir={lay.path('kubelet', 'root')}",
            f"--cert-dir={lay.path('kubelet', 'pki')}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={BRIDGE_IP}",  # the address its serving cert names
            f"--node-labels={NODE_LABEL}=real",
            "--v=1",
        ])
        self._wait(f"node {NODE_NAME} Ready", kubelet, timeout, self._ready)
        lay.path("kube-proxy.yaml").write_text(yaml.safe_dump(kube_proxy_config(lay)))
        proxy = self._spawn("kube-proxy", [str(self.bins.path("kube-proxy")),
                                           f"--config={lay.path('kube-proxy.yaml')}", "--v=1"])
        self._wait("kube-proxy /healthz", proxy, timeout,
                   lambda: http_ok("http://127.0.0.1:10256/healthz"))

    def _bridge(self) -> None:
        # Made here rather than by the CNI plugin: the API server forwarder binds its
        # address before the first pod exists. Teardown deletes it.
        run = subprocess.run
        if run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0:
            run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
        run(["ip", "addr", "replace", f"{BRIDGE_IP}/24", "dev", BRIDGE], check=True)
        run(["ip", "link", "set", BRIDGE, "up"], check=True)
        # The Service range routes into the bridge, not the default route: a host process
        # (the API server's aggregator, a test) that reaches a ClusterIP before kube-proxy
        # has its rule, or after it is gone, goes nowhere instead of off this machine.
        # kube-proxy's DNAT still sends served ClusterIPs on to their pods. The route goes
        # with the bridge at teardown.
        run(["ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE], check=True)
        # kwok's fake pods have addresses nothing serves: a packet to one (the operator asking
        # a "Ready" kwok pod for its checkpoints) is dropped here instead of leaving by the
        # default route. Removed at teardown.
        run(["ip", "route", "replace", "blackhole", KWOK_POD_RANGE], check=True)

    def _ready(self) -> bool:
        out = self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        return out.returncode == 0 and node_ready(json.loads(out.stdout))

    def _spawn(self, name: str, argv: list[str]) -> processes.Component:
        return processes.spawn(name, argv, self.state_dir, die_with_parent=self.die)

    def _wait(self, what: str, comp: processes.Component, timeout: float, check) -> None:
        wait_for_component(self.state_dir, comp, what, check, timeout)


def purge_containers(lay: NodeLayout) -> None:
    """Remove every task and container from the node's containerd (a fresh node
    must not inherit the sandboxes of a previous run from the shared image store)."""
    tasks = ctr(lay, "tasks", "ls", "-q", check=False).stdout.split()
    for task in tasks:
        ctr(lay, "tasks", "kill", "-s", "SIGKILL", task, check=False)
    deadline = time.monotonic() + 10
    for task in tasks:
        while ctr(lay, "tasks", "delete", "-f", task, check=False).returncode != 0:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    for container in ctr(lay, "containers", "ls", "-q", check=False).stdout.split():
        ctr(lay, "containers", "delete", container, check=False)


def _kill_shims(lay: NodeLayout) -> None:
    # The containerd shims re-parent themselves and outlive containerd: find ours
    # by the socket they were given.
    address = str(lay.containerd_sock)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"containerd-shim" in argv[0] and address.encode() in argv:
            subprocess.run(["kill", "-9", proc.name], capture_output=True)


def teardown(state_dir: Path, baseline: dict[str, Any] | None) -> None:
    """Stop the node's components and put the host back as the baseline had it.

    Order: kube-proxy (then its own --cleanup) -> kubelet -> containers -> containerd
    -> mounts under the state folder -> bridge -> iptables -> cgroups -> sysctls ->
    host paths. Safe to run twice and on a node whose processes are already dead.
    """
    lay = NodeLayout(state_dir)
    comps = {c.name: c for c in processes.recorded(state_dir)}
    processes.stop_all(state_dir, ("kube-proxy", "kubelet", "apiserver-bridge"))
    proxy_bin = _recorded_binary(comps.get("kube-proxy"))
    if proxy_bin:
        subprocess.run([proxy_bin, "--cleanup", "--v=0"], capture_output=True, timeout=60)
    if "containerd" in comps and comps["containerd"].is_ours():
        purge_containers(lay)
    hoststate.kill_cgroup_processes()
    _kill_shims(lay)
    processes.stop_all(state_dir, ("containerd",))
    hoststate.unmount_under(lay.root)
    hoststate.delete_bridge(BRIDGE)
    subprocess.run(["ip", "route", "del", "blackhole", KWOK_POD_RANGE], capture_output=True)
    if baseline is not None:
        hoststate.restore_iptables(baseline)
        hoststate.remove_kubepods_cgroups()
        hoststate.restore_sysctls(baseline)
        hoststate.remove_new_host_paths(baseline)
    shutil.rmtree(lay.root, ignore_errors=True)
    with contextlib.suppress(OSError):
        NODE_ROOT.rmdir()  # only when empty


def _recorded_binary(comp: processes.Component | None) -> str | None:
    return comp.exe if comp is not None and Path(comp.exe).is_file() else None


def release(state_dir: Path) -> None:
    """Tear down the node of state_dir if it owns the machine's real node."""
    record = _owner()
    if record is not None and Path(record["state_dir"]) == state_dir:
        _teardown_owner(record)


def _teardown_owner(record: dict[str, Any]) -> None:
    teardown(Path(record["state_dir"]), record["baseline"])
    owner_file().unlink(missing_ok=True)


def _owner() -> dict[str, Any] | None:
    try:
        return json.loads(owner_file().read_text())
    except (OSError, ValueError):
        return None


def sweep_dead_owner() -> bool:
    """A node whose owner died (SIGKILL, a crash) left host state behind: put it back.

    The owner is dead when no component recorded in its state folder still runs.
    Returns True when something was swept.
    """
    record = _owner()
    if record is None:
        return False
    state_dir = Path(record["state_dir"])
    if any(c.is_ours() for c in processes.recorded(state_dir)):
        return False
    _teardown_owner(record)
    return True


# ---- where traffic may go -------------------------------------------------------------
def local_addresses() -> set[str]:
    out = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True).stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3}


def served_here(ip: str) -> str | None:
    """Why a packet to ip stays on this machine (a local address, a pod behind the
    node's bridge, a ClusterIP kube-proxy has a rule for), or None when it would
    leave by the default route (a kwok pod IP, a ClusterIP without a rule)."""
    if ip in local_addresses():
        return "a local address"
    if ipaddress.ip_address(ip) in ipaddress.ip_network(SERVICE_CIDR):
        # The Service range routes into the bridge too (a safety net): only kube-proxy's
        # rule makes a ClusterIP answer.
        nat = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True,
                             text=True).stdout
        return "a ClusterIP with a kube-proxy rule" if f"-d {ip}/32" in nat else None
    route = subprocess.run(["ip", "route", "get", ip], capture_output=True, text=True).stdout
    if f" dev {BRIDGE} " in route:
        return f"a pod on {BRIDGE}"
    return None


def wait_served_here(ip: str, timeout: float = 30.0) -> str:
    """Block until served_here(ip); raise instead of ever sending traffic off the machine."""
    why: list[str] = []

    def served() -> bool:
        why[:] = [served_here(ip) or ""]
        return bool(why[0])
    wait_until(f"{ip} to be served on this machine (a local address, a bridge route or a "
               "kube-proxy rule) before sending it anything", served, timeout=timeout,
               interval=0.2)
    return why[0]
