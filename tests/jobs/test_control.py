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
    expire_queued_job,
    job_id_of_run,
    pause_job,
    queue_limit,
    resume_job,
)
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.records import (
    AttemptInfo,
    FailureInfo,
    JobRecord,
    JobState,
    change_record,
    load_record,
)
from trainyard.jobs.state import RunFacts, job_state, job_view
from trainyard.manifest.submission import manifest_from_conf
from trainyard.storage.local import LocalStore

JOB_ID = "acme.digits-mlp.20261124-215908-abcd"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
MANIFEST = {
    "name": "digits-mlp",
    "tenant": "acme",
    "framework": {"name": "custom", "version": "1", "image": "registry.example/x:1"},
    "code": {"path": "."},
    "command": "python train.py",
}


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


def test_resume_refuses_a_job_that_trained_without_a_checkpoint(local_store: LocalStore) -> None:
    attempts = [AttemptInfo(attempt=1, failure_class=PAUSED, started_at=T0)]
    paused = a_record(state=JobState.PAUSED, attempts=attempts)
    failed = a_record(state=JobState.FAILED)  # e.g. max_queued ran out: it never trained

    for record in (paused, failed):
        with pytest.raises(ValueError, match="no committed checkpoint"):
            resume_job(local_store, record, RunFacts(state="failed"), lambda *_: None)


def test_a_job_paused_before_its_learners_started_resumes_from_the_start(
    local_store: LocalStore,
) -> None:
    conf = {"manifest": MANIFEST, "command": "python train.py -e 2"}
    queued = JobRecord.of_queued_run(JOB_ID, "acme", "trainyard_acme", JOB_ID, conf)
    paused = pause_job(local_store, queued, RunFacts(state="queued"), 0, lambda _: None)
    assert paused.state is JobState.PAUSED
    assert paused.attempts == []  # nothing ran, so no attempt to show
    triggered: list[tuple[str, dict[str, object]]] = []

    resumed = resume_job(
        local_store, paused, RunFacts(state="failed"), lambda *r: triggered.append(r)
    )

    [(run_id, sent)] = triggered
    assert (resumed.state, resumed.dag_run_id) == (JobState.QUEUED, run_id)
    assert sent[RESUME_KEY] == JOB_ID
    # What was submitted, the trigger form's override included, runs when resumed.
    assert manifest_from_conf(sent).command == "python train.py -e 2"


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


def test_the_queue_limit_is_the_manifests_else_the_tenants_and_none_for_a_resume() -> None:
    own = {"manifest": {**MANIFEST, "max_queued": "30s"}}

    assert queue_limit(own, 600.0) == 30.0
    assert queue_limit({"manifest": MANIFEST}, 600.0) == 600.0
    assert queue_limit({"manifest": MANIFEST}, None) is None
    assert queue_limit({"manifest": {"name": 3}}, 600.0) == 600.0  # validate refuses it later
    assert queue_limit({**own, RESUME_KEY: JOB_ID}, 600.0) is None  # the job ran before


def test_a_job_that_never_started_expires_as_deadline_before_and_after_its_run_ends(
    local_store: LocalStore,
) -> None:
    queued = JobRecord.of_queued_run(JOB_ID, "acme", "trainyard_acme", JOB_ID, {})
    seen: list[JobRecord | None] = []

    def stop_run(record: JobRecord) -> None:
        seen.append(load_record(local_store, record.job_id))
        # the killed validate task's failure callback writes its own end meanwhile
        killed = FailureInfo(failure_class="platform_fault", task="validate", message="killed")
        change_record(local_store, JOB_ID, lambda r: setattr(r, "failure", killed))

    expired = expire_queued_job(local_store, queued, RunFacts(state="queued"), 10, 12.5, stop_run)

    assert expired is not None
    assert seen[0] is not None
    assert seen[0].failure is not None  # recorded before the run was stopped
    stored = load_record(local_store, JOB_ID)
    assert stored is not None
    assert stored.failure is not None
    assert (stored.state, stored.failure.failure_class) == (JobState.FAILED, "deadline")
    assert "max_queued ran out: the job waited 12s" in stored.failure.message
    assert "max_running_jobs" in stored.failure.fix
    assert job_view(RunFacts(state="failed"), stored, []).failure == stored.failure


@pytest.mark.parametrize(
    ("facts", "record"),
    [
        (RunFacts(state="running", learner_try=1), a_record()),
        (RunFacts(state="running"), a_record(attempts=[AttemptInfo(attempt=1, started_at=T0)])),
        (RunFacts(state="failed"), a_record(state=JobState.CANCELLED)),
        (RunFacts(state="failed"), a_record(state=JobState.PAUSED)),
    ],
    ids=["learner-running", "trained-before", "cancelled", "paused"],
)
def test_a_job_whose_learners_started_or_that_ended_does_not_expire(
    local_store: LocalStore, facts: RunFacts, record: JobRecord
) -> None:
    stopped: list[JobRecord] = []

    assert expire_queued_job(local_store, record, facts, 10, 60, stopped.append) is None
    assert stopped == []
    assert load_record(local_store, JOB_ID) is None
