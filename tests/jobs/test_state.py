"""The one reading of a job's state: every run state with and without a record, cancelled,
queued before validate, attempt and progress; and cancelling, queued or running."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trainyard.jobs.records import (
    AttemptInfo,
    FailureInfo,
    JobRecord,
    JobState,
    load_record,
    save_record,
)
from trainyard.jobs.state import TERMINAL_STATES, RunFacts, cancel_job, job_state, job_view
from trainyard.storage.local import LocalStore

JOB_ID = "acme.digits-mlp.20261124-215908-abcd"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def a_record(**changes: object) -> JobRecord:
    record = JobRecord(
        job_id=JOB_ID,
        tenant="acme",
        dag_id="trainyard_acme",
        dag_run_id=JOB_ID,
        manifest={"name": "digits-mlp"},
        created_at=T0 + timedelta(seconds=5),
    )
    return record.model_copy(update=changes)


def run(state: str, **changes: Any) -> RunFacts:
    started = None if state == "queued" else T0
    ended = T0 + timedelta(seconds=100) if state in ("success", "failed") else None
    return replace(RunFacts(state=state, start_date=started, end_date=ended), **changes)


RUNNING = a_record()
CANCEL_REQUESTED = a_record(cancel_requested=True)
CANCELLED = a_record(cancel_requested=True, state=JobState.CANCELLED)


@pytest.mark.parametrize(
    ("facts", "record", "expected"),
    [
        pytest.param(run("queued"), None, JobState.QUEUED, id="queued-run-no-record"),
        pytest.param(run("running"), None, JobState.QUEUED, id="running-before-validate"),
        pytest.param(run("success"), None, JobState.SUCCEEDED, id="success-no-record"),
        pytest.param(run("failed"), None, JobState.FAILED, id="failed-no-record"),
        pytest.param(run("running"), RUNNING, JobState.RUNNING, id="running"),
        pytest.param(run("success"), RUNNING, JobState.SUCCEEDED, id="success"),
        pytest.param(run("failed"), RUNNING, JobState.FAILED, id="failed"),
        pytest.param(run("failed"), CANCEL_REQUESTED, JobState.CANCELLED, id="failed-on-cancel"),
        pytest.param(
            run("running"), CANCEL_REQUESTED, JobState.RUNNING, id="cancel-requested-still-running"
        ),
        pytest.param(run("failed"), CANCELLED, JobState.CANCELLED, id="cancelled-record"),
        pytest.param(
            run("failed"), a_record(pause_requested=True), JobState.PAUSED, id="failed-on-pause"
        ),
        pytest.param(
            run("running"),
            a_record(pause_requested=True),
            JobState.RUNNING,
            id="pause-requested-still-running",
        ),
        pytest.param(
            run("failed"), a_record(state=JobState.PAUSED), JobState.PAUSED, id="paused-record"
        ),
        pytest.param(None, a_record(state=JobState.PAUSED), JobState.PAUSED, id="paused-no-run"),
        pytest.param(run("running"), CANCELLED, JobState.CANCELLED, id="cancelled-run-ending"),
        pytest.param(
            run("queued"),
            a_record(state=JobState.CANCELLED),
            JobState.CANCELLED,
            id="cancelled-while-queued",
        ),
        pytest.param(
            run("running"),
            a_record(state=JobState.SUCCEEDED),
            JobState.RUNNING,
            id="the-run-ends-the-job",
        ),
        pytest.param(
            None, a_record(state=JobState.SUCCEEDED), JobState.SUCCEEDED, id="run-forgotten"
        ),
        pytest.param(run("up_for_retry"), RUNNING, JobState.QUEUED, id="unknown-run-state"),
    ],
)
def test_the_state_of_each_run_and_record(
    facts: RunFacts | None, record: JobRecord | None, expected: JobState
) -> None:
    assert job_state(facts, record) is expected
    view = job_view(facts, record, [], now=T0 + timedelta(seconds=50))
    assert view.state is expected
    assert view.terminal is (expected in TERMINAL_STATES)


def test_a_queued_job_has_no_start_progress_or_attempt() -> None:
    view = job_view(run("queued"), None, [], now=T0 + timedelta(seconds=50))

    assert (view.started_at, view.elapsed_s, view.progress, view.attempt) == (None, None, None, 0)
    assert view.failure is None


def test_a_job_cancelled_while_queued_never_started() -> None:
    never_ran = RunFacts(state="failed", end_date=T0 + timedelta(seconds=9))

    view = job_view(never_ran, CANCELLED, [])

    assert view.state is JobState.CANCELLED
    assert (view.started_at, view.elapsed_s, view.failure) == (None, None, None)


ROWS = [
    {"step": 100, "total_steps": 1000, "time": 1_000.0, "attempt": 2},
    {"step": 300, "total_steps": 1000, "time": 1_100.0, "attempt": 2},
]


@pytest.mark.parametrize(
    ("facts", "record", "rows", "attempt"),
    [
        pytest.param(run("running", learner_try=0), RUNNING, [], 0, id="learner-not-started"),
        pytest.param(run("running", learner_try=3), RUNNING, [], 3, id="airflow-try"),
        pytest.param(run("running"), RUNNING, ROWS, 2, id="rows-attempt"),
        pytest.param(
            None,
            a_record(attempts=[AttemptInfo(attempt=4, started_at=T0)]),
            [],
            4,
            id="recorded-attempt",
        ),
        pytest.param(run("running", learner_try=1), RUNNING, ROWS, 2, id="furthest-wins"),
    ],
)
def test_the_attempt_is_the_furthest_known(
    facts: RunFacts | None, record: JobRecord, rows: list[dict[str, object]], attempt: int
) -> None:
    assert job_view(facts, record, rows, now=T0).attempt == attempt


def test_progress_counts_from_the_runs_start_and_the_newest_attempts_pace() -> None:
    view = job_view(run("running", learner_try=2), RUNNING, ROWS, now=T0 + timedelta(seconds=200))

    assert view.started_at == T0  # the run's start, not the record's
    assert (view.step, view.total_steps, view.progress) == (300, 1000, 0.3)
    assert view.elapsed_s == 200
    assert view.eta_s == pytest.approx(350.0)  # 20 % in 100 s: 70 % more in 350 s


def test_a_finished_job_ends_at_its_runs_end_with_its_final_step() -> None:
    record = a_record(state=JobState.SUCCEEDED, final_step=1000)

    view = job_view(run("success"), record, ROWS, now=T0 + timedelta(days=1))

    assert (view.progress, view.step, view.elapsed_s, view.eta_s) == (1.0, 1000, 100, None)


def test_without_a_run_the_record_dates_the_job() -> None:
    record = a_record(state=JobState.FAILED, updated_at=T0 + timedelta(seconds=65))

    view = job_view(None, record, [], now=T0 + timedelta(days=1))

    assert (view.started_at, view.elapsed_s) == (record.created_at, 60)


def test_a_failed_run_without_a_recorded_failure_names_its_failed_tasks() -> None:
    view = job_view(run("failed", failed_tasks=("stage_data",)), RUNNING, [])

    assert view.failure is not None
    assert (view.failure.failure_class, view.failure.task) == ("unknown", "stage_data")


def test_a_recorded_failure_is_the_jobs() -> None:
    failure = FailureInfo(failure_class="user_error", task="learner", message="boom")

    view = job_view(run("failed"), a_record(failure=failure), [])

    assert view.failure == failure


def test_cancel_records_the_request_before_stopping_the_run(local_store: LocalStore) -> None:
    save_record(local_store, a_record())
    seen = []

    def stop_run(record: JobRecord) -> None:
        stored = load_record(local_store, JOB_ID)
        assert stored is not None
        seen.append((record.dag_run_id, stored.cancel_requested, stored.state))

    cancelled = cancel_job(local_store, a_record(), run("running"), stop_run)

    assert seen == [(JOB_ID, True, JobState.RUNNING)]
    assert cancelled.state is JobState.CANCELLED
    assert load_record(local_store, JOB_ID) == cancelled


def test_a_job_queued_before_validate_is_cancelled_with_a_record_of_its_run(
    local_store: LocalStore,
) -> None:
    stopped: list[JobRecord] = []
    queued = a_record(state=JobState.QUEUED)

    cancel_job(local_store, queued, run("queued"), stopped.append)

    assert [record.job_id for record in stopped] == [JOB_ID]
    stored = load_record(local_store, JOB_ID)
    assert stored is not None
    assert (stored.state, stored.cancel_requested, stored.manifest) == (
        JobState.CANCELLED,
        True,
        {"name": "digits-mlp"},
    )
    assert job_view(RunFacts(state="failed"), stored, []).state is JobState.CANCELLED


@pytest.mark.parametrize(
    ("facts", "record", "state"),
    [
        pytest.param(run("success"), RUNNING, "succeeded", id="succeeded"),
        pytest.param(run("failed"), RUNNING, "failed", id="failed"),
        pytest.param(run("running"), CANCELLED, "cancelled", id="cancelled"),
        pytest.param(None, a_record(state=JobState.FAILED), "failed", id="run-forgotten"),
    ],
)
def test_a_job_that_ended_cannot_be_cancelled(
    local_store: LocalStore, facts: RunFacts | None, record: JobRecord, state: str
) -> None:
    with pytest.raises(ValueError, match=f"already ended \\({state}\\)"):
        cancel_job(local_store, record, facts, lambda record: pytest.fail("the run was stopped"))
    assert load_record(local_store, JOB_ID) is None


def test_cancel_keeps_what_a_task_wrote_after_the_record_was_read(local_store: LocalStore) -> None:
    stale = a_record()
    save_record(local_store, a_record(model_version=3))

    def stop_run(record: JobRecord) -> None:  # an attempt ends while the run is stopped
        stored = load_record(local_store, JOB_ID)
        assert stored is not None
        stored.attempts.append(AttemptInfo(attempt=1, failure_class="preemption", started_at=T0))
        save_record(local_store, stored)

    cancelled = cancel_job(local_store, stale, run("running"), stop_run)

    stored = load_record(local_store, JOB_ID)
    assert stored == cancelled
    assert (stored.state, stored.cancel_requested) == (JobState.CANCELLED, True)
    assert stored.model_version == 3
    assert [a.attempt for a in stored.attempts] == [1]


def test_a_failed_stop_withdraws_the_cancel_request(local_store: LocalStore) -> None:
    save_record(local_store, a_record())

    def stop_run(record: JobRecord) -> None:
        raise ConnectionError("the API server is down")

    with pytest.raises(ConnectionError):
        cancel_job(local_store, a_record(), run("running"), stop_run)

    stored = load_record(local_store, JOB_ID)
    assert stored is not None
    assert (stored.state, stored.cancel_requested) == (JobState.RUNNING, False)
    assert job_state(run("failed"), stored) is JobState.FAILED
