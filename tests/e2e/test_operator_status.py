"""Honest status and events against the local control plane: a model that fails to load
(the runtime's exit code 3 and termination message, set on a kwok pod's status as the
kubelet would) degrades the BEMService with that message and recovers when the spec is
fixed; a child the API server refuses gives one Warning event, not one per retry."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
from operator_support import (
    RESYNC_SECONDS,
    Kube,
    bemservice,
    condition,
    eventually,
    running_pods,
    wait_ready,
)

pytestmark = pytest.mark.e2e
LOAD_ERROR = "bem checkpoint /models/bem has no bem_config.json"


def fail_model_load(kube: Kube, pod: dict[str, Any]) -> None:
    """What the kubelet reports once the runtime exited with code 3 and restarted."""
    name = pod["metadata"]["name"]
    container = pod["spec"]["containers"][0]
    status = {"status": {
        "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                       {"type": "ContainersReady", "status": "False"},
                       {"type": "PodScheduled", "status": "True"},
                       {"type": "Initialized", "status": "True"}],
        "containerStatuses": [{
            "name": container["name"], "image": container["image"], "imageID": "",
            "ready": False, "started": False, "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff",
                                  "message": "back-off 20s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": 3, "reason": "Error",
                                         "message": LOAD_ERROR,
                                         "startedAt": "2026-01-01T00:00:00Z",
                                         "finishedAt": "2026-01-01T00:00:05Z"}}}]}}
    kube.kubectl("patch", "pod", name, "--subresource=status", "--type=merge",
                 "-p", json.dumps(status))


def degraded_with(kube: Kube, name: str, reason: str) -> Any:
    def probe() -> dict[str, Any] | None:
        bems = kube.get("bemservices", name)
        if bems and bems.get("status", {}).get("phase") == "Degraded" and \
                condition(bems, "Degraded")["reason"] == reason:
            return bems
        return None
    return eventually(f"BEMService {name} Degraded with {reason}", probe, timeout=60)


def events(kube: Kube, name: str, reason: str) -> int:
    return sum(e.get("count") or 1 for e in kube.events_for(name) if e.get("reason") == reason)


def test_a_model_that_fails_to_load_degrades_with_the_runtimes_message(kube: Kube) -> None:
    kube.apply(bemservice("broken", replicas=1))
    wait_ready(kube, "broken")
    [pod] = running_pods(kube, "broken")
    started = time.monotonic()
    fail_model_load(kube, pod)
    bems = degraded_with(kube, "broken", "ModelLoadFailed")
    print(f"\nDegraded {time.monotonic() - started:.1f}s after the pod reported exit code 3")
    assert LOAD_ERROR in condition(bems, "Degraded")["message"]
    ready = condition(bems, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ModelLoadFailed")
    assert LOAD_ERROR in ready["message"]
    warnings = eventually("the ModelLoadFailed event", lambda: [
        e for e in kube.events_for("broken") if e.get("reason") == "ModelLoadFailed"])
    assert warnings[0]["type"] == "Warning" and LOAD_ERROR in warnings[0]["message"]

    # Fixing the spec rolls new pods; the failing pod of the old template stops counting.
    kube.patch("bemservices", "broken", {"spec": {"model": {"basePath": "base-fixed"}}})
    bems = wait_ready(kube, "broken")
    assert condition(bems, "Degraded")["status"] == "False"
    eventually("the Recovered event", lambda: events(kube, "broken", "Recovered") >= 1)


def test_a_refused_child_is_one_warning_and_a_recovery(kube: Kube) -> None:
    port = 30000 + int(time.time()) % 2000
    kube.apply(bemservice("first", replicas=1, service={"type": "NodePort", "nodePort": port}))
    wait_ready(kube, "first")
    kube.apply(bemservice("second", replicas=1, service={"type": "NodePort", "nodePort": port}))
    bems = degraded_with(kube, "second", "ApplyRejected")
    message = condition(bems, "Degraded")["message"]
    assert "Service second" in message and "already allocated" in message, message
    assert condition(bems, "Ready")["status"] == "False"
    assert kube.get("deployment", "second") is not None  # the other children still applied
    time.sleep(4 * RESYNC_SECONDS)  # retries and periodic checks meet the same refusal
    assert events(kube, "second", "ApplyRejected") == 1, kube.events_for("second")

    kube.patch("bemservices", "second", {"spec": {"service": {"nodePort": port + 1}}})
    wait_ready(kube, "second")
    eventually("the Recovered event", lambda: events(kube, "second", "Recovered") == 1)
    assert events(kube, "second", "ApplyRejected") == 1
