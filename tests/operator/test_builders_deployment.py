"""The Deployment and its pod template: the runtime container contract of docs/architecture.md."""

from __future__ import annotations

import pytest
from builders_factory import build_deployment, container, env_of, make_bems, with_every_runtime_field, with_spec

from bem_operator.builders import RESERVED_ENV, BuildOptions


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def test_fixed_replicas_default_to_one_and_follow_the_spec():
    assert build_deployment(make_bems())["spec"]["replicas"] == 1
    assert build_deployment(with_spec(replicas=3))["spec"]["replicas"] == 3
    assert build_deployment(with_spec(replicas=0))["spec"]["replicas"] == 0


def test_no_replicas_key_at_all_while_autoscaling():
    deployment = build_deployment(with_spec(autoscaling={"minReplicas": 2, "maxReplicas": 5}))
    assert "replicas" not in deployment["spec"]


def test_selector_is_the_stable_pod_selector():
    spec = build_deployment(make_bems(name="chat"))["spec"]
    assert spec["selector"] == {"matchLabels": {"app.kubernetes.io/instance": "chat", "bem.ai/service": "chat"}}


def test_container_runs_bem_runtime_serve_with_http_metrics_and_admin_ports():
    c = container(build_deployment(make_bems()))
    assert c["command"] == ["bem-runtime", "serve"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                          {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                          {"name": "admin", "containerPort": 8081, "protocol": "TCP"}]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert (env["BEM_PORT"], env["BEM_METRICS_PORT"], env["BEM_ADMIN_PORT"]) == ("8080", "9090", "8081")
    # The probes stay on the API port (the runtime serves them there only).
    assert {c[p]["httpGet"]["port"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {"http"}
    assert c["image"] == "bem-runtime:0.1.0"
    assert "args" not in c


def test_image_from_options_then_spec():
    options = BuildOptions(default_runtime_image="runtime:9")
    assert container(build_deployment(make_bems(), options))["image"] == "runtime:9"
    bems = with_spec(runtime={"image": "mine:1", "imagePullPolicy": "Always", "extraArgs": ["--x", "1"],
                              "imagePullSecrets": ["pull"]})
    deployment = build_deployment(bems, options)
    c = container(deployment)
    assert (c["image"], c["imagePullPolicy"], c["args"]) == ("mine:1", "Always", ["--x", "1"])
    assert pod_spec(deployment)["imagePullSecrets"] == [{"name": "pull"}]


def test_env_carries_the_runtime_settings():
    env = env_of(build_deployment(make_bems(name="chat")))
    assert env["BEM_HOST"] == "0.0.0.0"
    assert env["BEM_PORT"] == "8080"
    assert env["BEM_MODEL_DIR"] == "/models/base"
    assert env["BEM_CHECKPOINT_DIR"] == "/models/bem"
    assert env["BEM_MODEL_NAME"] == "chat"
    assert env["BEM_DEVICE"] == "cpu"
    assert env["BEM_LOG_LEVEL"] == "info"
    assert env["HF_HUB_OFFLINE"] == "1"
    for unset in ("BEM_TOP_K", "BEM_API_KEY_FILE", "BEM_REDIS_URL", "BEM_MAX_BATCH_SIZE"):
        assert unset not in env


def test_routing_and_governance_overrides_become_env():
    bems = with_spec(model={
        "claimName": "m", "basePath": "llama/8b", "checkpointPath": "experts/v2", "servedName": "llama-bem",
        "routing": {"topK": 2, "chunkSize": 64, "hysteresis": 0.1, "temperature": 0.5},
        "governance": {"sigmaMax": 1.5, "trustRegion": 0.05, "minConfidence": 0.3},
    }, runtime={"logLevel": "debug", "maxBatchSize": 8, "maxQueue": 100})
    env = env_of(build_deployment(bems))
    assert env["BEM_MODEL_DIR"] == "/models/llama/8b"
    assert env["BEM_CHECKPOINT_DIR"] == "/models/experts/v2"
    assert env["BEM_MODEL_NAME"] == "llama-bem"
    assert (env["BEM_TOP_K"], env["BEM_CHUNK_SIZE"]) == ("2", "64")
    assert (env["BEM_HYSTERESIS"], env["BEM_ROUTER_TEMPERATURE"]) == ("0.1", "0.5")
    assert (env["BEM_SIGMA_MAX"], env["BEM_TRUST_REGION"], env["BEM_MIN_CONFIDENCE"]) == ("1.5", "0.05", "0.3")
    assert (env["BEM_LOG_LEVEL"], env["BEM_MAX_BATCH_SIZE"], env["BEM_MAX_QUEUE"]) == ("debug", "8", "100")


def test_api_key_secret_is_mounted_read_only_and_passed_as_a_file():
    deployment = build_deployment(with_spec(auth={"apiKeySecretRef": {"name": "keys", "key": "tokens"}}))
    env = env_of(deployment)
    assert env["BEM_API_KEY_FILE"] == "/var/run/secrets/bem/api-keys/tokens"
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == "keys"
    assert volumes["api-keys"]["secret"]["items"] == [{"key": "tokens", "path": "tokens"}]
    mounts = {m["name"]: m for m in container(deployment)["volumeMounts"]}
    assert mounts["api-keys"] == {"name": "api-keys", "mountPath": "/var/run/secrets/bem/api-keys", "readOnly": True}


def test_api_key_default_key_name():
    env = env_of(build_deployment(with_spec(auth={"apiKeySecretRef": {"name": "keys"}})))
    assert env["BEM_API_KEY_FILE"] == "/var/run/secrets/bem/api-keys/api-key"


def test_redis_url_comes_from_a_secret_key_ref():
    env = env_of(build_deployment(with_spec(cache={"redisUrlSecretRef": {"name": "redis"}, "ttlSeconds": 60})))
    assert env["BEM_REDIS_URL"] == {"secretKeyRef": {"name": "redis", "key": "redis-url"}}
    assert env["BEM_CACHE_TTL"] == "60"


def test_model_claim_is_mounted_read_only_at_models():
    deployment = build_deployment(with_spec(model={"claimName": "weights"}))
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "weights", "readOnly": True}
    mounts = {m["mountPath"]: m for m in container(deployment)["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
    assert "/tmp" in mounts


def test_image_source_mounts_no_model_volume():
    deployment = build_deployment(make_bems({"model": {"source": "Image"}}))
    # No model volume: /tmp, the BEMCheckpoints' start list and the admin token only.
    assert [v["name"] for v in pod_spec(deployment)["volumes"]] == ["tmp", "checkpoints",
                                                                     "admin-token"]
    assert env_of(deployment)["BEM_MODEL_DIR"] == "/models/base"


def test_security_context_is_locked_down():
    deployment = build_deployment(make_bems())
    pod = pod_spec(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    sc = container(deployment)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsUser"] == 10001


def test_probes_gate_traffic_on_ready_and_give_the_model_time_to_load():
    c = container(build_deployment(with_spec(runtime={"startupTimeoutSeconds": 1200})))
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http", "scheme": "HTTP"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/ready"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1200
    # Liveness must not kill a pod for a slow answer faster than readiness would notice it.
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > c["readinessProbe"]["periodSeconds"]


def test_default_startup_budget_is_ten_minutes():
    startup = container(build_deployment(make_bems()))["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 600


def test_progress_deadline_outlasts_the_startup_budget():
    deployment = build_deployment(with_spec(runtime={"startupTimeoutSeconds": 1800}))
    assert deployment["spec"]["progressDeadlineSeconds"] > 1800


def test_user_env_is_appended_and_may_replace_non_reserved_defaults():
    bems = with_spec(runtime={"env": [
        {"name": "OMP_NUM_THREADS", "value": "4"},
        {"name": "HF_HOME", "value": "/tmp/elsewhere"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]})
    deployment = build_deployment(bems)
    env = env_of(deployment)
    assert env["OMP_NUM_THREADS"] == "4"
    assert env["HF_HOME"] == "/tmp/elsewhere"
    assert env["TOKEN"] == {"secretKeyRef": {"name": "s", "key": "k"}}
    names = [e["name"] for e in container(deployment)["env"]]
    assert names[-2:] == ["OMP_NUM_THREADS", "TOKEN"]


@pytest.mark.parametrize("strategy, expected", [
    ({}, {"type": "RollingUpdate"}),
    ({"strategy": "Recreate"}, {"type": "Recreate"}),
    ({"maxSurge": 0, "maxUnavailable": 1},
     {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
    ({"strategy": "RollingUpdate", "maxSurge": "50%"},
     {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%"}}),
])
def test_rollout_strategy(strategy, expected):
    assert build_deployment(with_spec(rollout=strategy))["spec"]["strategy"] == expected


def test_every_bem_variable_the_operator_sets_is_reserved():
    bems = with_every_runtime_field(with_spec(
        auth={"apiKeySecretRef": {"name": "k"}}, cache={"redisUrlSecretRef": {"name": "r"}},
        gpu={"count": 1}))
    ours = {name for name in env_of(build_deployment(bems)) if name.startswith("BEM_")}
    assert ours <= RESERVED_ENV
    # Inline API keys are refused too: keys come from a Secret.
    assert RESERVED_ENV - ours == {"BEM_API_KEYS"}


def test_other_runtime_variables_may_be_set_by_the_user():
    env = env_of(build_deployment(with_spec(runtime={"env": [{"name": "BEM_RATE_LIMIT_RPS", "value": "50"}]})))
    assert env["BEM_RATE_LIMIT_RPS"] == "50"


def test_pre_stop_pause_keeps_serving_while_endpoints_update_and_fits_the_grace_period():
    deployment = build_deployment(make_bems())
    pause = container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
    # Long enough for kube-proxy to drop the pod from the Service, and the pause plus the
    # runtime's drain must end before the kubelet's SIGKILL.
    assert 2 <= pause < pod_spec(deployment)["terminationGracePeriodSeconds"]


def test_grace_period_covers_the_pause_the_drain_and_a_margin():
    from bem_operator.builders.pod import (DRAIN_MARGIN_SECONDS, DRAIN_TIMEOUT_SECONDS,
                                           PRESTOP_SLEEP_SECONDS)
    from bem_runtime.settings import Settings

    # The runtime's own default drain is the one the operator plans for.
    assert Settings().drain_timeout == DRAIN_TIMEOUT_SECONDS
    grace = pod_spec(build_deployment(make_bems()))["terminationGracePeriodSeconds"]
    assert grace == PRESTOP_SLEEP_SECONDS + DRAIN_TIMEOUT_SECONDS + DRAIN_MARGIN_SECONDS
    # The runtime exits within 1 s of its deadline: the margin must exceed that.
    assert DRAIN_MARGIN_SECONDS >= 2


@pytest.mark.parametrize("value, drain", [("120", 120), ("7.5", 8), ("nonsense", 30), ("-1", 30)])
def test_grace_period_follows_a_drain_timeout_set_by_the_user(value, drain):
    from bem_operator.builders.pod import DRAIN_MARGIN_SECONDS, PRESTOP_SLEEP_SECONDS

    bems = with_spec(runtime={"env": [{"name": "BEM_DRAIN_TIMEOUT", "value": value}]})
    grace = pod_spec(build_deployment(bems))["terminationGracePeriodSeconds"]
    assert grace == PRESTOP_SLEEP_SECONDS + drain + DRAIN_MARGIN_SECONDS


@pytest.mark.parametrize("args, drain", [(["--drain-timeout", "90"], 90), (["--drain-timeout=12"], 12),
                                         (["--log-requests"], 30)])
def test_grace_period_follows_a_drain_timeout_flag_in_extra_args(args, drain):
    from bem_operator.builders.pod import DRAIN_MARGIN_SECONDS, PRESTOP_SLEEP_SECONDS

    bems = with_spec(runtime={"extraArgs": args,
                              "env": [{"name": "BEM_DRAIN_TIMEOUT", "value": "45"}] if drain != 30 else []})
    grace = pod_spec(build_deployment(bems))["terminationGracePeriodSeconds"]
    assert grace == PRESTOP_SLEEP_SECONDS + drain + DRAIN_MARGIN_SECONDS  # the flag wins over env
