"""Pause and resume: a job holds nothing while paused and goes on as the same job when resumed.

A pause ends the job's current Airflow run, exactly as a cancel does (`state.cancel_job`): the
learners get SIGTERM and commit a final checkpoint, as for a preemption, and the run's end gives
back its worker slot, its pool slots and its place under the tenant's `max_running_jobs`. The
record says `paused` (`state.job_state`). A resume is a new run of the tenant's DAG whose conf
names the job (`RESUME_KEY`): it waits in the queue like any job, and its tasks work on the same
job id, record, checkpoints and metrics; its learner tries count on from the job's attempts so
far (`attempt_of_try`). docs/dependability.md says why this mechanism.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from trainyard.failures import Deadline
from trainyard.jobs.attempts import record_attempt_end
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JOB_ID_PATTERN, JobLayout, job_id_for_run
from trainyard.jobs.limits import queued_too_long
from trainyard.jobs.records import FailureInfo, JobRecord, JobState, change_record
from trainyard.jobs.state import TERMINAL_STATES, RunFacts, job_state, stop_job
from trainyard.jobs.tasks import TaskId
from trainyard.manifest.schema import ManifestError
from trainyard.manifest.submission import manifest_from_conf, run_job_name
from trainyard.storage.base import ObjectStore

#: The run conf's key that makes a run the resume of an existing job.
RESUME_KEY = "resume_job_id"

#: What an attempt that a pause ended says in the job's attempt history.
PAUSED = "paused"

#: The states a job may be resumed from.
RESUMABLE_STATES = frozenset({JobState.PAUSED, JobState.FAILED})


def job_id_of_run(tenant: str, conf: object, run_id: str) -> str:
    """The job a DAG run works on: the one its conf resumes, else the run's own
    (`layout.job_id_for_run`)."""
    resumed = conf.get(RESUME_KEY) if isinstance(conf, Mapping) else None
    match = JOB_ID_PATTERN.match(resumed) if isinstance(resumed, str) else None
    if match and match["tenant"] == tenant:
        return match.string
    return job_id_for_run(tenant, run_job_name(conf), run_id)


def attempt_of_try(record: JobRecord, try_number: int) -> int:
    """The job's attempt number of the learner task's Airflow try in the current run."""
    return record.attempt_offset + try_number


def record_pause(store: ObjectStore, job_id: str, attempt: int, started_at: datetime) -> None:
    """Show the pause in the attempt history: the attempt it ended, with the newest committed
    checkpoint. Its class is no failure class, so no retry budget counts it."""
    record_attempt_end(
        store,
        job_id,
        attempt,
        started_at,
        failure_class=PAUSED,
        message="paused: the learners were stopped and committed a final checkpoint",
        fix="trainyard resume " + job_id,
    )


def ended_by_pause(record: JobRecord, attempt: int) -> bool:
    """Whether `attempt` ended by the job's pause: one is requested, or its end is recorded as
    one (a resume withdraws the request, maybe before the paused run's task, slow to see its
    learners stop, concludes the attempt: that end must not replace the pause)."""
    return record.pause_requested or any(
        a.attempt == attempt and a.failure_class == PAUSED for a in record.attempts
    )


def pause_job(
    store: ObjectStore,
    record: JobRecord,
    run: RunFacts | None,
    attempt: int,
    stop_run: Callable[[JobRecord], None],
) -> JobRecord:
    """Pause a queued or running job: record the request, `stop_run` (end its Airflow run, so
    its learners stop with a final checkpoint and its slots are given back), record the pause.

    `attempt` is the learner attempt the pause ends (0: none started), noted in the attempt
    history once the run is stopped. The stop itself is `stop_job`'s, as for a cancel.

    Raises:
        ValueError: the job is not queued or running (the reason in words).
    """
    state = job_state(run, record)
    if state not in (JobState.QUEUED, JobState.RUNNING):
        raise ValueError(f"{record.job_id} is {state.value}: only a queued or running job pauses")

    def note_pause() -> None:
        if attempt > 0:
            started = run.start_date if run is not None and run.start_date else datetime.now(UTC)
            record_pause(store, record.job_id, attempt, started)

    return stop_job(
        store,
        record,
        stop_run,
        flag="pause_requested",
        final=JobState.PAUSED,
        after_stop=note_pause,
    )


def resume_run_id(job_id: str, now: datetime | None = None) -> str:
    """A fresh DAG run id for a resume of `job_id` (a run id is used once per DAG)."""
    return f"resume__{job_id}__{(now or datetime.now(UTC)).strftime('%Y%m%dT%H%M%S%f')}"


def resume_job(
    store: ObjectStore,
    record: JobRecord,
    run: RunFacts | None,
    trigger: Callable[[str, dict[str, object]], object],
    max_runtime: float | None = None,
) -> JobRecord:
    """Resume a paused or failed job from its newest committed checkpoint: point its record at
    a new run, then `trigger(run_id, conf)` that run of the tenant's DAG. `max_runtime`, if
    given, is the job's new limit (the new run's validate checks it against the tenant's).

    The record is changed first, so the new run's validate finds it prepared (`check_resume`);
    a trigger that fails puts it back.

    Raises:
        ValueError: the job cannot be resumed (it runs, succeeded, was cancelled or has no
            committed checkpoint), with the reason.
    """
    state = job_state(run, record)
    job_id = record.job_id
    if state not in RESUMABLE_STATES:
        why = {
            JobState.SUCCEEDED: "it succeeded: its model is committed (submit a new job to "
            "train again)",
            JobState.CANCELLED: "it was cancelled (submit it again)",
            JobState.PRUNED: "its sweep stopped it early (pruned): it is not worth going on",
        }.get(state, "it has not ended (pause it first)")
        raise ValueError(f"{job_id} is {state.value} and cannot be resumed: {why}")
    step = CheckpointStore(store, JobLayout(job_id)).latest_step()
    # A job paused before its learners ever started resumes from the start.
    if step is None and (record.attempts or state is not JobState.PAUSED):
        raise ValueError(
            f"{job_id} cannot be resumed: it has no committed checkpoint to resume from "
            "(submit it again)"
        )
    run_id = resume_run_id(job_id)
    before = record.model_copy(deep=True)

    def prepare(stored: JobRecord) -> None:
        known = [a.attempt for a in stored.attempts] + [stored.attempt_offset]
        stored.attempt_offset = max(known)
        stored.dag_run_id = run_id
        stored.state = JobState.QUEUED
        stored.pause_requested = False
        stored.failure = None
        if max_runtime is not None:
            stored.manifest = {**stored.manifest, "max_runtime": max_runtime}

    def restore(stored: JobRecord) -> None:
        stored.attempt_offset = before.attempt_offset
        stored.dag_run_id = before.dag_run_id
        stored.state = before.state
        stored.pause_requested = before.pause_requested
        stored.failure = before.failure
        stored.manifest = before.manifest

    resumed = change_record(store, job_id, prepare, new=record)
    assert resumed is not None  # `new` is created when there is none
    try:
        trigger(run_id, {"manifest": resumed.manifest, RESUME_KEY: job_id})
    except BaseException:
        change_record(store, job_id, restore)
        raise
    return resumed


def check_resume(record: JobRecord | None, job_id: str, run_id: str) -> JobRecord:
    """The record a resume run continues: the one `resume_job` pointed at this run.

    Raises:
        ValueError: the conf names a job that was not resumed into this run.
    """
    if record is None or record.dag_run_id != run_id:
        raise ValueError(
            f"{RESUME_KEY}: {job_id} was not resumed into this run: resume a job with "
            "'trainyard resume JOB' (or the job page), not by triggering a run"
        )
    return record


def queue_limit(conf: object, tenant_default: float | None) -> float | None:
    """How long a new run's job may wait for its tenant's quota (`max_queued`): its manifest's,
    else the tenant's default; None for no limit or a resume (its job ran before). A manifest
    that does not validate gets the default: `validate` refuses it once the run starts."""
    if isinstance(conf, Mapping) and conf.get(RESUME_KEY):
        return None
    try:
        own = manifest_from_conf(conf).max_queued
    except ManifestError:
        own = None
    return own or tenant_default


def expire_queued_job(
    store: ObjectStore,
    record: JobRecord,
    run: RunFacts | None,
    limit: float,
    waited: float,
    stop_run: Callable[[JobRecord], None],
) -> JobRecord | None:
    """Fail a job whose learners never started within `max_queued` (`limit`; it `waited` so
    long): the record says `deadline` with the resource-style fix before `stop_run` ends its
    Airflow run, and again after (a task the stop killed records its own end meanwhile).

    `record` is the stored one or, for a run still queued before `validate`,
    `JobRecord.of_queued_run`. Returns None, changing nothing, for a job whose learners
    started (an attempt, a learner try) or that already ended.
    """
    started = record.attempts or (run is not None and run.learner_try)
    if started or job_state(run, record) in TERMINAL_STATES | {JobState.PAUSED}:
        return None
    cause = queued_too_long(limit, waited)
    failure = FailureInfo(
        failure_class=Deadline.failure_class.value,
        task=TaskId.LEARNER.value,
        message=cause.cause,
        fix=cause.fix,
    )

    def expire(stored: JobRecord) -> None:
        stored.state, stored.failure = JobState.FAILED, failure

    change_record(store, record.job_id, expire, new=record)
    stop_run(record)
    return change_record(store, record.job_id, expire, new=record)
