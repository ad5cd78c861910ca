"""A job's status as users see it: Airflow's run state joined with the job record and metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from trainyard.cli.client import AirflowClient, ApiError
from trainyard.jobs.layout import tenant_of
from trainyard.jobs.progress import estimate, read_metrics
from trainyard.jobs.records import TERMINAL_STATES, FailureInfo, JobRecord, JobState, load_record
from trainyard.jobs.tasks import TaskId
from trainyard.limits import shorten
from trainyard.storage import ObjectStore
from trainyard.tenancy.names import dag_id_for_tenant

_RUN_STATES = {
    "queued": JobState.QUEUED,
    "running": JobState.RUNNING,
    "success": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
}


@dataclass
class JobStatus:
    job_id: str
    tenant: str
    dag_id: str
    dag_run_id: str
    state: JobState
    attempt: int
    progress: float | None
    step: int | None
    total_steps: int | None
    elapsed_s: float | None
    eta_s: float | None
    failure: FailureInfo | None
    evaluation: dict[str, Any] | None
    model: str | None
    model_version: int | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the state by name, the failure as its fields (asdict leaves models alone)."""
        data = asdict(self)
        data["state"] = self.state.value
        data["failure"] = self.failure.model_dump(mode="json") if self.failure else None
        return data


def run_state(airflow_state: str | None) -> JobState:
    """A run's Airflow state ('success', 'failed', ...) in Trainyard's names ('succeeded', ...)."""
    return _RUN_STATES.get(airflow_state or "", JobState.QUEUED)


def _state(run: dict[str, Any] | None, record: JobRecord | None) -> JobState:
    if run is None:
        return record.state if record else JobState.QUEUED
    state = run_state(run["state"])
    if record is not None and record.cancel_requested and state is JobState.FAILED:
        return JobState.CANCELLED
    return state


def _times(
    run: dict[str, Any] | None, record: JobRecord | None
) -> tuple[datetime | None, datetime | None]:
    """When the job started and (once it has) ended: the run's dates, else the record's."""
    if run is not None and run.get("start_date"):
        end = run.get("end_date")
        return _parse(run["start_date"]), _parse(end) if end else None
    if record is None:
        return None, None
    return record.created_at, record.updated_at if record.state in TERMINAL_STATES else None


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def job_status(client: AirflowClient, store: ObjectStore, job_id: str) -> JobStatus:
    """Collect the status of `job_id` from the REST API and the tenant's storage.

    Raises:
        LookupError: neither Airflow nor the storage knows the job.
    """
    tenant = tenant_of(job_id)
    record = load_record(store, job_id)
    dag_id = record.dag_id if record else dag_id_for_tenant(tenant)
    run_id = record.dag_run_id if record else job_id
    try:
        run: dict[str, Any] | None = client.get_run(dag_id, run_id)
    except ApiError as error:
        if error.status_code != 404 or record is None:
            if error.status_code == 404:
                raise LookupError(f"no job {shorten(job_id)} in {dag_id}") from error
            raise
        run = None
    state = _state(run, record)
    attempt = 0
    failure = record.failure if record else None
    if run is not None:
        instances = {ti["task_id"]: ti for ti in client.task_instances(dag_id, run_id)}
        attempt = int(instances.get(TaskId.LEARNER, {}).get("try_number") or 0)
        if state is JobState.FAILED and failure is None:
            failed = [ti["task_id"] for ti in instances.values() if ti["state"] == "failed"]
            failure = FailureInfo(
                failure_class="unknown",
                task=", ".join(failed) or "?",
                message=f"see 'trainyard logs {job_id}'",
            )
    started, ended = _times(run, record)
    progress = (
        estimate(
            read_metrics(store, job_id),
            started,
            ended or datetime.now(UTC),
            finished=state in TERMINAL_STATES,
        )
        if started
        else None
    )
    fraction = progress.fraction if progress else None
    if state is JobState.SUCCEEDED:
        fraction = 1.0
    return JobStatus(
        job_id=job_id,
        tenant=tenant,
        dag_id=dag_id,
        dag_run_id=run_id,
        state=state,
        attempt=attempt,
        progress=fraction,
        step=progress.step if progress else None,
        total_steps=progress.total_steps if progress else None,
        elapsed_s=progress.elapsed_s if progress else None,
        eta_s=progress.eta_s if progress else None,
        failure=failure,
        evaluation=record.evaluation if record else None,
        model=record.model_key if record else None,
        model_version=record.model_version if record else None,
    )
