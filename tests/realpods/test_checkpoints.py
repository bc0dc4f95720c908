"""BEMCheckpoints on real pods: three checkpoints applied to a 2-replica BEMService, scaled to 4,
a runtime pod deleted, the operator's leader pod deleted, two bad checkpoints (one made for
another base, one directory that is no checkpoint) degraded with the runtime's own message,
and one checkpoint deleted, under
bounded request loops (one per checkpoint, through the Service, each started only once its
checkpoint is Ready). After every step each BEMCheckpoint's status.pods equals what each Ready
pod answers on GET /v1/checkpoints (asked with the admin token, as the operator does), and no
request fails.

Every request goes to a ClusterIP kube-proxy serves here or to a pod IP behind the node's
bridge (checked before sending); every loop is bounded in count and time. Figures are printed
(run with -s to see them): apply -> Ready, and a scale-up pod's start -> Ready with its
checkpoints.
"""
from __future__ import annotations

import base64
import json
import time
import urllib.request
from datetime import datetime
from typing import Any

from bem_operator.builders.pod import ADMIN_PORT
from devcluster.health import wait_until
from devcluster.realnode import wait_served_here

from .conftest import OPERATOR_NS
from .support import (BAKED_IMAGE, SMALL, Load, apply, bems_ready, figure, get_json,
                      runtime_pods, service_url)

SERVICE = "ck"
CHECKPOINTS = {"alpha": "checkpoints/alpha", "beta": "checkpoints/beta",
               "gamma": "checkpoints/gamma"}  # baked into the image (docker/toy-model.Dockerfile)
# Directories of the image the pods must refuse: a checkpoint made for another base (hidden
# size 96, ours is 64), and the base model's own directory, which is no checkpoint.
BAD = {"foreign": "foreign/bem", "not-a-checkpoint": "base"}
LEASE = "bem-operator"  # the chart's default: the release's full name


def service(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "bem.ai/v1alpha1", "kind": "BEMService", "metadata": {"name": SERVICE},
        "spec": {
            "model": {"source": "Image", "basePath": "base", "checkpointPath": "bem"},
            "replicas": replicas, "resources": SMALL,
            "rollout": {"strategy": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 0},
            "runtime": {"image": BAKED_IMAGE, "imagePullPolicy": "Never",
                        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}]},
            "monitoring": {"serviceMonitor": False},
        },
    }


def checkpoint(name: str) -> dict[str, Any]:
    return {"apiVersion": "bem.ai/v1alpha1", "kind": "BEMCheckpoint", "metadata": {"name": name},
            "spec": {"service": SERVICE, "path": {**CHECKPOINTS, **BAD}[name]}}


def degraded(cluster: Any, ns: str, name: str) -> dict[str, Any] | None:
    body = get_json(cluster, "bemcheckpoint", name, "-n", ns)
    return next((c for c in (body.get("status") or {}).get("conditions") or []
                 if c["type"] == "Degraded" and c["status"] == "True"), None)


def _ready(pod: dict[str, Any]) -> str | None:
    """When the pod turned Ready (its condition's lastTransitionTime), None if it is not."""
    for cond in pod["status"].get("conditions") or []:
        if cond["type"] == "Ready" and cond["status"] == "True":
            return cond["lastTransitionTime"]
    return None


def ready_pods(cluster: Any, ns: str) -> list[dict[str, Any]]:
    return [p for p in runtime_pods(cluster, ns, SERVICE) if _ready(p) and p["status"].get("podIP")]


def admin_token(cluster: Any, ns: str) -> str:
    secret = get_json(cluster, "secret", f"{SERVICE}-admin-token", "-n", ns)
    return base64.b64decode(secret["data"]["token"]).decode()


def served_by(pod: dict[str, Any], token: str) -> dict[str, dict[str, Any]]:
    """What the pod's runtime says it serves: GET /v1/checkpoints, as the operator asks."""
    ip = pod["status"]["podIP"]
    wait_served_here(ip)
    request = urllib.request.Request(f"http://{ip}:{ADMIN_PORT}/v1/checkpoints",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        body = json.loads(resp.read())
    return {e["name"]: e for e in body["data"] if e["state"] == "loaded"}


def in_step(cluster: Any, ns: str, names: list[str], token: str) -> bool:
    """Each BEMCheckpoint's status.pods is what each Ready pod answers, and all are loaded."""
    answers = {p["metadata"]["name"]: served_by(p, token) for p in ready_pods(cluster, ns)}
    for name in names:
        status = get_json(cluster, "bemcheckpoint", name, "-n", ns).get("status") or {}
        said = {p["name"]: p["loaded"] for p in status.get("pods") or []}
        truth = {pod: answer.get(name, {}).get("path") == f"/models/{CHECKPOINTS[name]}"
                 for pod, answer in answers.items()}
        if said != truth or not all(truth.values()) or not truth:
            return False
    return True


def wait_in_step(cluster: Any, ns: str, names: list[str], what: str) -> None:
    token = admin_token(cluster, ns)
    wait_until(f"every checkpoint's status to match every Ready pod ({what})",
               lambda: in_step(cluster, ns, names, token), timeout=240, interval=1)


def ready_condition(cluster: Any, ns: str, name: str) -> bool:
    body = get_json(cluster, "bemcheckpoint", name, "-n", ns)
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (body.get("status") or {}).get("conditions") or [])


