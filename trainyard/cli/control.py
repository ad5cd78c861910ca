"""`trainyard pause` and `trainyard resume` through the REST API: the job's run is read and
ended, or a resume run triggered, by `trainyard.jobs.control`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from trainyard.cli.client import AirflowClient
from trainyard.cli.status import cancel_by_id, find_job, run_facts
from trainyard.jobs.control import pause_job, resume_job
from trainyard.jobs.progress import read_metrics
from trainyard.jobs.records import JobRecord
from trainyard.jobs.state import job_view
from trainyard.storage import ObjectStore
from trainyard.sweeps.record import SweepState


def pause_by_id(client: AirflowClient, store: ObjectStore, job_id: str) -> JobRecord:
    """Pause `job_id`: its run is ended (failed, as a cancel ends it) once the pause is recorded.

    Raises:
        LookupError: neither Airflow nor the storage knows the job.
        ValueError: the job is not queued or running.
    """
    job = find_job(client, store, job_id)
    facts = None
    if job.run is not None:
        facts = run_facts(job.run, client.task_instances(job.dag_id, job.dag_run_id))
    attempt = job_view(facts, job.record, read_metrics(store, job_id)).attempt
    return pause_job(
        store,
        job.record_or_queued(),
        facts,
        attempt,
        lambda stopped: client.set_run_state(stopped.dag_id, stopped.dag_run_id, "failed"),
    )


def resume_by_id(
    client: AirflowClient, store: ObjectStore, job_id: str, max_runtime: float | None = None
) -> JobRecord:
    """Resume `job_id` in a new run of its tenant's DAG (with a new `max_runtime`, if given).

    Raises:
        LookupError: neither Airflow nor the storage knows the job.
        ValueError: the job cannot be resumed, with the reason.
    """
    job = find_job(client, store, job_id)
    if job.record is None:
        raise ValueError(f"{job_id} was never accepted: there is nothing to resume")
    facts = run_facts(job.run, None) if job.run is not None else None
    return resume_job(
        store,
        job.record,
        facts,
        lambda run_id, conf: client.trigger_run(job.dag_id, run_id, dict(conf)),
        max_runtime,
    )


def stop_trials(
    client: AirflowClient, store: ObjectStore, state: SweepState, job_ids: Iterable[str]
) -> list[str]:
    """Pause (for a paused sweep) or cancel (a cancelled one) each of the trials `job_ids`
    that is queued or running; return those stopped."""
    stop = pause_by_id if state is SweepState.PAUSED else cancel_by_id
    stopped = []
    for job_id in job_ids:
        with contextlib.suppress(LookupError, ValueError):  # gone, or already ended
            stop(client, store, job_id)
            stopped.append(job_id)
    return stopped
