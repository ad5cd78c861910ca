"""A team submitting at once to the embedded default: nothing lost, nothing duplicated.

Eight clients submit five jobs each, all at the same time: half of them run `trainyard submit`
(one CLI process per job, whose trigger retries on a failed or lost answer), half call the REST
API directly. Every job is accepted, listed and ends, and the tenant's DAG has exactly the
runs whose ids the clients were given: a retried trigger made no second run.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devkit.deployment import EXAMPLE_CODE, Deployment, deploy
from devkit.learners import wait_for_end
from devkit.s3_server import S3Server
from trainyard.cli.client import AirflowClient, ApiError, ApiSettings
from trainyard.jobs.layout import new_job_id
from trainyard.jobs.records import JobState
from trainyard.tenancy.names import dag_id_for_tenant

pytestmark = pytest.mark.e2e

TENANT = "globex"
CLIENTS = 8
JOBS_PER_CLIENT = 5
#: A job that trains nothing: the test is about the control plane, not about learning.
TINY_JOB = {
    "name": "tiny",
    "code": {"uri": EXAMPLE_CODE},
    "command": (
        "python -c \"import os, pathlib; pathlib.Path(os.environ['TRAINYARD_RESULT_DIR'],"
        " 'model.txt').write_text('tiny')\""
    ),
    "checkpoint": {"interval": "10s"},
    "evaluation": None,
}


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[Deployment]:
    """Room for the whole burst to run: the tenant's limits would only queue it."""
    limits = {"max_running_jobs": 16, "cpu_quota": 16}
    with deploy(tmp_path_factory.mktemp("burst"), s3_server, {TENANT: limits}) as deployed:
        yield deployed


@dataclass
class Share:
    """What one client's submissions came to: the job ids it was given, and its failures."""

    job_ids: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def submit_with_cli(deployment: Deployment, manifest: Path) -> Share:
    """JOBS_PER_CLIENT `trainyard submit` processes, one after the other."""
    share = Share()
    for _ in range(JOBS_PER_CLIENT):
        submitted = deployment.cluster.trainyard("submit", str(manifest), check=False)
        if submitted.returncode == 0:
            share.job_ids.append(submitted.stdout.split()[0])
        else:
            share.failures.append(submitted.stderr)
    return share


def submit_with_rest(deployment: Deployment, manifest: dict[str, Any]) -> Share:
    """JOBS_PER_CLIENT triggers through the REST API, each with a fresh job id."""
    share = Share()
    with AirflowClient(ApiSettings.from_env(deployment.cluster.env)) as api:
        for _ in range(JOBS_PER_CLIENT):
            job_id = new_job_id(TENANT, str(manifest["name"]))
            try:
                api.trigger_run(dag_id_for_tenant(TENANT), job_id, {"manifest": manifest})
            except (ApiError, httpx.HTTPError) as error:
                share.failures.append(f"{job_id}: {error}")
            else:
                share.job_ids.append(job_id)
    return share


def test_a_burst_from_eight_clients_loses_and_duplicates_nothing(
    deployment: Deployment, client: AirflowClient
) -> None:
    manifest_file = deployment.write_manifest(TENANT, "tiny.yaml", **TINY_JOB)
    manifest = yaml.safe_load(manifest_file.read_text())

    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [
            pool.submit(submit_with_cli, deployment, manifest_file)
            if index % 2
            else pool.submit(submit_with_rest, deployment, manifest)
            for index in range(CLIENTS)
        ]
        shares = [future.result() for future in futures]

    job_ids = [job_id for share in shares for job_id in share.job_ids]
    runs = client.list_runs(dag_id_for_tenant(TENANT), limit=4 * CLIENTS * JOBS_PER_CLIENT)
    assert [failure for share in shares for failure in share.failures] == []
    # Exactly the runs the clients were told of: none lost, none from a retried trigger.
    assert sorted(run["dag_run_id"] for run in runs) == sorted(job_ids)
    assert len(set(job_ids)) == CLIENTS * JOBS_PER_CLIENT
    listed = deployment.cluster.trainyard("list", "--tenant", TENANT).stdout
    assert [job_id for job_id in job_ids if job_id not in listed] == []
    store = deployment.stores[TENANT]
    ends = {job_id: wait_for_end(client, store, job_id, timeout=900) for job_id in job_ids}
    assert {job_id: end.failure for job_id, end in ends.items() if end.failure} == {}
    assert {end.state for end in ends.values()} == {JobState.SUCCEEDED}
