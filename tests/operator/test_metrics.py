"""Operator metrics: counted by result, timed, errors by kind, isolated registries."""
from __future__ import annotations

import pytest

from bem_operator.metrics import OperatorMetrics


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_results_are_counted_and_timed() -> None:
    metrics = OperatorMetrics()
    with metrics.timed("spec"):
        pass
    for result, kind in (("invalid_spec", "invalid_spec"), ("retry", "api")):
        with metrics.timed("resync") as outcome:
            outcome[0] = result
        assert value(metrics, "bem_operator_errors_total", kind=kind) == 1
    with pytest.raises(RuntimeError), metrics.timed("resync"):
        raise RuntimeError("bug")
    assert value(metrics, "bem_operator_errors_total", kind="unexpected") == 1
    assert value(metrics, "bem_operator_reconciles_total", result="success", trigger="spec") == 1
    for result in ("invalid_spec", "retry", "error"):
        assert value(metrics, "bem_operator_reconciles_total", result=result, trigger="resync") == 1
    assert value(metrics, "bem_operator_reconcile_duration_seconds_count", trigger="resync") == 3


def test_registries_are_isolated() -> None:
    first, second = OperatorMetrics(), OperatorMetrics()
    with first.timed("spec"):
        pass
    assert value(second, "bem_operator_reconciles_total", result="success", trigger="spec") == 0
