"""Pause and resume: the record's requests and the pause in the attempt history, the run ended
and the resume run triggered, the refusals with their reasons, a resume run's job id and
attempt numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.control import (
    PAUSED,
    RESUME_KEY,
    attempt_of_try,
    check_resume,
    job_id_of_run,
    pause_job,
    resume_job,
)
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.records import AttemptInfo, FailureInfo, JobRecord, JobState, load_record
from trainyard.jobs.state import RunFacts, job_state, job_view
from trainyard.storage.local import LocalStore

JOB_ID = "acme.digits-mlp.20261124-215908-abcd"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def a_record(**changes: object) -> JobRecord:
    record = JobRecord(
        job_id=JOB_ID,
        tenant="acme",
        dag_id="trainyard_acme",
        dag_run_id=JOB_ID,
        manifest={"name": "digits-mlp", "tenant": "acme"},
    )
    return record.model_copy(update=changes)


def commit_checkpoint(store: LocalStore, tmp_path: Path, step: int) -> None:
    folder = tmp_path / f"ckpt-{step}"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"weights")
    CheckpointStore(store, JobLayout(JOB_ID)).commit(folder, step)


RUNNING = RunFacts(state="running", start_date=T0, learner_try=2)


def test_pause_records_the_request_before_the_run_ends_and_the_pause_after(
    local_store: LocalStore, tmp_path: Path
) -> None:
    commit_checkpoint(local_store, tmp_path, 40)
    seen: list[JobRecord | None] = []

    def stop_run(record: JobRecord) -> None:
        seen.append(load_record(local_store, record.job_id))

    paused = pause_job(local_store, a_record(), RUNNING, 2, stop_run)

    assert seen[0] is not None
    assert seen[0].pause_requested
    assert paused.state is JobState.PAUSED
    stored = load_record(local_store, JOB_ID)
    assert stored is not None
    assert stored.state is JobState.PAUSED
    assert [(a.attempt, a.failure_class, a.checkpoint_step) for a in stored.attempts] == [
        (2, PAUSED, 40)
    ]
    # The ended run reads as paused everywhere, never as failed, even once the stopped task's
    # failure callback recorded its end.
    stored.failure = FailureInfo(failure_class="platform_fault", task="learner", message="killed")
    view = job_view(RunFacts(state="failed"), stored, [])
    assert (view.state, view.failure) == (JobState.PAUSED, None)


def test_a_failed_stop_withdraws_the_pause(local_store: LocalStore) -> None:
    def stop_run(record: JobRecord) -> None:
        raise ConnectionError("Airflow is down")

    with pytest.raises(ConnectionError):
        pause_job(local_store, a_record(), RUNNING, 1, stop_run)

    stored = load_record(local_store, JOB_ID)
    assert stored is not None
    assert not stored.pause_requested
    assert job_state(RunFacts(state="failed"), stored) is JobState.FAILED


@pytest.mark.parametrize(
    ("facts", "record"),
    [
        (RunFacts(state="success"), a_record()),
        (RunFacts(state="failed"), a_record(state=JobState.PAUSED)),
        (RunFacts(state="failed"), a_record(state=JobState.CANCELLED)),
    ],
    ids=["succeeded", "already-paused", "cancelled"],
)
def test_only_a_queued_or_running_job_pauses(
    local_store: LocalStore, facts: RunFacts, record: JobRecord
) -> None:
    with pytest.raises(ValueError, match="only a queued or running job pauses"):
        pause_job(local_store, record, facts, 1, lambda _: None)


def test_resume_points_the_record_at_a_new_run_and_triggers_it(
    local_store: LocalStore, tmp_path: Path
) -> None:
    commit_checkpoint(local_store, tmp_path, 40)
    attempts = [AttemptInfo(attempt=3, failure_class=PAUSED, started_at=T0)]
    record = a_record(state=JobState.PAUSED, pause_requested=True, attempts=attempts)
    triggered: list[tuple[str, dict[str, object]]] = []

    resumed = resume_job(
        local_store, record, RunFacts(state="failed"), lambda *run: triggered.append(run)
    )

    [(run_id, conf)] = triggered
    assert resumed.dag_run_id == run_id != JOB_ID
    assert conf == {"manifest": record.manifest, RESUME_KEY: JOB_ID}
    assert job_id_of_run("acme", conf, run_id) == JOB_ID
    stored = load_record(local_store, JOB_ID)
    assert stored is not None
    assert (stored.state, stored.pause_requested, stored.attempt_offset) == (
        JobState.QUEUED,
        False,
        3,
    )
    assert stored.attempts == attempts  # the history is kept
    assert attempt_of_try(stored, 1) == 4  # the new run's first try is the job's attempt 4
    assert check_resume(stored, JOB_ID, run_id) is stored
    assert job_state(RunFacts(state="queued"), stored) is JobState.QUEUED


def test_a_failed_job_resumes_without_its_failure(local_store: LocalStore, tmp_path: Path) -> None:
    commit_checkpoint(local_store, tmp_path, 10)
    failure = FailureInfo(failure_class="preemption", task="learner", message="budget used up")
    record = a_record(state=JobState.FAILED, failure=failure)

    resumed = resume_job(local_store, record, RunFacts(state="failed"), lambda *_: None)

    assert resumed.failure is None
    assert resumed.state is JobState.QUEUED


def test_a_failed_trigger_puts_the_record_back(local_store: LocalStore, tmp_path: Path) -> None:
    commit_checkpoint(local_store, tmp_path, 10)
    record = a_record(state=JobState.PAUSED, pause_requested=True)

    def trigger(run_id: str, conf: dict[str, object]) -> None:
        raise ConnectionError("Airflow is down")

    with pytest.raises(ConnectionError):
        resume_job(local_store, record, RunFacts(state="failed"), trigger)

    stored = load_record(local_store, JOB_ID)
    assert stored is not None
    assert (stored.state, stored.dag_run_id) == (JobState.PAUSED, JOB_ID)


@pytest.mark.parametrize(
    ("facts", "record", "reason"),
    [
        (RunFacts(state="success"), a_record(), "it succeeded"),
        (RunFacts(state="failed"), a_record(state=JobState.CANCELLED), "it was cancelled"),
        (RunFacts(state="running"), a_record(), "pause it first"),
    ],
    ids=["succeeded", "cancelled", "running"],
)
def test_resume_refuses_a_job_that_did_not_stop_or_ended_for_good(
    local_store: LocalStore, tmp_path: Path, facts: RunFacts, record: JobRecord, reason: str
) -> None:
    commit_checkpoint(local_store, tmp_path, 10)

    with pytest.raises(ValueError, match=reason):
        resume_job(local_store, record, facts, lambda *_: None)


def test_resume_refuses_a_job_without_a_checkpoint(local_store: LocalStore) -> None:
    record = a_record(state=JobState.PAUSED)

    with pytest.raises(ValueError, match="no committed checkpoint"):
        resume_job(local_store, record, RunFacts(state="failed"), lambda *_: None)


def test_a_resume_conf_not_prepared_by_resume_is_refused() -> None:
    with pytest.raises(ValueError, match="was not resumed into this run"):
        check_resume(a_record(), JOB_ID, "manual__forged")
    with pytest.raises(ValueError, match="was not resumed into this run"):
        check_resume(None, JOB_ID, "manual__forged")


def test_job_id_of_run() -> None:
    conf = {"manifest": {"name": "digits-mlp"}}
    assert job_id_of_run("acme", conf, JOB_ID) == JOB_ID
    assert job_id_of_run("acme", {**conf, RESUME_KEY: JOB_ID}, "resume__x") == JOB_ID
    # Another tenant's job, or no job id at all, is not taken: the run's own id is.
    assert job_id_of_run("other", {**conf, RESUME_KEY: JOB_ID}, "r1") == "other.digits-mlp.r1"
    assert job_id_of_run("acme", {**conf, RESUME_KEY: "nope"}, "r1") == "acme.digits-mlp.r1"


def test_a_resume_may_set_a_new_max_runtime(local_store: LocalStore, tmp_path: Path) -> None:
    commit_checkpoint(local_store, tmp_path, 10)
    record = a_record(state=JobState.FAILED, manifest={"name": "digits-mlp", "max_runtime": 20.0})
    triggered: list[dict[str, object]] = []

    resume_job(
        local_store,
        record,
        RunFacts(state="failed"),
        lambda _, conf: triggered.append(conf),
        max_runtime=3600.0,
    )

    stored = load_record(local_store, JOB_ID)
    assert stored is not None
    assert stored.manifest["max_runtime"] == 3600.0
    assert triggered[0]["manifest"] == stored.manifest  # validate checks it against the tenant
