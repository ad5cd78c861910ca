"""The evaluation gate: pass, fail with the numbers, or name the metrics that were reported."""

from __future__ import annotations

from typing import Any

import pytest

from trainyard.failures import UserError
from trainyard.jobs.evaluation import check_threshold
from trainyard.manifest.schema import EvaluationSpec


def spec(metric: str = "accuracy", threshold: float | None = 0.9, **fields: Any) -> EvaluationSpec:
    return EvaluationSpec(
        command="python evaluate.py", metric=metric, threshold=threshold, **fields
    )


PASSING = [
    pytest.param(spec(), {"accuracy": 0.95}, 0.95, id="above-threshold"),
    pytest.param(spec(), {"accuracy": 0.9}, 0.9, id="at-threshold-passes"),
    pytest.param(spec(threshold=None), {"accuracy": 0.1}, 0.1, id="no-threshold-any-value"),
    pytest.param(
        spec("loss", 0.5, higher_is_better=False), {"loss": 0.25}, 0.25, id="lower-is-better-below"
    ),
    pytest.param(spec(), {"accuracy": 1, "loss": 0.1}, 1.0, id="integer-value-as-float"),
]


@pytest.mark.parametrize(("evaluation", "metrics", "value"), PASSING)
def test_passing_evaluation_returns_the_metric(
    evaluation: EvaluationSpec, metrics: dict[str, Any], value: float
) -> None:
    result = check_threshold(evaluation, metrics)

    assert result == value
    assert isinstance(result, float)


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
    with pytest.raises(UserError) as raised:
        check_threshold(evaluation, metrics)

    for fragment in fragments:
        assert fragment in raised.value.cause
    assert fix in raised.value.fix
