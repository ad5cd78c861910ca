"""The sweep's search on a real Optuna study (SQLite here; the platform's PostgreSQL in a
deployment): draws within each distribution, a grid run exactly once per point, pruning by
the median rule and ASHA, and a study that a restarted controller finds as it was."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from trainyard.manifest.sweep import SweepSpec
from trainyard.sweeps.search import SweepSearch, TrialEnd

PARAMETERS: dict[str, Any] = {
    "lr": {"distribution": "log_uniform", "low": 1e-4, "high": 1.0},
    "dropout": {"distribution": "uniform", "low": 0.0, "high": 0.5},
    "hidden": {"distribution": "int", "low": 16, "high": 64, "step": 16},
    "optimizer": {"distribution": "choice", "values": ["sgd", "adam"]},
}


def spec(**changes: Any) -> SweepSpec:
    fields = {
        "parameters": PARAMETERS,
        "trials": 8,
        "metric": "loss",
        "goal": "minimize",
        "seed": 7,
    }
    return SweepSpec.model_validate(fields | changes)


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.mark.parametrize("algorithm", ["random", "tpe"])
def test_each_draw_lies_within_its_distribution(storage: str, algorithm: str) -> None:
    search = SweepSearch(spec(algorithm=algorithm), "acme.tune.1", storage)
    for _ in range(8):
        trial = search.draw()
        values = trial.values
        lr, dropout = values["lr"], values["dropout"]
        assert isinstance(lr, float)
        assert isinstance(dropout, float)
        assert 1e-4 <= lr <= 1.0
        assert 0.0 <= dropout <= 0.5
        assert values["hidden"] in (16, 32, 48, 64)
        assert values["optimizer"] in ("sgd", "adam")
        search.finish(trial.number, TrialEnd.COMPLETE, lr)
    lrs = [float(t.values["lr"]) for t in search.trials()]
    assert len(set(lrs)) == 8
    # log-uniform: spread over the decades, not bunched at the top
    assert min(math.log10(lr) for lr in lrs) < -1


@pytest.mark.parametrize("looks", ["one look", "a look per draw"])
def test_a_grid_runs_each_point_exactly_once(storage: str, looks: str) -> None:
    grid = {
        "hidden": {"distribution": "int", "low": 16, "high": 48, "step": 16},
        "optimizer": {"distribution": "choice", "values": ["sgd", "adam"]},
    }

    def search() -> SweepSearch:
        return SweepSearch(
            spec(parameters=grid, algorithm="grid", trials=6), "acme.grid.1", storage
        )

    one = search()
    points = [
        tuple(sorted((one if looks == "one look" else search()).draw().values.items()))
        for _ in range(6)
    ]
    assert sorted(points) == sorted(
        (("hidden", hidden), ("optimizer", optimizer))
        for hidden in (16, 32, 48)
        for optimizer in ("sgd", "adam")
    )


@pytest.mark.parametrize("algorithm", ["random", "tpe"])
def test_a_controller_started_for_each_look_draws_new_values_and_a_seed_repeats_them(
    storage: str, algorithm: str
) -> None:
    def looks(sweep_id: str) -> list[object]:
        """Four draws, each by a search opened afresh, as the controller's task at each look."""
        return [
            SweepSearch(spec(algorithm=algorithm), sweep_id, storage).draw().values["lr"]
            for _ in range(4)
        ]

    drawn = looks("acme.looks.1")
    assert len(set(drawn)) == 4
    assert looks("acme.looks.2") == drawn  # the same seed, another sweep: the same trials


