"""Start, stop and use the local control plane.

`start()` brings up etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok as background processes recorded in a state folder,
registers the fake nodes and waits until a pod could run; with `real_node=True`
it also joins a real kubelet node (devcluster/realnode.py) on which CPU pods run
for real. `stop()` tears the node down (host state included), ends every
recorded process and removes the folder. An ephemeral cluster (tests) also dies
with its owner: atexit, SIGTERM turned into KeyboardInterrupt, and the
kernel's parent-death signal when the owner is killed outright.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from devcluster import audit, binaries, certs, components, processes, realnode
from devcluster import kubeconfig as kcfg
from devcluster.binaries import Binaries
from devcluster.client import Client
from devcluster.components import Layout, Ports
from devcluster.health import (
    StartupError,
    admin_tls,
    http_ok,
    self_signed_tls,
    wait_for_component,
)
from devcluster.nodes import manifest, node_ready

MARKER = ".bem-devcluster"  # only folders carrying it are ever deleted
STATE_FILE = "cluster.json"
TEMP_PREFIX = "bem-devcluster-"
STALE_AFTER_S = 600  # a boot takes far less: older folders with no live process are dead
ORDER = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]


ENV_STATE_DIR = "BEM_DEVCLUSTER_DIR"


def default_state_dir() -> Path:
    """Where `bem-devcluster up` keeps its cluster: $BEM_DEVCLUSTER_DIR, else .devcluster/ in
    the repository root when run from a checkout, else in the current folder."""
    env = os.environ.get(ENV_STATE_DIR)
    if env:
        return Path(env).resolve()
    repo = Path(__file__).resolve().parent.parent
    base = repo if (repo / "pyproject.toml").is_file() else Path.cwd()
    return base / ".devcluster"


class AlreadyRunning(RuntimeError):
    """The state folder holds a live cluster."""


class DevCluster(Client):
    """A control plane this process started (or found in a state folder)."""

    def __init__(self, state_dir: Path, bins: Binaries, *, ephemeral: bool,
                 real_node: bool = False) -> None:
        self.layout = Layout(state_dir)
        self.state_dir = state_dir
        self.ephemeral = ephemeral
        self.real_node = real_node
        super().__init__(self.layout.admin_kubeconfig, bins, scratch=state_dir)

    # ---- lifecycle -------------------------------------------------------
    @classmethod
    def start(
        cls,
        state_dir: Path | None = None,
        *,
        bins: Binaries | None = None,
        timeout: float = 180.0,
        real_node: bool = False,
    ) -> DevCluster:
        """Start a cluster; with no state_dir, an ephemeral one in a temp folder."""
        bins = bins or binaries.ensure()
        ephemeral = state_dir is None
        realnode.sweep_dead_owner()
        if state_dir is None:
            sweep_stale(Path(tempfile.gettempdir()))
            state_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        else:
            _prepare_state_dir(state_dir)
        (state_dir / MARKER).touch()
        cluster = cls(state_dir, bins, ephemeral=ephemeral, real_node=real_node)
        if ephemeral:
            atexit.register(cluster.stop)
            interrupt_on_sigterm()
        try:
            cluster._boot_retrying(timeout)
            if real_node:  # pods resolve names and report usage, as in any cluster
                from devcluster import kubesystem

                kubesystem.install(cluster, realnode.NodeLayout(state_dir), timeout=timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @classmethod
    def from_state_dir(cls, state_dir: Path) -> DevCluster:
        """The cluster recorded in state_dir (for `down`/`status` in another shell)."""
        meta = json.loads((state_dir / STATE_FILE).read_text())
        return cls(state_dir, Binaries(Path(meta["bin_dir"])), ephemeral=False,
                   real_node=meta.get("real_node", False))

    def running(self) -> dict[str, bool]:
        """Each recorded component and whether its process is alive."""
        return {c.name: c.is_ours() for c in processes.recorded(self.state_dir)}

    def stop(self) -> None:
        """Stop every component and remove the state folder (idempotent)."""
        if not self.state_dir.exists():
            return
        realnode.release(self.state_dir)
        processes.stop_all(self.state_dir)
        if (self.state_dir / MARKER).exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def restart_apiserver(self, down_seconds: float = 0.0, timeout: float = 60.0) -> float:
        """Stop the API server (SIGTERM), leave it down `down_seconds`, start it again with
        the same flags and wait for /readyz: an outage drill for clients such as the
        operator. Returns how long the API server was away, in seconds; `last_stop_seconds`
        says how long it took to exit after SIGTERM."""
        meta = json.loads((self.state_dir / STATE_FILE).read_text())
        ports = Ports(**meta["ports"])
        comp = next(c for c in processes.recorded(self.state_dir) if c.name == "kube-apiserver")
        began = time.monotonic()
        processes.stop(comp)
        self.last_stop_seconds = time.monotonic() - began
        time.sleep(down_seconds)
        pki = self.layout.pki
        api = self._spawn("kube-apiserver", components.apiserver(self.bins, self.layout, ports),
                          self.ephemeral)
        tls = admin_tls(pki.crt("ca"), pki.crt("admin"), pki.key("admin"))
        self._wait("kube-apiserver /readyz", api, timeout,
                   lambda: http_ok(f"{meta['server']}/readyz", tls))
        return time.monotonic() - began

    # ---- boot ------------------------------------------------------------
    def _boot_retrying(self, timeout: float, attempts: int = 3) -> None:
        # A free port may be taken by someone else between our probe and the
        # component's bind (several clusters start at once on a shared host).
        for attempt in range(1, attempts + 1):
            try:
                self._boot(timeout)
                return
            except StartupError as exc:
                if "address already in use" not in str(exc) or attempt == attempts:
                    raise
                realnode.release(self.state_dir)
                processes.stop_all(self.state_dir)
                for child in self.state_dir.iterdir():
                    if child.name not in (MARKER, "logs"):  # logs append: keep the story
                        shutil.rmtree(child) if child.is_dir() else child.unlink()

    def _boot(self, timeout: float) -> None:
        began = time.monotonic()
        lay, bins = self.layout, self.bins
        if self.real_node:
            realnode.claim(self.state_dir)  # before anything changes on the host: the baseline
        pki = certs.generate(lay.pki.root)
        ports = Ports(*(processes.free_port() for _ in range(5)))
        server = f"https://127.0.0.1:{ports.apiserver}"
        self._write_kubeconfigs(server)
        (self.state_dir / STATE_FILE).write_text(
            json.dumps({"bin_dir": str(bins.bin_dir), "server": server,
                        "ports": ports.__dict__, "real_node": self.real_node})
        )
        processes.record_order(self.state_dir, [*ORDER, *realnode.COMPONENTS])
        die = self.ephemeral

        etcd = self._spawn("etcd", components.etcd(bins, lay, ports), die)
        self._wait("etcd /health", etcd, timeout,
                   lambda: http_ok(f"http://127.0.0.1:{ports.etcd_client}/health"))
        audit.write_policy(self.state_dir)
        api = self._spawn("kube-apiserver", components.apiserver(bins, lay, ports), die)
        tls = admin_tls(pki.crt("ca"), pki.crt("admin"), pki.key("admin"))
        self._wait("kube-apiserver /readyz", api, timeout,
                   lambda: http_ok(f"{server}/readyz", tls))
        kcm = self._spawn(
            "kube-controller-manager", components.controller_manager(bins, lay, ports), die
        )
        sched = self._spawn("kube-scheduler", components.scheduler(bins, lay, ports), die)
        kwok = self._spawn("kwok", components.kwok(bins, lay), die, components.kwok_env(lay))
        self.kubectl("create", "-f", "-", input=json.dumps(manifest(real_node=self.real_node)))
        insecure = self_signed_tls()
        for comp, port in ((kcm, ports.controller_manager), (sched, ports.scheduler)):
            url = f"https://127.0.0.1:{port}/healthz"
            self._wait(f"{comp.name} /healthz", comp, timeout,
                       lambda url=url: http_ok(url, insecure))
        self._wait("fake nodes Ready and untainted", kwok, timeout, self._nodes_ready)
        # Pods are refused until the namespace's default ServiceAccount exists.
        self._wait("ServiceAccount default/default", kcm, timeout,
                   lambda: self.kubectl("get", "sa", "default", check=False).returncode == 0)
        # A /healthz that answered may be another cluster's, on a port taken between our probe
        # and the bind (the component then exits on "address already in use"): a component
        # that died fails the boot, which _boot_retrying starts again on other ports.
        for comp in (etcd, api, kcm, sched, kwok):
            if not comp.is_ours():
                log = processes.log_path(self.state_dir, comp.name)
                raise StartupError(f"{comp.name} exited during startup:\n{processes.tail(log)}")
        if self.real_node:
            realnode.RealNode(self.state_dir, bins, kubectl=self.kubectl, pki_dir=lay.pki.root,
                              server=server, die_with_parent=self.ephemeral).start(timeout)
        self.startup_seconds = time.monotonic() - began

    def _write_kubeconfigs(self, server: str) -> None:
        lay, pki = self.layout, self.layout.pki
        kcfg.write(lay.admin_kubeconfig, server=server, ca_file=pki.crt("ca"),
                   user="admin", cert_file=pki.crt("admin"), key_file=pki.key("admin"))
        for comp in ("kube-controller-manager", "kube-scheduler"):
            kcfg.write(lay.kubeconfig(comp), server=server, ca_file=pki.crt("ca"),
                       user=comp, cert_file=pki.crt(comp), key_file=pki.key(comp))

    def _spawn(self, name: str, argv: list[str], die: bool,
               env: dict[str, str] | None = None) -> processes.Component:
        return processes.spawn(name, argv, self.state_dir, env=env, die_with_parent=die)

    def _wait(self, what: str, comp: processes.Component, timeout: float, check) -> None:
        wait_for_component(self.state_dir, comp, what, check, timeout)

    def _nodes_ready(self) -> bool:
        out = self.kubectl("get", "nodes", "-o", "json", check=False)
        if out.returncode != 0:
            return False
        items = json.loads(out.stdout)["items"]
        expected = {n["metadata"]["name"] for n in manifest(real_node=self.real_node)["items"]}
        ready = set()
        for node in items:
            taints = {t["key"] for t in node.get("spec", {}).get("taints", [])}
            if node_ready(node) and not any(
                t.startswith("node.kubernetes.io/") for t in taints
            ):
                ready.add(node["metadata"]["name"])
        return expected <= ready


def _prepare_state_dir(state_dir: Path) -> None:
    """Refuse a live cluster; clear a stale one; refuse a folder that is not ours."""
    if not state_dir.exists():
        state_dir.mkdir(parents=True)
        return
    if not any(state_dir.iterdir()):
        return
    if not (state_dir / MARKER).exists():
        raise StartupError(
            f"{state_dir} is not empty and was not made by bem-devcluster; "
            "pass an empty or new folder"
        )
    if any(c.is_ours() for c in processes.recorded(state_dir)):
        raise AlreadyRunning(f"a cluster is already running in {state_dir}; "
                             "`bem-devcluster down` stops it")
    processes.stop_all(state_dir)
    shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)


def sweep_stale(parent: Path) -> list[Path]:
    """Remove ephemeral cluster folders whose owner was killed outright (SIGKILL).

    Their processes died with the owner (parent-death signal); only folders
    of ours, older than a boot could take, with no live process, are removed.
    """
    removed = []
    for folder in parent.glob(f"{TEMP_PREFIX}*"):
        try:
            old = time.time() - folder.stat().st_mtime > STALE_AFTER_S
            if not (old and (folder / MARKER).exists() and (folder / STATE_FILE).exists()):
                continue
            if any(c.is_ours() for c in processes.recorded(folder)):
                continue
        except OSError:
            continue  # another session removed it meanwhile
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so finalizers and atexit run."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def _raise(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, _raise)
    except ValueError:
        pass  # not the main thread: the parent-death signal still covers us
