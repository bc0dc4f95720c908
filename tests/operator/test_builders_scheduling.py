"""GPU requests, node selection, tolerations, affinity, and the config hash that rolls pods."""

from __future__ import annotations

from builders_factory import build_deployment, container, env_of, make_bems, with_spec

from bem_operator.builders import BuildOptions

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def pod_spec(bems: dict, options: BuildOptions | None = None) -> dict:
    return build_deployment(bems, options or BuildOptions())["spec"]["template"]["spec"]


def test_cpu_pods_have_no_gpu_scheduling():
    pod = pod_spec(make_bems())
    assert "nodeSelector" not in pod and "tolerations" not in pod and "affinity" not in pod
    assert container({"spec": {"template": {"spec": pod}}})["resources"] == {}


def test_gpu_count_sets_limit_and_request_and_the_toleration():
    bems = with_spec(gpu={"count": 2}, resources={"requests": {"cpu": "4"}, "limits": {"memory": "16Gi"}})
    deployment = build_deployment(bems)
    assert container(deployment)["resources"] == {
        "limits": {"memory": "16Gi", "nvidia.com/gpu": "2"},
        "requests": {"cpu": "4", "nvidia.com/gpu": "2"},
    }
    pod = deployment["spec"]["template"]["spec"]
    assert pod["tolerations"] == [GPU_TOLERATION]
    assert "nodeSelector" not in pod  # no product asked for
    assert env_of(deployment)["BEM_DEVICE"] == "cuda"


def test_gpu_product_becomes_a_node_selector():
    pod = pod_spec(with_spec(gpu={"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}))
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def test_user_node_selector_is_merged_sorted_and_wins_on_conflict():
    pod = pod_spec(with_spec(gpu={"count": 1, "product": "A100"},
                             nodeSelector={"zone": "b", "nvidia.com/gpu.product": "H100", "arch": "amd64"}))
    assert pod["nodeSelector"] == {"arch": "amd64", "nvidia.com/gpu.product": "H100", "zone": "b"}
    assert list(pod["nodeSelector"]) == sorted(pod["nodeSelector"])


def test_user_tolerations_are_kept_in_order_and_the_gpu_one_is_added_once():
    user = [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]
    pod = pod_spec(with_spec(gpu={"count": 1}, tolerations=user))
    assert pod["tolerations"] == [*user, GPU_TOLERATION]


def test_no_duplicate_when_the_user_already_tolerates_the_gpu_taint():
    for user in (
        [GPU_TOLERATION],
        [{"key": "nvidia.com/gpu", "operator": "Exists"}],  # every effect
        [{"operator": "Exists"}],  # every taint
    ):
        pod = pod_spec(with_spec(gpu={"count": 1}, tolerations=user))
        assert pod["tolerations"] == user


def test_a_narrower_user_toleration_still_gets_the_gpu_one():
    user = [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}]
    pod = pod_spec(with_spec(gpu={"count": 1}, tolerations=user))
    assert pod["tolerations"] == [*user, GPU_TOLERATION]


def test_cpu_pods_keep_only_user_tolerations():
    user = [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod_spec(with_spec(tolerations=user))["tolerations"] == user


def test_affinity_is_passed_through():
    affinity = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                           "labelSelector": {"matchLabels": {"bem.ai/service": "demo"}}}}]}}
    assert pod_spec(with_spec(affinity=affinity))["affinity"] == affinity


def annotation(bems: dict, options: BuildOptions | None = None) -> str:
    meta = build_deployment(bems, options or BuildOptions())["spec"]["template"]["metadata"]
    return meta["annotations"]["bem.ai/config-hash"]


def test_config_hash_is_stable():
    assert annotation(make_bems()) == annotation(make_bems())
    assert len(annotation(make_bems())) == 16


def test_config_hash_changes_with_what_the_pods_read():
    base = annotation(make_bems())
    changed = [
        with_spec(model={"claimName": "models", "routing": {"topK": 2}}),
        with_spec(runtime={"logLevel": "debug"}),
        with_spec(auth={"apiKeySecretRef": {"name": "keys"}}),
        with_spec(cache={"redisUrlSecretRef": {"name": "redis"}}),
        with_spec(gpu={"count": 1}),
        with_spec(resources={"limits": {"memory": "1Gi"}}),
    ]
    hashes = [annotation(bems) for bems in changed]
    assert base not in hashes
    assert len(set(hashes)) == len(hashes)


def test_config_hash_ignores_scaling_and_service_settings():
    # Scaling or exposing differently must not roll the pods.
    base = annotation(make_bems())
    for bems in (with_spec(replicas=5), with_spec(autoscaling={"maxReplicas": 9}),
                 with_spec(service={"port": 80}), with_spec(disruptionBudget={"enabled": False})):
        assert annotation(bems) == base


def test_referenced_secret_versions_enter_the_hash():
    bems = with_spec(cache={"redisUrlSecretRef": {"name": "redis"}})
    v1 = annotation(bems, BuildOptions(referenced_versions=(("Secret/redis", "100"),)))
    v2 = annotation(bems, BuildOptions(referenced_versions=(("Secret/redis", "101"),)))
    assert v1 != v2 != annotation(bems)
    # Order of the pairs does not matter.
    a = BuildOptions(referenced_versions=(("Secret/a", "1"), ("Secret/b", "2")))
    b = BuildOptions(referenced_versions=(("Secret/b", "2"), ("Secret/a", "1")))
    assert annotation(bems, a) == annotation(bems, b)
