"""The job record: what Trainyard knows about a job beyond Airflow's run state.

Stored as `jobs/<job-id>/job.json` in the tenant's storage, so it survives scheduler and
database loss and the CLI can read it with storage access alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from trainyard.jobs.layout import JOBS_ROOT, JobLayout
from trainyard.manifest.schema import ManifestError
from trainyard.manifest.submission import manifest_from_conf
from trainyard.storage.base import ObjectNotFound, ObjectStore


class JobState(StrEnum):
    """A job's state as users see it; which ones are final, and how a job's state is read from
    its run and its record: `trainyard.jobs.state`."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"
    #: A sweep's trial its early-stopping rule stopped (trainyard.sweeps): no failure.
    PRUNED = "pruned"


class FailureInfo(BaseModel):
    """Why a job failed, in words a user can act on."""

    failure_class: str
    task: str
    message: str
    fix: str = ""


class AttemptInfo(BaseModel):
    """How one learner attempt ended: the history behind retries and their budgets."""

    attempt: int
    failure_class: str | None = None
    message: str = ""
    fix: str = ""
    started_at: datetime
    ended_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # The newest committed checkpoint step when it ended, and whether that is newer than when
    # it started: the retry budgets count faults without progress (`attempts.faults_in_a_row`).
    checkpoint_step: int | None = None
    progressed: bool = False
    # When that checkpoint was committed: the accounting (`accounting.py`) counts an attempt's
    # training up to it as goodput and the rest of a failed attempt as lost.
    checkpoint_at: datetime | None = None


class JobRecord(BaseModel):
    job_id: str
    tenant: str
    dag_id: str
    dag_run_id: str
    manifest: dict[str, Any]
    state: JobState = JobState.RUNNING
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    failure: FailureInfo | None = None
    cancel_requested: bool = False
    # Pause and resume (`trainyard.jobs.control`): a pause asked for, and the attempts before
    # the current run (its learner tries count on from there, so attempt numbers stay unique).
    pause_requested: bool = False
    attempt_offset: int = 0
    # The newest training attempt that started: an older one's end is not recorded, and its
    # results are not committed (`trainyard.jobs.fencing`).
    current_attempt: int = 0
    model_key: str | None = None
    final_step: int | None = None
    evaluation: dict[str, Any] | None = None
    attempts: list[AttemptInfo] = Field(default_factory=list)
    code_digest: str | None = None
    data_digest: str | None = None
    data_validation: dict[str, Any] | None = None
    model_version: int | None = None

    @classmethod
    def of_queued_run(
        cls, job_id: str, tenant: str, dag_id: str, run_id: str, conf: object
    ) -> JobRecord:
        """The record of a job whose run is still queued before `validate` wrote one: a
        cancel, a pause or a `max_queued` deadline then says in storage what became of it.
        The manifest is the run's (with the trigger form's overrides), so a resume runs what
        was submitted; as given when it does not validate."""
        try:
            manifest: dict[str, Any] = manifest_from_conf(conf).model_dump(mode="json")
        except ManifestError:
            given = conf.get("manifest") if isinstance(conf, Mapping) else None
            manifest = dict(given) if isinstance(given, Mapping) else {}
        return cls(
            job_id=job_id,
            tenant=tenant,
            dag_id=dag_id,
            dag_run_id=run_id,
            manifest=manifest,
            state=JobState.QUEUED,
        )

    def count_attempts(self, *failure_classes: str) -> int:
        """How many recorded learner attempts ended with one of `failure_classes`."""
        return sum(1 for a in self.attempts if a.failure_class in failure_classes)


def load_record(store: ObjectStore, job_id: str) -> JobRecord | None:
    """The stored record of `job_id`, or None when the job never got past submission."""
    try:
        return JobRecord.model_validate_json(store.get_bytes(JobLayout(job_id).record))
    except ObjectNotFound:
        return None


def list_records(store: ObjectStore) -> list[JobRecord]:
    """Every job record in `store` (one per job that got past submission)."""
    return [
        JobRecord.model_validate_json(store.get_bytes(info.key))
        for info in store.list(JOBS_ROOT)
        if JobLayout.of_record(info.key) is not None
    ]


def save_record(store: ObjectStore, record: JobRecord) -> None:
    record.updated_at = datetime.now(UTC)
    store.put_bytes(JobLayout(record.job_id).record, record.model_dump_json(indent=2).encode())


def update_record(store: ObjectStore, job_id: str, **changes: Any) -> JobRecord | None:
    """Apply `changes` to the stored record (if there is one) and save it."""

    def apply(record: JobRecord) -> None:
        for name, value in changes.items():
            setattr(record, name, value)

    return change_record(store, job_id, apply)


def change_record(
    store: ObjectStore,
    job_id: str,
    change: Callable[[JobRecord], None],
    new: JobRecord | None = None,
) -> JobRecord | None:
    """Apply `change` to the stored record and write it only if nobody wrote it meanwhile.

    A conditional write (`ObjectStore.write_if`): on a conflict the record is read again and
    `change` applied to the fresh one, so a writer changes only the fields it owns and never
    writes back a stale copy over a concurrent attempt, register or cancel. Without a stored
    record: `new` is created (changed), or None is returned.
    """
    key = JobLayout(job_id).record
    while True:
        try:
            data, token = store.read_with_token(key)
        except ObjectNotFound:
            if new is None:
                return None
            record, expected = new.model_copy(deep=True), None
        else:
            record, expected = JobRecord.model_validate_json(data), token
        change(record)
        record.updated_at = datetime.now(UTC)
        if store.write_if(key, record.model_dump_json(indent=2).encode(), expected):
            return record
