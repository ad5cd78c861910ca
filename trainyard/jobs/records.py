"""The job record: what Trainyard knows about a job beyond Airflow's run state.

Stored as `jobs/<job-id>/job.json` in the tenant's storage, so it survives scheduler and
database loss and the CLI can read it with storage access alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from trainyard.jobs.layout import JOBS_ROOT, JobLayout
from trainyard.storage.base import ObjectNotFound, ObjectStore


class JobState(StrEnum):
    """A job's state as users see it; which ones are final, and how a job's state is read from
    its run and its record: `trainyard.jobs.state`."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


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
    model_key: str | None = None
    final_step: int | None = None
    evaluation: dict[str, Any] | None = None
    attempts: list[AttemptInfo] = Field(default_factory=list)
    code_digest: str | None = None
    data_digest: str | None = None
    data_validation: dict[str, Any] | None = None
    model_version: int | None = None

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
    record = load_record(store, job_id)
    if record is None:
        return None
    updated = record.model_copy(update=changes)
    save_record(store, updated)
    return updated