@pytest.mark.parametrize("rule", ["median", "asha"])
def test_a_trial_worse_than_the_others_at_a_step_is_pruned(storage: str, rule: str) -> None:
    search = SweepSearch(
        spec(early_stopping={"rule": rule, "min_steps": 1, "reduction_factor": 2}),
        "acme.prune.1",
        storage,
    )
    for final in (0.3, 0.2, 0.1):  # three trials, each better than those before it
        trial = search.draw()
        for step in range(1, 9):
            assert not search.report(trial.number, step, final + 1 / step)
        search.finish(trial.number, TrialEnd.COMPLETE, final)
    bad = search.draw()
    pruned_at = next(
        step for step in range(1, 9) if search.report(bad.number, step, 5.0 + 1 / step)
    )
    assert pruned_at <= 2
    search.finish(bad.number, TrialEnd.PRUNED, None)
    states = [(t.state, t.last_step) for t in search.trials()]
    assert states[-1] == ("pruned", pruned_at)
    assert [state for state, _ in states[:3]] == ["complete"] * 3


def test_a_trial_heard_late_keeps_at_each_rung_its_value_at_that_step(storage: str) -> None:
    """A watch reads a trial's rows every few seconds, so it may hear many steps at once: each
    rung still keeps the value at its step, as if the trial had reported from its own loop."""
    search = SweepSearch(
        spec(
            metric="accuracy",
            goal="maximize",
            early_stopping={"rule": "asha", "min_steps": 1, "reduction_factor": 2},
        ),
        "acme.late.1",
        storage,
    )
    early = search.draw()
    rows = [{"step": step, "accuracy": 0.1 * step} for step in range(1, 9)]
    assert not search.hear(early.number, rows)  # all 8 steps in one look, then it ended
    search.finish(early.number, TrialEnd.COMPLETE, 0.8)
    # As good at step 1 as the first trial was at step 1 (though worse than its final value).
    later = search.draw()
    assert not search.report(later.number, 1, 0.1)
    # Worse than the first at step 2: stopped there.
    assert search.report(later.number, 2, 0.15)


def test_no_rule_never_prunes(storage: str) -> None:
    search = SweepSearch(spec(), "acme.noprune.1", storage)
    first, second = search.draw(), search.draw()
    for step in range(1, 20):
        search.report(first.number, step, 0.1)
        assert not search.report(second.number, step, 100.0)


def test_a_restarted_controller_finds_the_study_as_it_was(storage: str) -> None:
    search = SweepSearch(spec(), "acme.restart.1", storage)
    done, running = search.draw(), search.draw()
    search.report(running.number, 1, 0.7)
    search.finish(done.number, TrialEnd.COMPLETE, 0.2)

    again = SweepSearch(spec(), "acme.restart.1", storage)
    trials = again.trials()
    assert [(t.number, t.state) for t in trials] == [(0, "complete"), (1, "running")]
    assert trials[1].values == running.values
    assert (trials[1].metric, trials[1].last_step) == (0.7, 1)
    # Telling an end twice (a controller that crashed after telling) changes nothing.
    again.finish(done.number, TrialEnd.FAILED, None)
    assert again.trials()[0].state == "complete"
    # The same step reported again after a restart keeps its first value.
    again.report(running.number, 1, 9.9)
    assert again.trials()[1].metric == 0.7
    assert again.draw().number == 2
    # Another sweep's study is its own.
    assert SweepSearch(spec(), "acme.other.1", storage).trials() == []


@pytest.mark.parametrize(("goal", "best"), [("minimize", 0.1), ("maximize", 0.9)])
def test_the_best_trial_follows_the_goal_and_counts_only_completed_ones(
    storage: str, goal: str, best: float
) -> None:
    search = SweepSearch(spec(goal=goal), f"acme.best-{goal}.1", storage)
    assert search.best() is None
    for metric in (0.5, 0.1, 0.9):
        search.finish(search.draw().number, TrialEnd.COMPLETE, metric)
    pruned = search.draw()
    search.report(pruned.number, 1, 0.0 if goal == "minimize" else 1.0)
    search.finish(pruned.number, TrialEnd.PRUNED, None)
    search.finish(search.draw().number, TrialEnd.COMPLETE, None)  # no metric: failed
    winner = search.best()
    assert winner is not None
    assert winner.metric == best
    assert [t.state for t in search.trials()][-2:] == ["pruned", "failed"]
