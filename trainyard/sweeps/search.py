"""A sweep's search: Optuna's samplers and pruners over the manifest's `sweep` section.

The study (an Optuna study named after the sweep's id) lives in the database the deployment
gives it: the platform's PostgreSQL (the embedded default's own), SQLite in unit tests. It is
the search's memory: which values each trial drew, the metric each reported per step (what
the median rule and ASHA compare), and how each ended. Each trial's job is the truth about the
trial itself; `trainyard.sweeps.trials` ties the two together.

Trial numbers here are Optuna's (from 0); a trial's job id counts from 1 (`<sweep id>.t1`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from trainyard.manifest.sweep import (
    Algorithm,
    ChoiceParameter,
    EarlyStoppingRule,
    Goal,
    IntParameter,
    LogUniformParameter,
    Parameter,
    ParameterValue,
    SweepSpec,
    UniformParameter,
    grid_values,
)

if TYPE_CHECKING:  # Optuna itself is imported where a search runs, not where DAGs are parsed
    from optuna.distributions import BaseDistribution
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.trial import TrialState


class TrialEnd(StrEnum):
    """How a trial ended, for the study."""

    COMPLETE = "complete"  # trained; its metric counts
    PRUNED = "pruned"  # stopped early by the early-stopping rule
    FAILED = "failed"  # its job failed (a user error, a used-up retry budget, a deadline)


@dataclass(frozen=True)
class Trial:
    """A trial as the study knows it."""

    number: int  # Optuna's, from 0
    values: dict[str, ParameterValue]
    state: str  # running, complete, pruned, failed
    metric: float | None  # the final value (complete), else the last one reported
    last_step: int | None  # the last step it reported


def distribution(parameter: Parameter) -> BaseDistribution:
    """The Optuna distribution of one parameter."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(parameter, UniformParameter):
        return FloatDistribution(parameter.low, parameter.high)
    if isinstance(parameter, LogUniformParameter):
        return FloatDistribution(parameter.low, parameter.high, log=True)
    if isinstance(parameter, IntParameter):
        return IntDistribution(parameter.low, parameter.high, step=parameter.step)
    assert isinstance(parameter, ChoiceParameter)
    return CategoricalDistribution(parameter.values)


def sampler(spec: SweepSpec, number: int = 0) -> BaseSampler:
    """The sampler that draws trial `number`. Random and TPE are seeded from the sweep's seed
    and that number, so a seeded sweep draws the same values in any process and new ones for
    each trial; the grid keeps the sweep's seed: its trial `number` takes the grid's point
    `number` in the order that seed shuffled it."""
    from optuna.samplers import GridSampler, RandomSampler, TPESampler

    if spec.algorithm is Algorithm.GRID:
        grid = {name: grid_values(parameter) for name, parameter in spec.parameters.items()}
        return GridSampler(grid, seed=spec.seed)
    seed = None if spec.seed is None else spec.seed + number
    if spec.algorithm is Algorithm.TPE:
        return TPESampler(seed=seed)
    return RandomSampler(seed=seed)


def pruner(spec: SweepSpec) -> BasePruner:
    from optuna.pruners import MedianPruner, NopPruner, SuccessiveHalvingPruner

    rule = spec.early_stopping
    if rule.rule is EarlyStoppingRule.MEDIAN:
        # Judged once two trials have reported, past every trial's first min_steps steps.
        return MedianPruner(n_startup_trials=2, n_warmup_steps=rule.min_steps)
    if rule.rule is EarlyStoppingRule.ASHA:
        return SuccessiveHalvingPruner(
            min_resource=rule.min_steps, reduction_factor=rule.reduction_factor
        )
    return NopPruner()


