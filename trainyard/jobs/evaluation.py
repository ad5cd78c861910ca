"""The evaluation gate: a model that misses its threshold fails the job, with the numbers."""

from __future__ import annotations

from typing import Any

from trainyard.failures import UserError
from trainyard.manifest.schema import EvaluationSpec


def check_threshold(spec: EvaluationSpec, metrics: dict[str, Any]) -> float:
    """Return the evaluated metric; raise UserError when it is missing or misses the threshold."""
    if spec.metric not in metrics:
        raise UserError(
            f"evaluation.metric: the evaluation reported no {spec.metric!r} "
            f"(it reported: {', '.join(sorted(metrics)) or 'nothing'})",
            f"append a JSON row with {spec.metric!r} to TRAINYARD_METRICS_FILE, "
            "or name a reported metric",
        )
    value = float(metrics[spec.metric])
    if spec.threshold is None:
        return value
    passed = value >= spec.threshold if spec.higher_is_better else value <= spec.threshold
    if not passed:
        relation = "below" if spec.higher_is_better else "above"
        raise UserError(
            f"evaluation: {spec.metric} = {value:.4g} is {relation} "
            f"the threshold {spec.threshold:g}",
            "train longer or improve the model, or change evaluation.threshold",
        )
    return value
