"""The runtime container's side of the model-load-failure contract (docs/architecture.md)."""

from __future__ import annotations

from builders_factory import build_deployment, container, make_bems



def test_runtime_failures_reach_the_termination_message():
    """The runtime writes why a model failed to load to /dev/termination-log (exit code 3);
    without that file the log tail stands in. The operator reads it into status."""
    runtime = container(build_deployment(make_bems()))
    assert runtime["terminationMessagePolicy"] == "FallbackToLogsOnError"
