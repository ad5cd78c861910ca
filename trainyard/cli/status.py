"""A job's status as users see it: `job_view` (trainyard.jobs.state) of its Airflow run, read
through the REST API, and its record and metric rows, read from the tenant's storage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any

from trainyard.cli.client import AirflowClient, ApiError
from trainyard.jobs.control import job_id_of_run
from trainyard.jobs.layout import tenant_of
from trainyard.jobs.progress import read_metrics
from trainyard.jobs.records import JobRecord, load_record
from trainyard.jobs.state import JobView, RunFacts, cancel_job, job_view
from trainyard.jobs.tasks import TaskId
from trainyard.limits import shorten
from trainyard.storage import ObjectStore
from trainyard.tenancy.names import dag_id_for_tenant


@dataclass(frozen=True)
class JobStatus(JobView):
    """A job's view (`job_view`) with what names it and what its record adds."""

    job_id: str
    tenant: str
    dag_id: str
    dag_run_id: str
    evaluation: dict[str, Any] | None
    model: str | None
    model_version: int | None

    @classmethod
    def of(cls, job: FoundJob, view: JobView) -> JobStatus:
        record = job.record
        return cls(
            **{field.name: getattr(view, field.name) for field in fields(view)},
            job_id=job.job_id,
            tenant=job.tenant,
            dag_id=job.dag_id,
            dag_run_id=job.dag_run_id,
            evaluation=record.evaluation if record else None,
            model=record.model_key if record else None,
            model_version=record.model_version if record else None,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the state by name, the failure as its fields (asdict leaves models alone)."""
        data = asdict(self)
        data["state"] = self.state.value
        data["started_at"] = self.started_at.isoformat() if self.started_at else None
        data["failure"] = self.failure.model_dump(mode="json") if self.failure else None
        return data


@dataclass(frozen=True)
class FoundJob:
    """A job's run (the REST API's JSON; None when Airflow has none) and record (None before
    `validate` wrote it): at least one of them."""

    job_id: str
    tenant: str
    dag_id: str
    dag_run_id: str
    run: dict[str, Any] | None
    record: JobRecord | None

    def record_or_queued(self) -> JobRecord:
        """The record, or for a run still queued before `validate` the one a cancel or pause
        writes (`JobRecord.of_queued_run`)."""
        conf = self.run.get("conf") if self.run is not None else None
        return self.record or JobRecord.of_queued_run(
            self.job_id, self.tenant, self.dag_id, self.dag_run_id, conf
        )


def _date(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def run_facts(run: Mapping[str, Any], instances: list[dict[str, Any]] | None) -> RunFacts:
    """The facts `job_view` reads from a run's JSON and (None: not read) its task instances."""
    learner = None
    failed: tuple[str, ...] = ()
    if instances is not None:
        learner = next(
            (int(ti.get("try_number") or 0) for ti in instances if ti["task_id"] == TaskId.LEARNER),
            0,
        )
        failed = tuple(ti["task_id"] for ti in instances if ti.get("state") == "failed")
    return RunFacts(
        state=str(run["state"]),
        start_date=_date(run.get("start_date")),
        end_date=_date(run.get("end_date")),
        learner_try=learner,
        failed_tasks=failed,
    )


def find_job(client: AirflowClient, store: ObjectStore, job_id: str) -> FoundJob:
    """The job's record and its run.

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
        if error.status_code != 404:
            raise
        if record is None:
            raise LookupError(
                f"no job {shorten(job_id)} in {dag_id}: is the job id right?"
            ) from error
        run = None
    return FoundJob(job_id, tenant, dag_id, run_id, run, record)


def job_status(client: AirflowClient, store: ObjectStore, job_id: str) -> JobStatus:
    """The status of `job_id` from the REST API and the tenant's storage (LookupError as
    `find_job` says)."""
    job = find_job(client, store, job_id)
    facts = None
    if job.run is not None:
        facts = run_facts(job.run, client.task_instances(job.dag_id, job.dag_run_id))
    return JobStatus.of(job, job_view(facts, job.record, read_metrics(store, job_id)))


def tenant_statuses(client: AirflowClient, store: ObjectStore, tenant: str) -> list[JobStatus]:
    """The status of each recent run of the tenant's DAG, newest first: the learner's tries
    in one request (not the failed tasks of each run: `job_status` names them), each job's
    record and rows from the storage."""
    dag_id = dag_id_for_tenant(tenant)
    tries = client.task_tries(dag_id, TaskId.LEARNER)
    statuses = []
    seen: set[str] = set()
    for run in client.list_runs(dag_id):
        run_id = str(run["dag_run_id"])
        job_id = job_id_of_run(tenant, run.get("conf"), run_id)
        if job_id in seen:
            continue  # an earlier run of a resumed job (trainyard.jobs.control): newest first
        seen.add(job_id)
        job = FoundJob(job_id, tenant, dag_id, run_id, run, load_record(store, job_id))
        facts = replace(run_facts(run, None), learner_try=tries.get(run_id, 0))
        statuses.append(JobStatus.of(job, job_view(facts, job.record, read_metrics(store, job_id))))
    return statuses


def cancel_by_id(client: AirflowClient, store: ObjectStore, job_id: str) -> JobRecord:
    """Cancel `job_id` (`trainyard.jobs.state.cancel_job`): a job still queued before
    `validate` gets a record of its run, whose conf holds the manifest.

    Raises:
        LookupError: neither Airflow nor the storage knows the job.
        ValueError: the job already ended.
    """
    job = find_job(client, store, job_id)
    facts = run_facts(job.run, None) if job.run is not None else None
    return cancel_job(
        store,
        job.record_or_queued(),
        facts,
        lambda stopped: client.set_run_state(stopped.dag_id, stopped.dag_run_id, "failed"),
    )
