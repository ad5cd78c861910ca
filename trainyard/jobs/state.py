"""A job's state as every reader shows it: one reading of Airflow's run and the job record.

Airflow knows whether a job's run waits, runs or ended; the job record (`records.py`) knows what
Airflow does not: a cancel request, the attempts and their failures, the final step. `job_view`
joins them with the job's metric rows into what users see (state, attempt, progress, start,
elapsed and time left, failure). `trainyard list` and `trainyard status` (the run from the REST
API), the plugin's job list and job page (the run from the metadata DB), and the failure callback
with its notifications all call it, so a job reads the same everywhere. To add a state: a
`JobState` member, where it comes from here, and whether it is in `TERMINAL_STATES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from trainyard.jobs.limits import learner_seconds
from trainyard.jobs.progress import estimate
from trainyard.jobs.records import FailureInfo, JobRecord, JobState, change_record
from trainyard.storage.base import ObjectStore

#: The states a job never leaves.
TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.PRUNED}
)

#: Airflow's run states (`DagRunState`) in Trainyard's names.
_RUN_STATES = {
    "queued": JobState.QUEUED,
    "running": JobState.RUNNING,
    "success": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
}


@dataclass(frozen=True)
class RunFacts:
    """What Airflow knows of a job's run, whoever read it (REST API or metadata DB).

    `state` is Airflow's run state ('queued', 'running', 'success', 'failed'); `learner_try`
    the learner task's try number (0 before it was scheduled, None when not read);
    `failed_tasks` the ids of its failed tasks.
    """

    state: str
    start_date: datetime | None = None
    end_date: datetime | None = None
    learner_try: int | None = None
    failed_tasks: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobView:
    """A job as users see it. `progress` is the fraction done (1.0 once succeeded); `elapsed_s`
    and `eta_s` count from `started_at` (None while the job waits)."""

    state: JobState
    attempt: int
    progress: float | None
    step: int | None
    total_steps: int | None
    started_at: datetime | None
    elapsed_s: float | None
    eta_s: float | None
    failure: FailureInfo | None
    #: Learner time used over all attempts, and the job's `max_runtime` (None: no limit).
    runtime_s: float | None
    max_runtime_s: float | None

    @property
    def terminal(self) -> bool:
        """Whether the job ended: its state will not change again."""
        return self.state in TERMINAL_STATES


def job_state(run: RunFacts | None, record: JobRecord | None) -> JobState:
    """The job's state: the run's, except that a job is cancelled (paused) once its record says
    so or its run failed after a cancel (pause) request, pruned once its record says so, and
    queued until `validate` accepted it (wrote its record). Without a run (Airflow forgot it),
    the record's."""
    if record is not None and record.state in (
        JobState.CANCELLED,
        JobState.PAUSED,
        JobState.PRUNED,
    ):
        return record.state
    if run is None:
        return record.state if record is not None else JobState.QUEUED
    state = _RUN_STATES.get(run.state, JobState.QUEUED)
    if record is None:
        return JobState.QUEUED if state is JobState.RUNNING else state
    if record.cancel_requested and state is JobState.FAILED:
        return JobState.CANCELLED
    if record.pause_requested and state is JobState.FAILED:
        return JobState.PAUSED
    return state


def job_view(
    run: RunFacts | None,
    record: JobRecord | None,
    rows: Sequence[dict[str, Any]],
    now: datetime | None = None,
) -> JobView:
    """The one reading of a job: `run` (None when Airflow has no run of it), `record` (None
    before `validate` wrote it) and its metric rows (`progress.read_metrics`; a finished job's
    may be left out, its record holds the final step)."""
    state = job_state(run, record)
    terminal = state in TERMINAL_STATES
    started, ended = _times(run, record, terminal)
    progress = (
        estimate(list(rows), started, ended or now or datetime.now(UTC), finished=terminal)
        if started is not None
        else None
    )
    step = progress.step if progress else None
    if terminal and record is not None and record.final_step is not None:
        step = record.final_step
    fraction = progress.fraction if progress else None
    if state is JobState.SUCCEEDED:
        fraction = 1.0
    return JobView(
        state=state,
        attempt=_attempt(run, record, rows),
        progress=fraction,
        step=step,
        total_steps=progress.total_steps if progress else None,
        started_at=started,
        elapsed_s=progress.elapsed_s if progress else None,
        eta_s=progress.eta_s if progress else None,
        failure=_failure(state, run, record),
        runtime_s=_runtime(state, run, record, now),
        max_runtime_s=_limit(record),
    )


