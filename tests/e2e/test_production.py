"""The production configuration on real services: PostgreSQL as the metadata DB, Redis and the
CeleryExecutor (a Celery worker runs every task), the FAB auth manager.

A job submitted with the CLI trains on the Celery worker to an evaluated model, and a burst of
parallel submissions is accepted whole: every job listed, none lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy

from devkit.airflow_env import DATABASE_URL
from devkit.deployment import Deployment, deploy
from devkit.s3_server import S3Server
from devkit.services import postgres_server, redis_server
from trainyard.cli.client import AirflowClient, ApiSettings
from trainyard.jobs.layout import new_job_id
from trainyard.jobs.records import JobState, load_record
from trainyard.manifest.submission import example_manifest
from trainyard.tenancy.names import dag_id_for_tenant

pytestmark = pytest.mark.e2e

SUBMITTERS = 8
BURST = 40


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[Deployment]:
    with (
        postgres_server() as database_url,
        redis_server() as broker_url,
        deploy(
            tmp_path_factory.mktemp("production"),
            s3_server,
            auth_manager="fab",
            database_url=database_url,
            celery_broker_url=broker_url,
        ) as deployed,
    ):
        yield deployed


def test_a_submitted_job_trains_on_a_celery_worker(deployment: Deployment) -> None:
    manifest = deployment.write_manifest("acme", "job.yaml", command="python train.py --epochs 20")

    submitted = deployment.cluster.trainyard("submit", str(manifest), "--wait")

    job_id = submitted.stdout.split()[0]
    record = load_record(deployment.stores["acme"], job_id)
    assert record is not None
    assert record.state is JobState.SUCCEEDED
    assert record.evaluation is not None
    assert record.evaluation["accuracy"] > 0.5
    worker_log = deployment.cluster.log_path("celery worker").read_text()
    assert job_id in worker_log  # the Celery worker ran the job's tasks
    # ... and the external PostgreSQL holds the run.
    database_url = deployment.cluster.env[DATABASE_URL]
    assert database_url.startswith("postgresql")
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as connection:
            query = sqlalchemy.text("SELECT state FROM dag_run WHERE run_id = :run_id")
            assert connection.execute(query, {"run_id": job_id}).scalar_one() == "success"
    finally:
        engine.dispose()


def submit_burst(deployment: Deployment, dag_id: str, tenant: str) -> list[str]:
    """BURST jobs from SUBMITTERS parallel clients; returns the job ids, all accepted."""
    manifest = example_manifest(tenant)

    def submit_share(share: int) -> list[str]:
        with AirflowClient(ApiSettings.from_env(deployment.cluster.env)) as api:
            job_ids = []
            for _ in range(share):
                job_id = new_job_id(tenant, manifest["name"])
                api.trigger_run(dag_id, job_id, {"manifest": manifest})
                job_ids.append(job_id)
            return job_ids

    shares = [BURST // SUBMITTERS] * SUBMITTERS
    with ThreadPoolExecutor(SUBMITTERS) as pool:
        return [job_id for ids in pool.map(submit_share, shares) for job_id in ids]


def test_a_burst_of_parallel_submissions_loses_nothing(
    deployment: Deployment, client: AirflowClient
) -> None:
    """The tenant's DAG is paused, so the burst stays queued: what is listed is what was
    accepted, without waiting for 40 jobs to train."""
    dag_id = dag_id_for_tenant("globex")
    client.request("PATCH", f"/dags/{dag_id}", json={"is_paused": True})

    job_ids = submit_burst(deployment, dag_id, "globex")

    assert len(set(job_ids)) == BURST
    listed = {run["dag_run_id"]: run["state"] for run in client.list_runs(dag_id)}
    assert set(job_ids) <= set(listed)
    assert {listed[job_id] for job_id in job_ids} == {"queued"}
