"""Sweeps (issue 26): what early stopping saves, and what the platform costs per trial.

The digits example's learning rate (log-uniform, 1e-5 .. 3e-2) is searched over the same
trials (random search, one seed) through Trainyard on the embedded default, twice: with ASHA
and without early stopping, 2 trials at once. Each sweep's wall time runs from `trainyard
submit` to the end of its Airflow run; its learner time is the sum of its trials' (the time
their learners held, `trainyard.jobs.accounting`). Then the overhead: the sweep without early
stopping run again 1 trial at a time, against the same trials' commands (the learning rates
the sweep drew) run bare one after another, in the PyTorch environment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.common import (
    EXAMPLE_CHECKPOINT_INTERVAL,
    Context,
    Figure,
    Table,
    poll_until,
    run_bare,
    wall,
)
from trainyard.jobs.accounting import account
from trainyard.jobs.records import load_record
from trainyard.manifest.sweep import format_value
from trainyard.sweeps.record import SweepRecord, SweepState, load_sweep
from trainyard.tenancy.names import dag_id_for_sweeps

TENANT = "globex"  # local storage: the embedded default
TRAIN_SECONDS = 20.0  # each trial trains about this long bare
SEED = 4


@dataclass(frozen=True)
class SweepRun:
    record: SweepRecord
    wall_s: float  # submit -> the sweep's run ended
    learner_s: float  # over all its trials

    def count(self, state: str) -> int:
        return sum(trial.state == state for trial in self.record.trials)


def sweep_section(trials: int, parallel: int, early_stopping: str) -> dict[str, Any]:
    return {
        "parameters": {"lr": {"distribution": "log_uniform", "low": 1e-5, "high": 3e-2}},
        "trials": trials,
        "parallel": parallel,
        "algorithm": "random",
        "metric": "val_accuracy",  # the example's held-out accuracy at each epoch's end
        "goal": "maximize",
        "early_stopping": {"rule": early_stopping, "min_steps": 40, "reduction_factor": 2},
        "seed": SEED,
    }


def run_sweep(ctx: Context, name: str, epochs: int, sweep: dict[str, Any]) -> SweepRun:
    deployment, client = ctx.deployment(), ctx.client()
    store = deployment.stores[TENANT]
    manifest = deployment.write_manifest(
        TENANT,
        f"{name}.yaml",
        name=name,
        command=f"python train.py --epochs {epochs} --lr {{lr}}",
        evaluation=None,
        sweep=sweep,
    )
    submitted = time.time()
    sweep_id = deployment.submit(manifest)
    dag_id = dag_id_for_sweeps(TENANT)

    def ended() -> dict[str, Any] | None:
        run = client.get_run(dag_id, sweep_id)
        return run if run["state"] in ("success", "failed") else None

    run = poll_until(ended, f"sweep {sweep_id} to end", timeout=3600, every=2.0)
    record = load_sweep(store, sweep_id)
    if record is None or record.state is not SweepState.SUCCEEDED:
        raise RuntimeError(f"sweep {sweep_id} did not succeed: trainyard sweep show {sweep_id}")
    learner_s = 0.0
    for trial in record.trials:
        trial_record = load_record(store, trial.job_id)
        if trial_record is not None:
            learner_s += account(trial_record).learner_s
    return SweepRun(record, wall(run["end_date"]) - submitted, learner_s)


def run(ctx: Context) -> list[Table]:
    trials = 3 if ctx.quick else 8
    epochs = 2 if ctx.quick else ctx.epochs_for(TRAIN_SECONDS)
    figures: dict[str, Figure] = {}

    def add(label: str, value: float, unit: str = "s") -> None:
        figures.setdefault(label, Figure(label, unit)).add(value)

    for repeat in range(ctx.repeats):
        pruned = run_sweep(ctx, f"sweep-asha-{repeat}", epochs, sweep_section(trials, 2, "asha"))
        full = run_sweep(ctx, f"sweep-full-{repeat}", epochs, sweep_section(trials, 2, "none"))
        add("wall time, ASHA (2 at once)", pruned.wall_s)
        add("wall time, no early stopping (2 at once)", full.wall_s)
        add("learner time, ASHA", pruned.learner_s)
        add("learner time, no early stopping", full.learner_s)
        add("learner time saved by ASHA", 100 * (1 - pruned.learner_s / full.learner_s), "%")
        add("trials pruned by ASHA", pruned.count("pruned"), "")
        serial = run_sweep(ctx, f"sweep-serial-{repeat}", epochs, sweep_section(trials, 1, "none"))
        bare = sum(
            run_bare(
                ctx,
                epochs,
                interval=EXAMPLE_CHECKPOINT_INTERVAL,
                args=("--lr", format_value(trial.values["lr"])),
            ).seconds
            for trial in serial.record.trials
        )
        add("1 at a time: through Trainyard (submit -> sweep ended)", serial.wall_s)
        add("1 at a time: the same commands bare, one after another", bare)
        add("platform overhead per trial", (serial.wall_s - bare) / trials)
    title = (
        f"Sweeps: digits, {trials} trials (random search over the learning rate, seed {SEED}), "
        f"{epochs} epochs each"
    )
    notes = [
        "learner time: what the trials' learners held (trainyard.jobs.accounting), pruned "
        "trials up to their final checkpoint",
        "overhead per trial: (the 1-at-a-time sweep's wall time - the bare commands' total) / "
        "trials; it includes each trial's validate, data check, commit, evaluation-free "
        "register and the controller's 10 s looks",
    ]
    return [Table(title, list(figures.values()), notes)]
