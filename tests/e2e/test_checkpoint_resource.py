"""The BEMCheckpoint resource against a real API server and the operator, without runtime pods
(tests/realpods/test_checkpoints.py loads checkpoints on real ones): what the API server
refuses and how it says so, kubectl's columns, and the problems the operator reports without
asking a pod (a missing service, no slot left, a name the service already serves).

The services here run no pods (replicas 0): the operator asks only Ready pods, and a kwok
pod's address is served by nothing."""
from __future__ import annotations

import pytest
from operator_support import Kube, bemservice, condition, eventually

pytestmark = pytest.mark.e2e


def checkpoint(name: str, service: str = "svc", path: str = "checkpoints/alpha") -> dict:
    return {"apiVersion": "bem.ai/v1alpha1", "kind": "BEMCheckpoint",
            "metadata": {"name": name}, "spec": {"service": service, "path": path}}


def refused(kube: Kube, body: dict) -> str:
    import yaml
    out = kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)
    assert out.returncode != 0, f"the API server accepted {body}"
    return out.stderr


@pytest.mark.parametrize("path, part", [
    ("/etc/bem", "spec.path"), ("../other/bem", "spec.path"), ("ck/../../etc", "spec.path"),
    ("./ck", "spec.path"), ("ck//a", "spec.path"), ("ck/a/", "spec.path")])
def test_a_path_outside_the_model_volume_is_refused_naming_the_field(kube: Kube, path: str,
                                                                     part: str) -> None:
    assert part in refused(kube, checkpoint("alpha", path=path))


def test_a_name_that_is_not_a_model_name_and_a_changed_service_are_refused(kube: Kube) -> None:
    assert "DNS-1123 label" in refused(kube, checkpoint("alpha.v2"))
    kube.apply(checkpoint("alpha", service="one"))
    message = refused(kube, checkpoint("alpha", service="two"))
    assert "spec.service" in message and "cannot change" in message


def test_the_operator_reports_what_it_can_tell_without_a_pod(kube: Kube) -> None:
    # A service that does not exist (yet).
    kube.apply(checkpoint("alpha", service="later"))
    ck = eventually("ServiceNotFound", lambda: (c := kube.get("bemcheckpoints", "alpha"))
                    and (c.get("status") or {}).get("conditions") and c)
    degraded = condition(ck, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ServiceNotFound")
    assert "later" in degraded["message"]

    # Created: no Ready pod to load it on, and no longer degraded.
    kube.apply(bemservice("later", replicas=0, runtime={"maxCheckpoints": 2}))
    ck = eventually("the service found", lambda: (c := kube.get("bemcheckpoints", "alpha"))
                    and condition(c, "Degraded")["status"] == "False" and c)
    assert condition(ck, "Ready")["reason"] == "NoReadyReplicas"
    assert ck["status"]["loaded"] == "0/0"
    events = eventually("the recovery event", lambda: [
        e for e in kube.events_for("alpha") if e["reason"] == "Recovered"])
    assert events[0]["involvedObject"]["kind"] == "BEMCheckpoint"

    # maxCheckpoints 2 leaves one slot beside the service's own checkpoint: a later one waits.
    kube.apply(checkpoint("beta", service="later", path="checkpoints/beta"))
    ck = eventually("CheckpointCapacity", lambda: (c := kube.get("bemcheckpoints", "beta"))
                    and (c.get("status") or {}).get("conditions")
                    and condition(c, "Degraded")["reason"] == "CheckpointCapacity" and c)
    assert "spec.runtime.maxCheckpoints" in condition(ck, "Degraded")["message"]
    bems = eventually("the waiting count", lambda: (b := kube.get("bemservices", "later"))
                      and ((b.get("status") or {}).get("checkpoints") or {}).get("waiting") == 1
                      and b)
    assert bems["status"]["checkpoints"]["declared"] == 2
    # The start list the pods would read holds only the one that fits.
    start = kube.get("configmap", "later-checkpoints")
    assert start["data"]["checkpoints.json"].replace(" ", "").replace("\n", "") == \
        '{"alpha":"checkpoints/alpha"}'
    # Raising the limit places it (no pod to load on, so Ready waits, but nothing is wrong).
    kube.patch("bemservices", "later", {"spec": {"runtime": {"maxCheckpoints": 3}}})
    eventually("beta placed", lambda: condition(kube.get("bemcheckpoints", "beta"),
                                                "Degraded")["status"] == "False")
    eventually("beta in the start list", lambda: "beta" in kube.get(
        "configmap", "later-checkpoints")["data"]["checkpoints.json"])

    # A checkpoint named like the service's own model.
    kube.apply(checkpoint("later", service="later", path="checkpoints/gamma"))
    ck = eventually("NameConflict", lambda: (c := kube.get("bemcheckpoints", "later"))
                    and (c.get("status") or {}).get("conditions")
                    and condition(c, "Degraded")["reason"] == "NameConflict" and c)

    # kubectl get shows the service, what is loaded and whether it is Ready.
    table = kube.kubectl("get", "bemck").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "SERVICE", "LOADED", "READY"]
    rows = {line.split()[0]: line.split()[1:4] for line in table[1:]}
    assert rows["alpha"] == ["later", "0/0", "False"]
    # The admin token of the pods' checkpoint API exists, and no status or event shows it.
    secret = kube.get("secret", "later-admin-token")
    assert secret is not None and secret["metadata"]["labels"]["bem.ai/service"] == "later"
    token = secret["data"]["token"]
    assert token not in kube.kubectl("get", "bemck,bems,events", "-o", "yaml").stdout
