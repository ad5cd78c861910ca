"""The evaluation gate: promote or not and why, fail with the numbers, or name the metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from trainyard.jobs.evaluation import GateDecision, gate
from trainyard.jobs.registry import ProductionPointer
from trainyard.manifest.schema import EvaluationSpec


def spec(metric: str = "accuracy", threshold: float | None = 0.9, **fields: Any) -> EvaluationSpec:
    return EvaluationSpec(
        command="python evaluate.py", metric=metric, threshold=threshold, **fields
    )


def production(value: float | None, version: int = 3) -> ProductionPointer:
    return ProductionPointer(
        version=version, value=value, promoted_at=datetime.now(UTC), reason="earlier"
    )


PASSING = [
    pytest.param(spec(), {"accuracy": 0.95}, "accuracy 0.95", id="above-threshold"),
    pytest.param(spec(), {"accuracy": 0.9}, "accuracy 0.9", id="at-threshold-passes"),
    pytest.param(spec(threshold=None), {"accuracy": 0.1}, "accuracy 0.1", id="no-threshold"),
    pytest.param(
        spec("loss", 0.5, higher_is_better=False), {"loss": 0.25}, "loss 0.25", id="lower-is-better"
    ),
    pytest.param(spec(), {"accuracy": 1, "loss": 0.1}, "accuracy 1", id="integer-value"),
]


@pytest.mark.parametrize(("evaluation", "metrics", "shown"), PASSING)
def test_a_passing_first_version_is_promoted_and_the_job_succeeds(
    evaluation: EvaluationSpec, metrics: dict[str, Any], shown: str
) -> None:
    decision = gate(evaluation, metrics)

    assert decision == GateDecision(True, f"first version of the job ({shown})")


COMPARED = [
    pytest.param(
        spec(),
        {"accuracy": 0.95},
        production(0.93),
        True,
        "better than production v3 (0.93 -> 0.95)",
        id="better",
    ),
    pytest.param(
        spec(),
        {"accuracy": 0.93},
        production(0.93),
        False,
        "accuracy 0.93 is not better than production v3 (0.93)",
        id="equal-is-not-better",
    ),
    pytest.param(
        spec(min_improvement=0.02),
        {"accuracy": 0.95},
        production(0.93),
        True,
        "better than production v3 (0.93 -> 0.95)",
        id="exactly-the-minimum-improvement",
    ),
    pytest.param(
        spec(min_improvement=0.05),
        {"accuracy": 0.95},
        production(0.93),
        False,
        "accuracy 0.95 improves on production v3 (0.93) by 0.02, less than the minimum "
        "improvement 0.05",
        id="less-than-the-minimum-improvement",
    ),
    pytest.param(
        spec("loss", None, higher_is_better=False),
        {"loss": 0.2},
        production(0.3),
        True,
        "better than production v3 (0.3 -> 0.2)",
        id="lower-is-better",
    ),
    pytest.param(
        spec(),
        {"accuracy": 0.99},
        production(None),
        False,
        "production v3 has no accuracy to compare with; promote manually to replace it",
        id="production-without-a-value",
    ),
]


@pytest.mark.parametrize(("evaluation", "metrics", "current", "promote", "reason"), COMPARED)
def test_a_model_replaces_production_only_if_better_and_the_job_succeeds_either_way(
    evaluation: EvaluationSpec,
    metrics: dict[str, Any],
    current: ProductionPointer,
    promote: bool,
    reason: str,
) -> None:
    assert gate(evaluation, metrics, current) == GateDecision(promote, reason)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "high"])
def test_a_value_that_is_no_finite_number_is_never_promoted_and_fails_a_threshold(
    value: object,
) -> None:
    with_threshold = gate(spec(), {"accuracy": value})
    without = gate(spec(threshold=None), {"accuracy": value}, production(0.5))

    assert not with_threshold.promote
    assert with_threshold.reason == "the evaluation reported no numeric accuracy"
    assert with_threshold.failure is not None
    assert "is not a finite number" in with_threshold.failure.cause
    assert "threshold 0.9" in with_threshold.failure.cause
    assert without == GateDecision(False, "the evaluation reported no numeric accuracy")


FAILING = [
    pytest.param(
        spec(),
        {"accuracy": 0.8123},
        ["accuracy = 0.8123", "below the threshold 0.9"],
        "evaluation.threshold",
        id="below-threshold",
    ),
    pytest.param(
        spec("loss", 0.5, higher_is_better=False),
        {"loss": 0.75},
        ["loss = 0.75", "above the threshold 0.5"],
        "evaluation.threshold",
        id="lower-is-better-above",
    ),
    pytest.param(
        spec(),
        {"loss": 0.3, "f1": 0.7},
        ["evaluation.metric", "'accuracy'", "it reported: f1, loss"],
        "TRAINYARD_METRICS_FILE",
        id="missing-metric-names-the-reported-ones",
    ),
    pytest.param(
        spec(threshold=None),
        {},
        ["'accuracy'", "it reported: nothing"],
        "TRAINYARD_METRICS_FILE",
        id="missing-metric-without-threshold-still-fails",
    ),
]


@pytest.mark.parametrize(("evaluation", "metrics", "fragments", "fix"), FAILING)
def test_failing_evaluation_is_a_user_error_with_the_numbers(
    evaluation: EvaluationSpec, metrics: dict[str, Any], fragments: list[str], fix: str
) -> None:
    decision = gate(evaluation, metrics, production(0.1))

    assert not decision.promote
    assert decision.failure is not None
    for fragment in fragments:
        assert fragment in decision.failure.cause
    assert fix in decision.failure.fix
