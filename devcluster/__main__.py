"""`bem-devcluster`: build, start, stop and inspect the local control plane.

    bem-devcluster build            build the binaries (cached per version)
    bem-devcluster up [--foreground] [--no-real-node]
                                    start in .devcluster/ (or --state-dir), with a
                                    real kubelet node unless --no-real-node
    bem-devcluster images           build the project images (buildah) and import
                                    them into the real node's containerd
    bem-devcluster env              print `export KUBECONFIG=...` and PATH
    bem-devcluster status           which components run, API server health
    bem-devcluster restart-apiserver [--down S]
                                    stop the API server, start it again (drills)
    bem-devcluster down             stop everything and remove the state folder
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from devcluster import binaries, realnode
from devcluster.cluster import (ENV_STATE_DIR, STATE_FILE, AlreadyRunning, DevCluster,
                                default_state_dir, interrupt_on_sigterm)
from devcluster.health import StartupError

def _recorded(state_dir: Path) -> DevCluster | None:
    if not (state_dir / STATE_FILE).is_file():
        return None
    return DevCluster.from_state_dir(state_dir)


def _with_real_node(state_dir: Path, command: str) -> DevCluster | None:
    """The recorded cluster when it runs the real node; None, saying so, otherwise."""
    cluster = _recorded(state_dir)
    if cluster is None or not cluster.real_node:
        print(f"bem-devcluster {command} needs a running cluster with the real node: "
              "run `bem-devcluster up` first", file=sys.stderr)
        return None
    return cluster


def _print_env(cluster: DevCluster) -> None:
    print(f"export KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}")
    print(f"export PATH={shlex.quote(str(cluster.bins.bin_dir))}:\"$PATH\"")


def cmd_build(args: argparse.Namespace) -> int:
    found = binaries.build()
    print(found.bin_dir)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    if args.foreground:
        interrupt_on_sigterm()  # `kill` stops the cluster like Ctrl-C does
    try:
        cluster = DevCluster.start(args.state_dir, timeout=args.timeout,
                                   real_node=args.real_node)
    except AlreadyRunning as exc:
        print(f"bem-devcluster: {exc}", file=sys.stderr)
        existing = _recorded(args.state_dir)
        if existing is not None:
            _print_env(existing)
        return 0
    print(f"control plane up in {cluster.startup_seconds:.1f}s; "
          f"kubeconfig: {cluster.kubeconfig}", file=sys.stderr)
    _print_env(cluster)
    if not args.foreground:
        return 0
    print("running in the foreground; Ctrl-C stops it", file=sys.stderr)
    try:
        while all(cluster.running().values()):
            time.sleep(1)
        print(f"a component exited: {cluster.running()}; see {args.state_dir}/logs",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


def cmd_images(args: argparse.Namespace) -> int:
    from devcluster import addons, edge, images, kubesystem

    cluster = _recorded(args.state_dir)
    lay = None
    if cluster is not None and cluster.real_node and not args.no_import:
        lay = realnode.NodeLayout(cluster.state_dir)
    began = time.monotonic()
    add_ons = (*kubesystem.IMAGES, *addons.IMAGES, *edge.IMAGES)
    chosen = {"project": images.ALL, "addons": add_ons, "all": (*images.ALL, *add_ons)}[args.only]
    report = images.ensure_all(lay, chosen)
    print(f"{'image':40} {'id':13} {'size':>9} {'seconds':>8}  built imported")
    for ref, row in report.items():
        print(f"{ref:40} {row['id']:13} {row['bytes'] / 2**20:7.0f}Mi {row['seconds']:8.1f}  "
              f"{'yes' if row['built'] else 'no':5} {'yes' if row['imported'] else 'no'}")
    print(f"images ready in {time.monotonic() - began:.0f}s", file=sys.stderr)
    return 0


def cmd_addons(args: argparse.Namespace) -> int:
    from devcluster import addons, images

    cluster = _with_real_node(args.state_dir, "addons")
    if cluster is None:
        return 1
    report = images.ensure_all(realnode.NodeLayout(cluster.state_dir), addons.IMAGES)
    for ref, row in report.items():
        print(f"{ref:44} {row['bytes'] / 2**20:5.0f}Mi {row['seconds']:6.1f}s", file=sys.stderr)
    addons.install(cluster)
    print(f"Prometheus: {addons.PROMETHEUS_URL}; "
          f"KEDA serves external.metrics.k8s.io", file=sys.stderr)
    return 0


def cmd_edge(args: argparse.Namespace) -> int:
    from devcluster import edge

    cluster = _with_real_node(args.state_dir, "edge")
    if cluster is None:
        return 1
    edge.install(cluster)  # logs where the Gateway is
    print(f"Clients verify https://<name>.{edge.DOMAIN} with {edge.ca_file(cluster)}",
          file=sys.stderr)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    realnode.sweep_dead_owner()
    cluster = _recorded(args.state_dir)
    if cluster is None:
        print(f"no cluster recorded in {args.state_dir}", file=sys.stderr)
        return 0
    cluster.stop()
    print(f"stopped; removed {args.state_dir}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cluster = _recorded(args.state_dir)
    if cluster is None:
        print(f"not running (nothing recorded in {args.state_dir})")
        return 1
    running = cluster.running()
    for name, alive in running.items():
        print(f"{name:24} {'running' if alive else 'STOPPED'}")
    ready = cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
    print(f"{'apiserver /readyz':24} {ready.stdout.strip() or ready.stderr.strip()}")
    print(f"{'kubeconfig':24} {cluster.kubeconfig}")
    return 0 if all(running.values()) and ready.returncode == 0 else 1


def cmd_restart_apiserver(args: argparse.Namespace) -> int:
    cluster = _recorded(args.state_dir)
    if cluster is None:
        print(f"no cluster recorded in {args.state_dir}", file=sys.stderr)
        return 1
    away = cluster.restart_apiserver(down_seconds=args.down)
    print(f"kube-apiserver restarted; unreachable for {away:.1f}s", file=sys.stderr)
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    cluster = _recorded(args.state_dir)
    if cluster is None:
        print(f"no cluster recorded in {args.state_dir}; run `bem-devcluster up`",
              file=sys.stderr)
        return 1
    _print_env(cluster)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bem-devcluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-dir", type=Path, default=None,
                   help=f"cluster state folder (default: .devcluster/ in the repo; "
                        f"env {ENV_STATE_DIR})")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the binaries (skips cached ones)").set_defaults(
        func=cmd_build)
    up = sub.add_parser("up", help="start the control plane (builds first if needed)")
    up.add_argument("--foreground", action="store_true",
                    help="stay attached; Ctrl-C stops the cluster")
    up.add_argument("--no-real-node", dest="real_node", action="store_false",
                    help="no kubelet node: kwok fakes a CPU node too (no containers run)")
    up.add_argument("--timeout", type=float, default=180.0,
                    help="seconds to wait for each component (default 180)")
    up.set_defaults(func=cmd_up)
    images = sub.add_parser("images", help="build the images; import them into the real node")
    images.add_argument("--no-import", action="store_true",
                        help="only build (no running real node needed)")
    images.add_argument("--only", choices=("project", "addons", "all"), default="all",
                        help="the project's images (operator, runtime, runtime with the toy model: "
                             "they need no Go build, so setup builds them beside the Go builds), "
                             "the add-ons' (CoreDNS, metrics-server, Prometheus, KEDA, Traefik: "
                             "they need the add-on binaries), or both")
    images.set_defaults(func=cmd_images)
    sub.add_parser("addons", help="build, import and install Prometheus (by the Prometheus "
                   "operator) and KEDA into the running cluster").set_defaults(func=cmd_addons)
    sub.add_parser("edge", help="build, import and install the edge: Traefik as the Gateway API "
                   "implementation and Gateway edge/edge (HTTPS for *.edge.test)"
                   ).set_defaults(func=cmd_edge)
    restart = sub.add_parser("restart-apiserver",
                             help="stop the API server and start it again (outage drills)")
    restart.add_argument("--down", type=float, default=0.0,
                         help="seconds to leave it stopped before the restart (default 0)")
    restart.set_defaults(func=cmd_restart_apiserver)
    for name, func, text in (
        ("down", cmd_down, "stop every component and remove the state folder"),
        ("status", cmd_status, "show components and API server readiness"),
        ("env", cmd_env, "print shell exports for kubectl/helm"),
    ):
        sub.add_parser(name, help=text).set_defaults(func=func)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.state_dir = (args.state_dir or default_state_dir()).resolve()
    try:
        return args.func(args)
    except (StartupError, binaries.BinariesMissing, RuntimeError) as exc:
        print(f"bem-devcluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
