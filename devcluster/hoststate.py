"""What a real node changes on the host, recorded before it starts and put back after.

A kubelet node touches machine-wide state that outlives its processes: iptables
chains (kube-proxy, kubelet, the CNI plugins), network links (the bridge, veth
pairs), mounts (network namespaces, overlay root filesystems, volume tmpfs),
cgroups (``kubepods``), a few sysctls and some hard-coded host paths. `snapshot()`
captures all of it as plain data; `restore()` removes what appeared since a
baseline; `diff()` says what still differs (the teardown tests assert it is empty).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

# Chains and rules the node's components create (kube-proxy, kubelet, CNI bridge/portmap).
NODE_CHAIN = re.compile(r"^(KUBE-|CNI-)")
NODE_RULE = re.compile(r"(KUBE-|CNI-|bem-node-net)")
IPT_TABLES = ("nat", "filter", "mangle")
# Sysctls the bridge plugin (ip_forward) and the kubelet's kernel tunables may write.
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)
# Paths the kubelet and the containerd 1.6 shim create whatever their configured roots.
# Plus the node's own root (realnode.NODE_ROOT), so a leftover of it shows too.
HOST_PATHS = ("/var/lib/kubelet", "/run/containerd", "/usr/libexec/kubernetes", "/var/run/netns",
              "/var/lib/bem-devcluster")
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"


def _run(*argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    values = {}
    for key in SYSCTLS:
        with contextlib.suppress(OSError):
            values[key] = _sysctl_path(key).read_text().strip()
    return values


def iptables_rules(family: str = "v4") -> dict[str, list[str]]:
    """Table -> chain declarations and rules, without counters or comments."""
    tool = "iptables-save" if family == "v4" else "ip6tables-save"
    if shutil.which(tool) is None:
        return {}
    out = _run(tool).stdout
    tables: dict[str, list[str]] = {}
    table = None
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
            tables[table] = []
        elif table and line.startswith(("-A", ":")):
            tables[table].append(line.split(" [")[0] if line.startswith(":") else line)
    return tables


def links() -> list[str]:
    out = _run("ip", "-o", "link", "show").stdout
    return sorted(line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line)


def mounts() -> list[str]:
    return sorted(line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines())


def kubepods_cgroups() -> list[str]:
    found = []
    if CGROUP_ROOT.is_dir():
        for hierarchy in CGROUP_ROOT.iterdir():
            pods = hierarchy / KUBEPODS
            if pods.is_dir():
                # os.walk skips a cgroup removed while it walks (by the kubelet, or a sweep of
                # a dead owner's node in another process), where rglob raised.
                found += [os.path.join(root, name) for root, dirs, _ in os.walk(pods)
                          for name in dirs]
                found.append(str(pods))
    return sorted(found)


def snapshot() -> dict[str, Any]:
    """The host state a node may change, as JSON-able data."""
    return {
        "iptables": {"v4": iptables_rules("v4"), "v6": iptables_rules("v6")},
        "links": links(),
        "mounts": mounts(),
        "cgroups": kubepods_cgroups(),
        "sysctls": read_sysctls(),
        "host_paths": sorted(p for p in HOST_PATHS if Path(p).exists()),
    }


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What differs between two snapshots (empty when the host is as it was)."""
    out: dict[str, Any] = {}
    for fam in ("v4", "v6"):
        b, a = before["iptables"].get(fam, {}), after["iptables"].get(fam, {})
        for table in sorted(set(a) | set(b)):
            added = sorted(set(a.get(table, [])) - set(b.get(table, [])))
            removed = sorted(set(b.get(table, [])) - set(a.get(table, [])))
            if table not in b and table in a:
                added.insert(0, f"(table {table} created)")
            if added or removed:
                out[f"iptables-{fam}-{table}"] = {"added": added, "removed": removed}
    for key in ("links", "mounts", "cgroups", "host_paths"):
        added = sorted(set(after[key]) - set(before[key]))
        removed = sorted(set(before[key]) - set(after[key]))
        if added or removed:
            out[key] = {"added": added, "removed": removed}
    changed = {k: (before["sysctls"].get(k), v) for k, v in after["sysctls"].items()
               if before["sysctls"].get(k) != v}
    if changed:
        out["sysctls"] = changed
    return out


# ---- restoring -------------------------------------------------------------------------
def kill_cgroup_processes() -> int:
    """SIGKILL every process left in the kubepods cgroups (containers of a dead node)."""
    pids: set[int] = set()
    for cg in kubepods_cgroups():
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in Path(cg, "cgroup.procs").read_text().split()}
    for pid in pids:
        _run("kill", "-9", str(pid))
    return len(pids)


def unmount_under(prefix: Path) -> None:
    """Unmount everything mounted below prefix, deepest first (lazily if busy)."""
    base = str(prefix).rstrip("/") + "/"
    for point in sorted((m for m in mounts() if m.startswith(base)), key=len, reverse=True):
        if _run("umount", point).returncode != 0:
            _run("umount", "-l", point)


def delete_bridge(name: str) -> None:
    out = _run("ip", "-o", "link", "show", "master", name).stdout
    for line in out.splitlines():
        if ": " in line:
            _run("ip", "link", "del", line.split(": ")[1].split("@")[0])
    _run("ip", "link", "del", name)


def restore_iptables(baseline: dict[str, Any]) -> None:
    """Delete the node's rules and chains that the baseline did not have, v4 and v6."""
    for fam, tool in (("v4", "iptables"), ("v6", "ip6tables")):
        if shutil.which(tool) is None:
            continue
        base = baseline["iptables"].get(fam, {})
        for table in IPT_TABLES:
            before = set(base.get(table, []))
            now = iptables_rules(fam).get(table, [])
            for rule in now:
                if rule.startswith("-A") and NODE_RULE.search(rule) and rule not in before:
                    _run(tool, "-t", table, *shlex.split("-D" + rule[2:]))
            chains = [ln.split()[0][1:] for ln in iptables_rules(fam).get(table, [])
                      if ln.startswith(":") and NODE_CHAIN.match(ln[1:])
                      and ln not in before]
            for chain in chains:
                _run(tool, "-t", table, "-F", chain)
            for chain in chains:
                _run(tool, "-t", table, "-X", chain)
        _drop_new_empty_tables(fam, base)


def _drop_new_empty_tables(fam: str, base: dict[str, list[str]]) -> None:
    # iptables-nft leaves the (empty) nat/filter/mangle tables behind.
    if shutil.which("nft") is None:
        return
    nft_family = "ip" if fam == "v4" else "ip6"
    now = iptables_rules(fam)
    for table in IPT_TABLES:
        if table in base or table not in now:
            continue
        if not any(line.startswith("-A") for line in now[table]):
            _run("nft", "delete", "table", nft_family, table)


def remove_kubepods_cgroups() -> None:
    for cg in sorted(kubepods_cgroups(), key=len, reverse=True):
        with contextlib.suppress(OSError):
            Path(cg).rmdir()


def restore_sysctls(baseline: dict[str, Any]) -> None:
    now = read_sysctls()
    for key, value in baseline["sysctls"].items():
        if now.get(key) != value:
            with contextlib.suppress(OSError):
                _sysctl_path(key).write_text(value)


def remove_new_host_paths(baseline: dict[str, Any]) -> None:
    for path in HOST_PATHS:
        if path in baseline["host_paths"] or not Path(path).exists():
            continue
        unmount_under(Path(path))
        shutil.rmtree(path, ignore_errors=True)
