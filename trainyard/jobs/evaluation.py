"""The evaluation gate: one decision about an evaluated model, with the numbers.

The decision says whether the model replaces the production version (threshold, a finite
value, the comparison with production and its minimum improvement) and, separately, whether
the job fails: a missing metric, or one that misses the threshold, is the user's to fix, while
a model that is merely not better than production is kept as a rejected version and the job
succeeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainyard.failures import UserError
from trainyard.manifest.schema import EvaluationSpec

if TYPE_CHECKING:
    from trainyard.jobs.registry import ProductionPointer


@dataclass(frozen=True)
class GateDecision:
    """`promote`: the model becomes production; `reason`: why, in words (kept in version.json);
    `failure`: why the job fails, None when it succeeds whether promoted or not."""

    promote: bool
    reason: str
    failure: UserError | None = None


def metric_value(metrics: Mapping[str, Any], metric: str) -> float | None:
    """The metric as a finite float, else None: NaN would compare as neither better nor worse."""
    try:
        value = float(metrics[metric])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _misses_threshold(spec: EvaluationSpec, value: float) -> bool:
    if spec.threshold is None:
        return False
    return value < spec.threshold if spec.higher_is_better else value > spec.threshold


def gate(
    spec: EvaluationSpec,
    metrics: Mapping[str, Any],
    production: ProductionPointer | None = None,
) -> GateDecision:
    """Decide about a model evaluated as `metrics` against the `production` version (None: the
    job has none yet). Whether the job fails does not depend on `production`."""
    metric = spec.metric
    no_number = f"the evaluation reported no numeric {metric}"
    if metric not in metrics:
        return GateDecision(
            False,
            no_number,
            UserError(
                f"evaluation.metric: the evaluation reported no {metric!r} "
                f"(it reported: {', '.join(sorted(metrics)) or 'nothing'})",
                f"append a JSON row with {metric!r} to TRAINYARD_METRICS_FILE, "
                "or name a reported metric",
            ),
        )
    value = metric_value(metrics, metric)
    if value is None:
        # NaN, an infinity or no number at all: nothing to compare, and no threshold is met.
        failure = None
        if spec.threshold is not None:
            failure = UserError(
                f"evaluation: {metric} = {metrics[metric]!r} is not a finite number, so it "
                f"cannot meet the threshold {spec.threshold:g}",
                f"report {metric} as a finite number in TRAINYARD_METRICS_FILE",
            )
        return GateDecision(False, no_number, failure)
    if _misses_threshold(spec, value):
        assert spec.threshold is not None
        relation = "below" if spec.higher_is_better else "above"
        return GateDecision(
            False,
            f"{metric} {value:g} is {relation} threshold {spec.threshold:g}",
            UserError(
                f"evaluation: {metric} = {value:.4g} is {relation} "
                f"the threshold {spec.threshold:g}",
                "train longer or improve the model, or change evaluation.threshold",
            ),
        )
    if production is None:
        return GateDecision(True, f"first version of the job ({metric} {value:g})")
    current = f"production v{production.version}"
    if production.value is None:
        return GateDecision(
            False, f"{current} has no {metric} to compare with; promote manually to replace it"
        )
    gain = value - production.value if spec.higher_is_better else production.value - value
    if gain <= 0:
        return GateDecision(
            False, f"{metric} {value:g} is not better than {current} ({production.value:g})"
        )
    minimum = spec.min_improvement
    if gain < minimum and not math.isclose(gain, minimum):  # 0.95 - 0.93 < 0.02 in floats
        return GateDecision(
            False,
            f"{metric} {value:g} improves on {current} ({production.value:g}) by {gain:g}, "
            f"less than the minimum improvement {minimum:g}",
        )
    return GateDecision(True, f"better than {current} ({production.value:g} -> {value:g})")