def _runtime(
    state: JobState, run: RunFacts | None, record: JobRecord | None, now: datetime | None
) -> float | None:
    """Learner time so far (`limits.learner_seconds`): the recorded attempts', and while the
    job runs, the current attempt's since its run started or the last attempt ended."""
    if record is None:
        return None
    since = None
    if state is JobState.RUNNING and run is not None and run.start_date is not None:
        ends = [a.ended_at for a in record.attempts if a.ended_at > run.start_date]
        since = max([run.start_date, *ends])
    return learner_seconds(record.attempts, since, now or datetime.now(UTC))


def _limit(record: JobRecord | None) -> float | None:
    """The job's `max_runtime` as validate recorded it (the tenant's default applied)."""
    limit = record.manifest.get("max_runtime") if record is not None else None
    return float(limit) if isinstance(limit, int | float) else None


def _times(
    run: RunFacts | None, record: JobRecord | None, terminal: bool
) -> tuple[datetime | None, datetime | None]:
    """When the job started (None: it never did) and, once it has, ended: the run's dates,
    else the record's (Airflow forgot the run)."""
    if run is not None:
        started, ended = run.start_date, run.end_date
    elif record is not None:
        started, ended = record.created_at, None
    else:
        return None, None
    if not terminal:
        return started, None
    return started, ended or (record.updated_at if record is not None else None)


def _attempt(run: RunFacts | None, record: JobRecord | None, rows: Sequence[dict[str, Any]]) -> int:
    """The learner's attempt: its Airflow try, the last recorded attempt or the newest row's,
    whichever is furthest (0: the learner has not started)."""
    known = [run.learner_try or 0] if run is not None else [0]
    if record is not None and record.attempts:
        known.append(record.attempts[-1].attempt)
    if rows and isinstance(rows[-1].get("attempt"), int):
        known.append(rows[-1]["attempt"])
    return max(known)


def _failure(state: JobState, run: RunFacts | None, record: JobRecord | None) -> FailureInfo | None:
    """The record's failure; for a failed run whose record holds none, its failed tasks. A
    paused job has none (its stopped tasks' failure callback may have recorded their end)."""
    if state is JobState.PAUSED:
        return None
    failure = record.failure if record is not None else None
    if state is JobState.FAILED and failure is None:
        tasks = ", ".join(run.failed_tasks) if run is not None else ""
        failure = FailureInfo(
            failure_class="unknown",
            task=tasks or "?",
            message="the run failed without a recorded cause: see its task logs",
        )
    return failure


def cancel_job(
    store: ObjectStore,
    record: JobRecord,
    run: RunFacts | None,
    stop_run: Callable[[JobRecord], None],
) -> JobRecord:
    """Cancel a job that has not ended: record the request, `stop_run` (fail its Airflow run, so
    a queued run never starts), record the end.

    `record` is the job's stored record or, for a job still queued before `validate`, a new one
    of its run (manifest from the run's conf): storage then says the job was cancelled, which
    every reader of `job_view` shows. The stop itself is `stop_job`'s, as for a pause.

    Raises:
        ValueError: the job already ended.
    """
    state = job_state(run, record)
    if state in TERMINAL_STATES:
        raise ValueError(f"{record.job_id} already ended ({state.value}); nothing to cancel")

    return stop_job(store, record, stop_run, flag="cancel_requested", final=JobState.CANCELLED)


def stop_job(
    store: ObjectStore,
    record: JobRecord,
    stop_run: Callable[[JobRecord], None],
    *,
    flag: Literal["cancel_requested", "pause_requested"],
    final: JobState,
    after_stop: Callable[[], None] | None = None,
) -> JobRecord:
    """A user's stop of a job's run (cancel, pause): the request `flag` is saved before the run
    is stopped, so the failure callback of the stopped tasks ends the job `final`, not failed;
    a stop that fails withdraws it (the run goes on, and a later real failure must read as
    one); `after_stop` runs once the run is stopped, then the record says `final`. Each write
    re-reads the record and changes only these fields, conditionally
    (`records.change_record`), so it keeps what a task wrote meanwhile (an attempt, a model).
    """

    def mark(requested: bool) -> Callable[[JobRecord], None]:
        def change(stored: JobRecord) -> None:
            setattr(stored, flag, requested)

        return change

    def end(stored: JobRecord) -> None:
        setattr(stored, flag, True)
        stored.state = final

    change_record(store, record.job_id, mark(True), new=record)
    try:
        stop_run(record)
    except BaseException:
        change_record(store, record.job_id, mark(False))
        raise
    if after_stop is not None:
        after_stop()
    ended = change_record(store, record.job_id, end, new=record)
    assert ended is not None  # `new` is created when there is none
    return ended
