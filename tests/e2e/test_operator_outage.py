"""Calm logs under an API server outage: the dev cluster's API server is stopped (it exits
within seconds of SIGTERM) and started again while the operator runs. The operator logs one
WARNING when the connection goes and one INFO when it is back, no tracebacks and no ERROR
lines, counts the failures in bem_operator_api_errors_total, and still reconciles after."""
from __future__ import annotations

import re
from typing import Any

import pytest
from operator_support import RESYNC_SECONDS, Kube, OperatorProcess, bemservice, eventually, wait_ready

pytestmark = pytest.mark.e2e


def api_errors(operator: OperatorProcess, kind: str) -> float:
    _, text = operator.http_get(operator.metrics_port, "/metrics")
    match = re.search(rf'^bem_operator_api_errors_total{{kind="{kind}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else -1.0


def test_an_api_server_restart_is_one_warning_and_one_info(cluster: Any, kube: Kube,
                                                           operator: OperatorProcess) -> None:
    if not hasattr(cluster, "restart_apiserver"):
        pytest.skip("an attached cluster cannot be restarted from here")
    kube.apply(bemservice("steady", replicas=1))
    wait_ready(kube, "steady")
    start = operator.log_size()
    before = api_errors(operator, "connection")
    # Down for longer than a periodic check, so that the checks meet the outage too.
    away = cluster.restart_apiserver(down_seconds=2 * RESYNC_SECONDS)
    print(f"\nAPI server exited {cluster.last_stop_seconds:.1f}s after SIGTERM; "
          f"away {away:.1f}s")
    assert cluster.last_stop_seconds < 5, "the API server did not exit promptly on SIGTERM"
    eventually("the operator's reconnect line", lambda: "Reconnected to the API server"
               in operator.log_text(start), timeout=90)
    # After the outage the operator still does its job: drift is corrected.
    kube.kubectl("delete", "service", "steady")
    eventually("the Service re-created", lambda: kube.get("service", "steady"), timeout=60)
    wait_ready(kube, "steady")

    log = operator.log_text(start)
    lines = log.splitlines()
    lost = [line for line in lines if "Lost the connection to the API server" in line]
    back = [line for line in lines if "Reconnected to the API server" in line]
    assert len(lost) == 1 and "WARNING" in lost[0], log[-6000:]
    assert len(back) == 1 and "INFO" in back[0], log[-6000:]
    assert "Traceback" not in log, log[-6000:]
    assert not [line for line in lines if "[ERROR" in line], log[-6000:]
    assert api_errors(operator, "connection") > max(before, 0)