class SweepSearch:
    """The study of one sweep: draws trials, hears their metric, ends them."""

    def __init__(self, spec: SweepSpec, sweep_id: str, storage_url: str) -> None:
        """Open the sweep's study, creating it on first use (a controller started again after
        a crash finds it as it was)."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.spec = spec
        self.study = optuna.create_study(
            storage=storage_url,
            study_name=sweep_id,
            sampler=sampler(spec),
            pruner=pruner(spec),
            direction=spec.goal.value,
            load_if_exists=True,
        )
        self._space = {name: distribution(p) for name, p in spec.parameters.items()}
        # Optuna's storage API: a trial of another process is reached by its id.
        self._storage = self.study._storage

    def draw(self) -> Trial:
        """A new trial with the values the sampler chose for it. The controller is a new
        process at each look, so the sampler is seeded afresh for each draw: one seeded once
        per process would draw the same values at every look."""
        self.study.sampler = sampler(self.spec, len(self.study.get_trials(deepcopy=False)))
        trial = self.study.ask(self._space)
        return Trial(trial.number, dict(trial.params), "running", None, None)

    def trials(self) -> list[Trial]:
        """Every trial drawn so far, in the order drawn."""
        trials = []
        for frozen in self.study.get_trials(deepcopy=False):
            reported = frozen.intermediate_values
            last_step = max(reported) if reported else None
            metric = frozen.value
            if metric is None and last_step is not None:
                metric = reported[last_step]
            state = _state_name(frozen.state)
            trials.append(Trial(frozen.number, dict(frozen.params), state, metric, last_step))
        return trials

    def report(self, number: int, step: int, value: float) -> bool:
        """Record a running trial's metric at `step`; say whether the rule stops it now."""
        return self.hear(number, [{"step": step, self.spec.metric: value}])

    def hear(self, number: int, rows: Iterable[Mapping[str, Any]]) -> bool:
        """Record the sweep's metric of each of a running trial's new metric rows at its step
        (a step heard before keeps its first value: a resumed attempt trains some steps again)
        and judge the trial after each, as a trial that reports from its own training loop is
        judged: the value a rung keeps is the one at the rung's step, however seldom the rows
        are read. Say whether the early-stopping rule stops the trial (no row after the one
        that stopped it is recorded)."""
        import optuna

        trial_id = self._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, number
        )
        trial = optuna.trial.Trial(self.study, trial_id)
        heard = set(self._storage.get_trial(trial_id).intermediate_values)
        for row in rows:
            step, value = row.get("step"), row.get(self.spec.metric)
            if not isinstance(step, int) or isinstance(value, bool) or step in heard:
                continue
            if isinstance(value, int | float) and math.isfinite(value):
                trial.report(float(value), step)
                heard.add(step)
                if trial.should_prune():
                    return True
        return False

    def finish(self, number: int, end: TrialEnd, metric: float | None) -> None:
        """Record how a trial ended (once: a second call, after a restart, changes nothing).
        A completed trial without its metric counts as failed: the search cannot rank it."""
        if end is TrialEnd.COMPLETE and metric is None:
            end = TrialEnd.FAILED
        self.study.tell(
            number,
            metric if end is TrialEnd.COMPLETE else None,
            state=_optuna_state(end),
            skip_if_finished=True,
        )

    def best(self) -> Trial | None:
        """The completed trial with the best metric (None: none completed)."""
        done = [
            (t.metric, t) for t in self.trials() if t.state == "complete" and t.metric is not None
        ]
        if not done:
            return None
        pick = min if self.spec.goal is Goal.MINIMIZE else max
        return pick(done, key=lambda scored: scored[0])[1]


def _state_name(state: TrialState) -> str:
    from optuna.trial import TrialState

    return {
        TrialState.RUNNING: "running",
        TrialState.WAITING: "running",
        TrialState.COMPLETE: "complete",
        TrialState.PRUNED: "pruned",
        TrialState.FAIL: "failed",
    }[state]


def _optuna_state(end: TrialEnd) -> TrialState:
    from optuna.trial import TrialState

    return {
        TrialEnd.COMPLETE: TrialState.COMPLETE,
        TrialEnd.PRUNED: TrialState.PRUNED,
        TrialEnd.FAILED: TrialState.FAIL,
    }[end]