def lease_holder(cluster: Any) -> str:
    return cluster.kubectl("get", "lease", LEASE, "-n", OPERATOR_NS, "-o",
                           "jsonpath={.spec.holderIdentity}").stdout.strip()


def _seconds(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def show_start_lists(cluster: Any, ns: str) -> None:
    """For the known gap (printed every run, so a failing one has it): what each runtime
    process started with (its "Became ready" log line names the checkpoints it held then),
    its restarts, and when the start list changed."""
    for pod in get_json(cluster, "pods", "-n", ns, "-l", f"bem.ai/service={SERVICE}")["items"]:
        name = pod["metadata"]["name"]
        restarts = [c.get("restartCount") for c in pod["status"].get("containerStatuses", [])]
        logs = cluster.kubectl("logs", "-n", ns, name, "--all-containers", "--prefix",
                               check=False).stdout
        became = [line for line in logs.splitlines() if "Became ready" in line]
        figure(f"gap diagnosis: pod {name} created {pod['metadata']['creationTimestamp']}, "
               f"restarts {restarts}: {became}")
    meta = get_json(cluster, "configmap", f"{SERVICE}-checkpoints", "-n", ns,
                    "--show-managed-fields")["metadata"]
    writes = [(m.get("manager"), m.get("time")) for m in meta.get("managedFields", [])]
    figure(f"gap diagnosis: start list rv {meta['resourceVersion']}, written {writes}")


def test_checkpoints_follow_the_pods_through_scaling_restarts_and_deletion(
        real_cluster: Any, operator_release: str, real_ns: str) -> None:
    cluster, ns = real_cluster, real_ns
    apply(cluster, ns, service(2))
    bems_ready(cluster, ns, SERVICE)
    url = service_url(cluster, ns, SERVICE)

    # Three checkpoints applied: each Ready on both pods within seconds, no pod restarted.
    template = get_json(cluster, "deployment", SERVICE, "-n", ns)["spec"]["template"]
    before = {p["metadata"]["name"] for p in runtime_pods(cluster, ns, SERVICE)}
    applied = time.monotonic()
    for name in CHECKPOINTS:
        apply(cluster, ns, checkpoint(name))
    became_ready: dict[str, float] = {}

    def all_ready() -> bool:
        for name in CHECKPOINTS:
            if name not in became_ready and ready_condition(cluster, ns, name):
                became_ready[name] = time.monotonic() - applied
        return len(became_ready) == len(CHECKPOINTS)
    wait_until("three BEMCheckpoints Ready", all_ready, timeout=120, interval=0.2)
    figure("apply -> Ready on 2 pods: " + ", ".join(
        f"{name} {seconds:.1f}s" for name, seconds in sorted(became_ready.items())))
    wait_in_step(cluster, ns, list(CHECKPOINTS), "applied")
    assert get_json(cluster, "deployment", SERVICE, "-n", ns)["spec"]["template"] == template
    assert {p["metadata"]["name"] for p in runtime_pods(cluster, ns, SERVICE)} == before

    loads = {name: Load(url, model=name, max_requests=2500, max_seconds=420, pause=0.2)
             for name in CHECKPOINTS}
    for load in loads.values():
        load.__enter__()
    try:
        for load in loads.values():
            load.wait_for(3)

        # Scale 2 -> 4: the new pods hold every checkpoint before they turn Ready.
        scale_began = time.monotonic()
        cluster.kubectl("scale", f"bems/{SERVICE}", "-n", ns, "--replicas=4")
        wait_until("4 Ready pods", lambda: len(ready_pods(cluster, ns)) == 4, timeout=300,
                   interval=1)
        wait_in_step(cluster, ns, list(CHECKPOINTS), "scaled to 4")
        scale_ended = time.monotonic()
        token = admin_token(cluster, ns)
        for pod in ready_pods(cluster, ns):
            if pod["metadata"]["name"] in before:
                continue
            answer = served_by(pod, token)
            ready_at = _ready(pod)
            assert ready_at is not None
            for name in CHECKPOINTS:
                assert _seconds(answer[name]["loaded_at"]) <= _seconds(ready_at), (
                    f"pod {pod['metadata']['name']} turned Ready at {ready_at}, before it "
                    f"loaded {name} at {answer[name]['loaded_at']}")
            started = _seconds(pod["metadata"]["creationTimestamp"])
            figure(f"scale-up pod {pod['metadata']['name']}: created -> Ready with "
                   f"{len(CHECKPOINTS)} checkpoints in {(_seconds(ready_at) - started).seconds}s")

        # A runtime pod deleted: its replacement starts with them all.
        victim = ready_pods(cluster, ns)[0]["metadata"]["name"]
        cluster.kubectl("delete", "pod", victim, "-n", ns, "--wait=false")
        wait_until("a replacement pod Ready", lambda: len([
            p for p in ready_pods(cluster, ns) if p["metadata"]["name"] != victim]) == 4,
            timeout=300, interval=1)
        wait_in_step(cluster, ns, list(CHECKPOINTS), "a runtime pod replaced")

        # The operator's leader pod deleted: the standby takes over; nothing moves.
        leader = lease_holder(cluster)
        cluster.kubectl("delete", "pod", leader.rsplit("_", 1)[0], "-n", OPERATOR_NS,
                        "--wait=false")
        wait_until("a new operator leader", lambda: lease_holder(cluster) not in ("", leader),
                   timeout=60, interval=0.5)
        wait_in_step(cluster, ns, list(CHECKPOINTS), "the operator's leader replaced")

        # Bad checkpoints: Degraded with the runtime's own message, loaded nowhere, while the
        # others keep serving (their loops run on).
        for name in BAD:
            apply(cluster, ns, checkpoint(name))
        wait_until("both bad checkpoints Degraded", lambda: all(
            degraded(cluster, ns, name) for name in BAD), timeout=60, interval=0.5)
        foreign = degraded(cluster, ns, "foreign")
        assert foreign is not None and foreign["reason"] == "InvalidCheckpoint", foreign
        assert "[4, 96]" in foreign["message"] and "[4, 64]" in foreign["message"], foreign
        assert degraded(cluster, ns, "not-a-checkpoint")["reason"] == "InvalidCheckpoint"
        for pod in ready_pods(cluster, ns):
            assert not set(BAD) & set(served_by(pod, token))
        events = get_json(cluster, "events", "-n", ns, "--field-selector",
                          "involvedObject.kind=BEMCheckpoint,involvedObject.name=foreign")["items"]
        assert any(e["type"] == "Warning" and e["reason"] == "InvalidCheckpoint" for e in events)
        for name in BAD:
            cluster.kubectl("delete", "bemcheckpoint", name, "-n", ns)

        # One checkpoint deleted (its clients stopped first): unloaded from every pod by the
        # new leader, the others still served.
        loads["gamma"].stop()
        served_before = {name: len(loads[name].results) for name in ("alpha", "beta")}
        cluster.kubectl("delete", "bemcheckpoint", "gamma", "-n", ns)
        wait_until("gamma unloaded from every pod", lambda: all(
            "gamma" not in served_by(p, token) for p in ready_pods(cluster, ns)),
            timeout=60, interval=0.5)
        wait_in_step(cluster, ns, ["alpha", "beta"], "gamma deleted")
        for name in ("alpha", "beta"):
            loads[name].wait_for(served_before[name] + 5)
    finally:
        for load in loads.values():
            load.stop()
    # Every request answered. A 404 "not served here" from a Ready pod that serves none of
    # the checkpoints was seen in two CI runs of four before the operator synced its cache
    # before leading (an operator that reconciled before its first lists took the
    # checkpoints for deleted and wrote an empty start list); none in every run since. Such
    # a 404 is named apart, with what each pod started with (show_start_lists), since a
    # readiness gate set by the operator would be the next fix.
    show_start_lists(cluster, ns)
    for name, load in loads.items():
        gap = [f for f in load.failures if f[1] == 404 and "is not served here" in f[2]]
        figure(f"requests for {name}: {load.summary()}; 404 not served here: {len(gap)} "
               f"(during the scale-up window {scale_began:.1f}-{scale_ended:.1f}: "
               f"{[round(f[0], 1) for f in gap]})")
        assert len(load.results) >= 5, f"{name}: too few requests to tell anything"
        assert not gap, f"{name}: a Ready pod did not serve it: {gap[:5]}"
        assert not load.failures, f"{name}: {load.failures[:5]}"
    bems = get_json(cluster, "bemservice", SERVICE, "-n", ns)
    assert bems["status"]["checkpoints"] == {"declared": 2, "ready": 2, "waiting": 0,
                                             "resident": 2}
    # Load and unload events reach `kubectl describe bemck`.
    events = get_json(cluster, "events", "-n", ns, "--field-selector",
                      "involvedObject.kind=BEMCheckpoint,involvedObject.name=alpha")["items"]
    assert any(e["reason"] == "Loaded" for e in events), events
