"""Scheduled and data-triggered retraining through real Airflow, on the S3 backend.

Scheduled job manifests are dropped into the deployment's jobs folder while Airflow runs: each
becomes its own DAG without a restart. New data uploaded with the CLI starts a run by itself.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.deployment import EXAMPLE_CODE, Deployment
from devkit.learners import wait_until
from trainyard.cli.client import AirflowClient, ApiError
from trainyard.jobs.layout import job_id_for_run
from trainyard.jobs.lineage import digest_prefix
from trainyard.jobs.registry import ModelRegistry
from trainyard.tenancy.names import dag_id_for_job, dag_id_for_tenant

pytestmark = pytest.mark.e2e

TENANT = "acme"
NIGHTLY = "nightly-digits"
FRESH = "fresh-digits"
INCOMING = "datasets/incoming"
#: A manifest dropped into the jobs folder is a DAG the API knows within this (the README's
#: promise; the DAG processor re-parses the DAG file every 10 s).
PICKUP_DEADLINE = 30


@pytest.fixture(scope="module")
def scheduled(deployment: Deployment, client: AirflowClient) -> Iterator[Deployment]:
    """Two scheduled jobs appear while Airflow runs, each its own DAG within PICKUP_DEADLINE:
    a nightly one and a data-triggered one. Their manifests go at the end (the deployment is
    shared: tests/e2e/shared/conftest.py)."""
    common = {
        "code": {"uri": EXAMPLE_CODE},
        "command": "python train.py --epochs 20",
        "evaluation": {"threshold": 0.5},  # low: these tests are about the comparison
    }
    nightly = deployment.write_manifest(
        TENANT, f"jobs/{TENANT}/{NIGHTLY}.yaml", name=NIGHTLY, schedule="0 3 * * *", **common
    )
    fresh = deployment.write_manifest(
        TENANT,
        f"jobs/{TENANT}/{FRESH}.yaml",
        name=FRESH,
        schedule={"on_new_data": INCOMING},
        data={"path": INCOMING},
        **common,
    )
    wait_until(
        lambda: all(known(client, dag_id_for_job(TENANT, job)) for job in (NIGHTLY, FRESH)),
        "the API to know both scheduled jobs' DAGs",
        timeout=PICKUP_DEADLINE,
    )
    yield deployment
    for manifest in (nightly, fresh):
        manifest.unlink()


def known(client: AirflowClient, dag_id: str) -> bool:
    try:
        client.get_dag(dag_id)
    except ApiError as error:
        if error.status_code == 404:
            return False
        raise
    return True


def wait_for_run(client: AirflowClient, dag_id: str, run_id: str) -> None:
    def ended() -> str | None:
        state = str(client.get_run(dag_id, run_id)["state"])
        return state if state in ("success", "failed") else None

    assert wait_until(ended, f"run {run_id} of {dag_id}", timeout=300) == "success"


def registry(deployment: Deployment, job_name: str) -> ModelRegistry:
    return ModelRegistry(deployment.stores[TENANT], job_name)


def test_cron_job_is_its_own_dag_and_its_first_run_is_promoted(
    scheduled: Deployment, client: AirflowClient
) -> None:
    dag_id = dag_id_for_job(TENANT, NIGHTLY)
    dag = client.request("GET", f"/dags/{dag_id}")
    assert dag["timetable_summary"] == "0 3 * * *"

    run = client.trigger_run(dag_id, "first", {})["dag_run_id"]
    wait_for_run(client, dag_id, run)

    # The job ran as a run of the tenant's DAG, under the tenant's limit on running jobs.
    job_id = job_id_for_run(TENANT, NIGHTLY, run)
    assert client.get_run(dag_id_for_tenant(TENANT), job_id)["state"] == "success"
    production = registry(scheduled, NIGHTLY).production()
    assert production is not None
    assert production.version == 1
    assert production.status == "promoted"
    assert (production.job_id, production.lineage.airflow_run_id) == (job_id, job_id)


def test_a_worse_model_is_kept_as_a_version_but_not_promoted(
    scheduled: Deployment, client: AirflowClient
) -> None:
    dag_id = dag_id_for_job(TENANT, NIGHTLY)
    models = registry(scheduled, NIGHTLY)
    if models.production() is None:  # this test also runs alone
        wait_for_run(client, dag_id, client.trigger_run(dag_id, "baseline", {})["dag_run_id"])
    best = models.production()
    assert best is not None

    worse = client.trigger_run(dag_id, "one-epoch", {"command": "python train.py --epochs 1"})
    wait_for_run(client, dag_id, worse["dag_run_id"])

    latest = models.versions()[-1]
    assert latest.status == "rejected"
    assert latest.value is not None
    assert best.value is not None
    assert latest.value < best.value
    assert models.production() == best
    shown = scheduled.cluster.trainyard(
        "models", "show", NIGHTLY, str(latest.version), "--tenant", TENANT
    ).stdout
    assert "rejected" in shown
    assert f"v{best.version}" in shown  # the reason names the production version it lost to


def write_dataset(source: Path, target: Path, keep_rows: int | None) -> Path:
    """A copy of the digits dataset, optionally with fewer training rows (new data)."""
    shutil.copytree(source, target)
    if keep_rows is not None:
        rows = list(csv.reader((target / "train.csv").open()))
        with (target / "train.csv").open("w", newline="") as f:
            csv.writer(f).writerows(rows[: keep_rows + 1])
    return target


def upload_and_wait_for_the_run(
    scheduled: Deployment, client: AirflowClient, dataset: Path
) -> None:
    """Upload new data with the CLI; a run of the data-triggered job must start and succeed."""
    dag_id = dag_id_for_job(TENANT, FRESH)
    before = len(client.list_runs(dag_id))
    scheduled.cluster.trainyard("data", "upload", str(dataset), INCOMING, "--tenant", TENANT)

    def new_run() -> dict[str, Any] | None:
        runs = client.list_runs(dag_id)
        return runs[0] if len(runs) > before else None

    run = wait_until(new_run, "a run started by the new data", timeout=120)
    assert run["run_type"] == "asset_triggered"
    wait_for_run(client, dag_id, run["dag_run_id"])


def test_new_data_starts_a_run_by_itself_and_the_version_records_its_digest(
    scheduled: Deployment, client: AirflowClient
) -> None:
    store = scheduled.stores[TENANT]
    digests = []
    for batch, keep_rows in enumerate((None, 1000)):
        dataset = write_dataset(
            scheduled.root / "digits", scheduled.root / f"new-{batch}", keep_rows
        )
        upload_and_wait_for_the_run(scheduled, client, dataset)
        digests.append(digest_prefix(store, INCOMING))

    first, second = registry(scheduled, FRESH).versions()
    assert (first.lineage.data_digest, second.lineage.data_digest) == tuple(digests)
    assert digests[0] != digests[1]
