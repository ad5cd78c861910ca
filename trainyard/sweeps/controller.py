"""One look of a sweep's controller at its trials.

`advance` ends in the study each trial whose job ended, starts new trials up to `parallel`,
and returns the sweep's record as it now stands; `look` advances the stored record, writes it
unless a user paused or cancelled the sweep meanwhile, and only then starts the new trials.
The Airflow task (operators/tasks/sweep.py) looks each time it wakes. Every step is
idempotent, so a controller started again after a crash (its worker, the scheduler, the whole
Airflow) goes on from what the study and the trials' runs say: a trial drawn but never
started is started now under the job id it drew, and no trial is drawn twice for one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from trainyard.jobs.progress import read_metrics
from trainyard.jobs.records import JobState, load_record
from trainyard.storage.base import ObjectStore
from trainyard.sweeps.record import (
    SweepRecord,
    SweepState,
    TrialRow,
    load_sweep,
    read_sweep,
    write_sweep,
)
from trainyard.sweeps.search import SweepSearch, Trial, TrialEnd
from trainyard.sweeps.trials import trial_job_id, trial_manifest

#: How a trial's job ended, as the study counts it.
_ENDS = {
    JobState.SUCCEEDED: TrialEnd.COMPLETE,
    JobState.PRUNED: TrialEnd.PRUNED,
    JobState.FAILED: TrialEnd.FAILED,
    JobState.CANCELLED: TrialEnd.FAILED,
}

_ENDED_STATES = {state.value for state in _ENDS}

#: The state of a trial's job: None while it has no run yet.
TrialState = Callable[[str], JobState | None]
#: Start a trial's job: (job id, its manifest document).
StartTrial = Callable[[str, dict[str, Any]], None]
#: Stop trials' jobs as the sweep now is (pause them for `paused`, cancel them for `cancelled`).
StopTrials = Callable[[SweepState, list[str]], object]


def look(
    store: ObjectStore,
    sweep_id: str,
    search: Callable[[SweepRecord], SweepSearch],
    trial_state: TrialState,
    start_trial: StartTrial,
    stop_trials: StopTrials,
) -> SweepRecord | None:
    """Advance the stored sweep, if it runs, and write it; the record as it now stands (None:
    there is none).

    A user's pause or cancel may land during the look, so the look writes conditionally and
    starts its new trials only after its write won: a stop written first keeps its state, and
    the look starts nothing (a resumed sweep's next look starts what it drew). A stop written
    between the look's write and its starts may have listed the trials before their runs
    existed: the look reads the state again and stops them as that stop stopped the others.
    """
    loaded = read_sweep(store, sweep_id)
    if loaded is None:
        return None
    record, token = loaded
    if record.state is not SweepState.RUNNING:
        return record
    to_start: list[tuple[str, dict[str, Any]]] = []
    updated = advance(
        record,
        search(record),
        store,
        trial_state,
        lambda job_id, manifest: to_start.append((job_id, manifest)),
    )
    if not write_sweep(store, updated, token):
        return load_sweep(store, sweep_id)
    for job_id, manifest in to_start:
        start_trial(job_id, manifest)
    if to_start:
        now = load_sweep(store, sweep_id)
        if now is not None and now.state in (SweepState.PAUSED, SweepState.CANCELLED):
            stop_trials(now.state, [job_id for job_id, _ in to_start])
            return now
    return updated


def advance(
    record: SweepRecord,
    search: SweepSearch,
    store: ObjectStore,
    trial_state: TrialState,
    start_trial: StartTrial,
) -> SweepRecord:
    """End, start and summarise the sweep's trials; the returned record is `running` until
    every trial ended (then `succeeded` with the best trial, or `failed` if none trained)."""
    spec = record.spec
    manifest = record.job_manifest
    ended = {row.number: row for row in record.trials if row.state in _ENDED_STATES}
    rows = []
    running = 0
    for trial in search.trials():
        if trial.state != "running" and trial.number in ended:
            rows.append(ended[trial.number])  # its end is told and summarised: read nothing
            continue
        job_id = trial_job_id(record.sweep_id, trial.number)
        state = trial_state(job_id)
        metric = trial.metric
        if state is JobState.SUCCEEDED:
            metric = final_metric(store, job_id, spec.metric)
        if trial.state == "running":
            if state is not None and state in _ENDS:
                if state is JobState.SUCCEEDED:
                    # The rungs it reached count for the trials after it, though it may have
                    # ended between two looks of its early-stopping watch.
                    search.hear(trial.number, read_metrics(store, job_id))
                search.finish(trial.number, _ENDS[state], metric)
            else:
                if state is None:  # drawn, but its run never started (a crash between)
                    start_trial(job_id, trial_manifest(manifest, trial.values))
                running += 1
        rows.append(_row(job_id, trial, state, metric))
    drawn = len(rows)
    if record.state is SweepState.RUNNING:
        while running < spec.parallel and drawn < spec.trials_to_run:
            trial = search.draw()
            job_id = trial_job_id(record.sweep_id, trial.number)
            start_trial(job_id, trial_manifest(manifest, trial.values))
            rows.append(_row(job_id, trial, None, None))
            running += 1
            drawn += 1
    best = search.best()
    updated = record.model_copy(
        update={
            "trials": rows,
            "best_job_id": trial_job_id(record.sweep_id, best.number) if best else None,
        }
    )
    if record.state is SweepState.RUNNING and running == 0 and drawn >= spec.trials_to_run:
        updated.state = SweepState.SUCCEEDED if best else SweepState.FAILED
    return updated


def final_metric(store: ObjectStore, job_id: str, metric: str) -> float | None:
    """A finished trial's value of the sweep's metric: its evaluation's, if the evaluation
    reports it, else the last metric row's that carries it."""
    record = load_record(store, job_id)
    evaluated = _number((record.evaluation or {}).get(metric)) if record is not None else None
    if evaluated is not None:
        return evaluated
    values = [_number(row.get(metric)) for row in read_metrics(store, job_id)]
    known = [value for value in values if value is not None]
    return known[-1] if known else None


def _row(job_id: str, trial: Trial, state: JobState | None, metric: float | None) -> TrialRow:
    return TrialRow(
        number=trial.number,
        job_id=job_id,
        values=trial.values,
        state=(state or JobState.QUEUED).value,
        metric=metric,
        step=trial.last_step,
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
