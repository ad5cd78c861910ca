"""`max_queued` while a run waits for its place: a deadline alert on each tenant's DAG.

The learner task enforces `max_queued` when it starts (`LearnerOperator.check_limits`), but a
run that `max_active_runs` (the tenant's `max_running_jobs`) keeps queued, or whose learner
waits for pool slots, may never get there. Airflow's deadline alerts are its own means of acting
on a run that took too long, so each run of a tenant's DAG gets one at `queued_at + max_queued`:
the custom reference `JobQueueDeadline`, evaluated when Airflow creates the run, reads the
run's conf (the manifest's limit, else the tenant's default; none for a resume). When it passes,
the triggerer runs `fail_unstarted_job`: a job whose learners never started fails as
`deadline` with a resource-style fix (`trainyard.jobs.control.expire_queued_job`), and its run
is ended through the REST API, as `trainyard cancel` ends one (the triggerer has no metadata
DB). A run that ends before its deadline has it pruned by Airflow; one whose learners started
is left alone. Airflow finds the reference through the Trainyard plugin's
`deadline_references`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import (
    REFERENCE_TYPE_FIELD,
    BaseDeadlineReference,
    DeadlineAlert,
)

from operators.hooks.airflow_api import AirflowApiHook
from operators.hooks.storage import TenantStorageHook
from trainyard.cli.status import run_facts
from trainyard.jobs.control import expire_queued_job, job_id_of_run, queue_limit
from trainyard.jobs.records import JobRecord, load_record
from trainyard.tenancy.config import TenantConfig, load_config

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)


@dataclass
class JobQueueDeadline(BaseDeadlineReference):
    """When a new run's job has waited `max_queued` (None: no limit, or a resume)."""

    #: The tenant's `default_max_queued`, for a manifest without its own.
    tenant_default: float | None = None

    required_kwargs: ClassVar[set[str]] = {"dag_id", "run_id"}

    def _evaluate_with(self, *, session: Session, dag_id: str, run_id: str) -> datetime | None:
        from airflow.models.dagrun import DagRun
        from sqlalchemy import select

        row = session.execute(
            select(DagRun.queued_at, DagRun.run_after, DagRun.conf).where(
                DagRun.dag_id == dag_id, DagRun.run_id == run_id
            )
        ).one_or_none()
        if row is None:
            return None
        queued_at, run_after, conf = row
        limit = queue_limit(conf, self.tenant_default)
        since = queued_at or run_after
        return since + timedelta(seconds=limit) if limit is not None and since else None

    def serialize_reference(self) -> dict[str, Any]:
        return {REFERENCE_TYPE_FIELD: self.reference_name, "tenant_default": self.tenant_default}

    @classmethod
    def deserialize_reference(cls, reference_data: dict[str, Any]) -> JobQueueDeadline:
        return cls(tenant_default=reference_data.get("tenant_default"))


def queue_deadline(tenant: TenantConfig) -> DeadlineAlert:
    """The deadline alert of `tenant`'s DAG (its runs' deadline is the reference's, as is)."""
    return DeadlineAlert(
        reference=JobQueueDeadline(tenant_default=tenant.default_max_queued),
        interval=timedelta(0),
        callback=AsyncCallback(fail_unstarted_job, kwargs={"tenant": tenant.name}),
        name="max_queued",
    )


async def fail_unstarted_job(tenant: str, context: dict[str, Any]) -> str:
    """The deadline's callback, run by the triggerer: the blocking storage and REST calls in
    a thread, off the triggerer's event loop."""
    return await asyncio.to_thread(expire_run, tenant, context["dag_run"])


def expire_run(tenant: str, dag_run: dict[str, Any]) -> str:
    """Fail the job of `dag_run` (the REST API's form) if its learners never started; say what
    was done."""
    tenant_config = load_config().tenant(tenant)
    store = TenantStorageHook(tenant_config).get_store()
    dag_id, run_id = str(dag_run["dag_id"]), str(dag_run["dag_run_id"])
    with AirflowApiHook().get_client() as client:
        run = client.get_run(dag_id, run_id)  # now, not when the deadline was found missed
        conf = run.get("conf")
        limit = queue_limit(conf, tenant_config.default_max_queued)
        queued_at = datetime.fromisoformat(str(run.get("queued_at") or run["run_after"]))
        if limit is None:
            return f"{run_id}: no max_queued"
        job_id = job_id_of_run(tenant, conf, run_id)
        record = load_record(store, job_id) or JobRecord.of_queued_run(
            job_id, tenant, dag_id, run_id, conf
        )
        facts = run_facts(run, client.task_instances(dag_id, run_id))
        expired = expire_queued_job(
            store,
            record,
            facts,
            limit,
            (datetime.now(UTC) - queued_at).total_seconds(),
            lambda record: client.set_run_state(record.dag_id, record.dag_run_id, "failed"),
        )
    if expired is None:
        return f"{job_id}: its learners started in time"
    log.info("%s waited longer than max_queued (%.0f s): failed as deadline", job_id, limit)
    return f"{job_id}: failed as deadline (max_queued)"
