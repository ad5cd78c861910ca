"""A job's status as users see it: Airflow's run state joined with the job record and metrics."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from trainyard.cli.client import AirflowClient, ApiError
from trainyard.jobs.layout import JobLayout, tenant_of
from trainyard.jobs.records import FailureInfo, JobRecord, JobState, load_record
from trainyard.jobs.tasks import TaskId
from trainyard.limits import shorten
from trainyard.storage import ObjectStore
from trainyard.tenancy.names import dag_id_for_tenant

_METRICS_FILE = re.compile(r"metrics-attempt-(\d+)\.jsonl$")
_RUN_STATES = {
    "queued": JobState.QUEUED,
    "running": JobState.RUNNING,
    "success": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
}


def read_metrics(store: ObjectStore, job_id: str) -> list[dict[str, Any]]:
    """All metric rows of a job, attempt by attempt, in the order the learners wrote them."""
    layout = JobLayout(job_id)
    files = []
    for info in store.list(layout.logs):
        match = _METRICS_FILE.search(info.key)
        if match:
            files.append((int(match.group(1)), info.key))
    rows: list[dict[str, Any]] = []
    for _, key in sorted(files):
        text = store.get_bytes(key).decode()
        rows.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return rows


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


def _state(run: dict[str, Any] | None, record: JobRecord | None) -> JobState:
    if run is None:
        return record.state if record else JobState.QUEUED
    state = _RUN_STATES.get(run["state"], JobState.QUEUED)
    if record is not None and record.cancel_requested and state is JobState.FAILED:
        return JobState.CANCELLED
    return state


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
    metrics = read_metrics(store, job_id)
    progress_rows = [row for row in metrics if "progress" in row]
    step_rows = [row for row in metrics if "step" in row]
    progress = float(progress_rows[-1]["progress"]) if progress_rows else None
    if state is JobState.SUCCEEDED:
        progress = 1.0
    return JobStatus(
        job_id=job_id,
        tenant=tenant,
        dag_id=dag_id,
        dag_run_id=run_id,
        state=state,
        attempt=attempt,
        progress=progress,
        step=int(step_rows[-1]["step"]) if step_rows else None,
        failure=failure,
        evaluation=record.evaluation if record else None,
        model=record.model_key if record else None,
        model_version=record.model_version if record else None,
    )
