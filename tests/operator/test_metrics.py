"""Operator metrics: counted by result, timed, errors by kind, isolated registries."""
from __future__ import annotations

import pytest

from bem_operator.metrics import OperatorMetrics
from bem_operator.reconcile import InvalidSpec, RetryableError


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_results_are_counted_and_timed() -> None:
    metrics = OperatorMetrics()
    with metrics.timed("create"):
        pass
    for exc, kind in ((InvalidSpec("bad"), "invalid_spec"), (RetryableError("503"), "api"),
                      (RuntimeError("bug"), "unexpected")):
        with pytest.raises(type(exc)), metrics.timed("timer"):
            raise exc
        assert value(metrics, "bem_operator_errors_total", kind=kind) == 1
    assert value(metrics, "bem_operator_reconciles_total", result="success", trigger="create") == 1
    for result in ("invalid_spec", "retry", "error"):
        assert value(metrics, "bem_operator_reconciles_total", result=result, trigger="timer") == 1
    assert value(metrics, "bem_operator_reconcile_duration_seconds_count", trigger="timer") == 3


def test_registries_are_isolated() -> None:
    first, second = OperatorMetrics(), OperatorMetrics()
    with first.timed("update"):
        pass
    assert value(second, "bem_operator_reconciles_total", result="success", trigger="update") == 0
