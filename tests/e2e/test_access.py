"""Tenants see and act on their own jobs only: real Airflow with the FAB auth manager.

Two tenants (acme on S3, globex on a local directory); alice holds acme's role, bob globex's,
ops the platform-admin role (the FAB admin deployed it). alice and bob each run one short job;
then every door is tried both ways, alice on globex's objects (refused) and on acme's (served):
the REST API (DAGs, runs, task instances, logs, XComs), every CLI command that reads or acts on
a job, and the Trainyard plugin's routes. `trainyard tenants sync` is run twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.airflow_env import create_user
from devkit.deployment import Deployment, deploy
from devkit.s3_server import S3Server
from tests.support.users import ALICE, BOB, OPS, token
from trainyard.cli.client import AirflowClient, ApiError, ApiSettings
from trainyard.jobs.layout import JobLayout
from trainyard.tenancy.config import load_config
from trainyard.tenancy.names import (
    PLATFORM_ADMIN_ROLE,
    dag_id_for_sweeps,
    dag_id_for_tenant,
    storage_connection_id,
    tenant_pools,
    tenant_role,
)

pytestmark = pytest.mark.e2e

OWN, OTHER = "acme", "globex"  # from alice's point of view
JOB_NAME = "digits-mlp"  # the example manifest's name


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[Deployment]:
    with deploy(tmp_path_factory.mktemp("access"), s3_server, auth_manager="fab") as deployed:
        env = deployed.cluster.env
        create_user(env, *ALICE, tenant_role(OWN))
        create_user(env, *BOB, tenant_role(OTHER))
        create_user(env, *OPS, PLATFORM_ADMIN_ROLE)
        yield deployed


@pytest.fixture(scope="module")
def jobs(deployment: Deployment) -> dict[str, str]:
    """Tenant -> job id of a short digits run its own user submitted (both at once)."""
    submissions = {}
    for tenant, (username, password) in ((OWN, ALICE), (OTHER, BOB)):
        manifest = deployment.write_manifest(tenant, f"job-{tenant}.yaml", command=TRAIN)
        submissions[tenant] = subprocess.Popen(
            [str(Path(sys.executable).parent / "trainyard"), "submit", str(manifest), "--wait"],
            env={
                **deployment.cluster.env,
                "TRAINYARD_USERNAME": username,
                "TRAINYARD_PASSWORD": password,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    job_ids = {}
    for tenant, process in submissions.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, f"{tenant} job failed:\n{stdout}\n{stderr}"
        job_ids[tenant] = stdout.split()[0]
    return job_ids


TRAIN = "python train.py --epochs 8"


def api(deployment: Deployment, user: tuple[str, str]) -> AirflowClient:
    url = deployment.cluster.api_url
    return AirflowClient(ApiSettings(url=url, username=user[0], password=user[1]))


@pytest.fixture(scope="module")
def alice(deployment: Deployment) -> Iterator[AirflowClient]:
    client = api(deployment, ALICE)
    yield client
    client.close()


# The REST API


def trigger_body() -> dict[str, Any]:
    # A manifest that fails validation at once: the run exists, and costs one short task.
    return {
        "dag_run_id": f"access-check-{uuid.uuid4().hex[:8]}",
        "logical_date": None,
        "conf": {"manifest": {"name": "access-check"}},
    }


RUN = "/dags/{dag}/dagRuns/{run}"
REST_CALLS = [
    pytest.param("GET", "/dags/{dag}", id="dag-get"),
    pytest.param("POST", "/dags/{dag}/dagRuns", id="trigger-run"),
    pytest.param("GET", "/dags/{dag}/dagRuns", id="runs-list"),
    pytest.param("GET", RUN, id="run-get"),
    pytest.param("GET", RUN + "/taskInstances", id="task-instances-list"),
    pytest.param("GET", RUN + "/taskInstances/learner", id="task-instance-get"),
    pytest.param("GET", RUN + "/taskInstances/learner/logs/1", id="task-log"),
    pytest.param("GET", RUN + "/taskInstances/validate/xcomEntries", id="xcom-list"),
    pytest.param("GET", RUN + "/taskInstances/validate/xcomEntries/return_value", id="xcom-get"),
]


@pytest.mark.parametrize(("method", "path"), REST_CALLS)
def test_rest_api_refuses_another_tenants_dag_and_serves_ones_own(
    alice: AirflowClient, jobs: dict[str, str], method: str, path: str
) -> None:
    def call(tenant: str) -> Any:
        body = trigger_body() if method == "POST" else None
        url = path.format(dag=f"trainyard_{tenant}", run=jobs[tenant])
        return alice.request(method, url, headers={"Accept": "application/json"}, json=body)

    with pytest.raises(ApiError) as refused:
        call(OTHER)
    assert refused.value.status_code in (403, 404)

    assert call(OWN) is not None


def test_listings_across_dags_show_only_ones_own_tenant(
    alice: AirflowClient, jobs: dict[str, str]
) -> None:
    own = {dag_id_for_tenant(OWN), dag_id_for_sweeps(OWN)}  # its jobs' DAG and its sweeps'
    dags = alice.request("GET", "/dags")["dags"]
    assert {dag["dag_id"] for dag in dags} == own
    runs = alice.request("GET", "/dags/~/dagRuns")["dag_runs"]
    assert jobs[OWN] in {run["dag_run_id"] for run in runs}
    instances = alice.request("GET", "/dags/~/dagRuns/~/taskInstances")["task_instances"]
    xcoms = alice.request("GET", "/dags/~/dagRuns/~/taskInstances/~/xcomEntries")
    for listing in (runs, instances, xcoms["xcom_entries"]):
        assert listing
        assert {entry["dag_id"] for entry in listing} <= own


def test_another_tenants_run_cannot_be_cancelled_over_rest(
    deployment: Deployment, alice: AirflowClient, jobs: dict[str, str]
) -> None:
    with pytest.raises(ApiError) as refused:
        alice.set_run_state(f"trainyard_{OTHER}", jobs[OTHER], "failed")
    assert refused.value.status_code == 403
    with api(deployment, BOB) as bob:
        assert bob.get_run(f"trainyard_{OTHER}", jobs[OTHER])["state"] == "success"


def test_platform_admin_sees_every_tenants_runs_logs_and_jobs(
    deployment: Deployment, jobs: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {token(deployment, OPS)}"}
    with api(deployment, OPS) as ops:
        for tenant, job_id in jobs.items():
            dag_id = f"trainyard_{tenant}"
            assert ops.get_run(dag_id, job_id)["state"] == "success"
            assert ops.task_log(dag_id, job_id, "learner", 1)
            response = httpx.get(
                f"{deployment.cluster.api_url}/trainyard/api/tenants/{tenant}/jobs",
                headers=headers,
            )
            assert response.status_code == 200
            assert job_id in {job["job_id"] for job in response.json()["jobs"]}


def test_logs_and_xcoms_carry_no_storage_credential(
    alice: AirflowClient, jobs: dict[str, str], s3_server: S3Server
) -> None:
    dag_id, run_id = f"trainyard_{OWN}", jobs[OWN]
    texts = []
    for instance in alice.task_instances(dag_id, run_id):
        for try_number in range(1, int(instance["try_number"]) + 1):
            texts.extend(alice.task_log(dag_id, run_id, instance["task_id"], try_number))
    run_path = RUN.format(dag=dag_id, run=run_id)
    entries = alice.request("GET", f"{run_path}/taskInstances/~/xcomEntries")["xcom_entries"]
    assert entries
    for entry in entries:
        path = f"{run_path}/taskInstances/{entry['task_id']}/xcomEntries/{entry['key']}"
        texts.append(
            json.dumps(alice.request("GET", path, params={"map_index": entry["map_index"]}))
        )
    texts.append(run_id)
    assert any("accuracy" in text for text in texts), "the logs are there"
    for text in texts:
        assert s3_server.secret_key not in text


# The CLI


def cli(
    deployment: Deployment, user: tuple[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return deployment.cluster.trainyard(*args, check=False, user=user)


CLI_CALLS = [
    pytest.param(("status", "{job}"), id="status"),
    pytest.param(("logs", "{job}"), id="logs"),
    pytest.param(("metrics", "{job}"), id="metrics"),
    pytest.param(("download", "{job}", "{dest}"), id="download"),
    pytest.param(("list", "--tenant", "{tenant}"), id="list"),
    pytest.param(("models", "list", JOB_NAME, "--tenant", "{tenant}"), id="models-list"),
    pytest.param(("models", "show", JOB_NAME, "--tenant", "{tenant}"), id="models-show"),
    pytest.param(
        ("models", "promote", JOB_NAME, "1", "--tenant", "{tenant}", "--reason", "check"),
        id="models-promote",
    ),
    pytest.param(
        ("data", "upload", "{dataset}", "datasets/access-check", "--tenant", "{tenant}"),
        id="data-upload",
    ),
]


@pytest.mark.parametrize("args", CLI_CALLS)
def test_cli_refuses_another_tenants_jobs_and_serves_ones_own(
    deployment: Deployment, jobs: dict[str, str], tmp_path: Path, args: tuple[str, ...]
) -> None:
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "train.csv").write_text("pixel0,label\n0,1\n")
    other_store = deployment.stores[OTHER]
    before = sorted(info.key for info in other_store.list())

    def run(tenant: str) -> subprocess.CompletedProcess[str]:
        paths = {"job": jobs[tenant], "tenant": tenant, "dataset": str(dataset)}
        paths["dest"] = str(tmp_path / f"model-{tenant}")
        return cli(deployment, ALICE, *(arg.format(**paths) for arg in args))

    refused = run(OTHER)
    assert refused.returncode != 0, refused.stdout
    assert f"access denied: user 'alice' may not use tenant '{OTHER}'" in refused.stderr
    assert sorted(info.key for info in other_store.list()) == before, "nothing was written"
    assert not (tmp_path / f"model-{OTHER}").exists()
    assert jobs[OTHER] not in refused.stdout

    served = run(OWN)
    assert served.returncode == 0, served.stderr


def test_cli_downloads_and_lists_only_ones_own(
    deployment: Deployment, jobs: dict[str, str], tmp_path: Path
) -> None:
    cli(deployment, ALICE, "download", jobs[OWN], str(tmp_path / "model"))
    assert (tmp_path / "model" / "model.pt").is_file()
    listing = cli(deployment, ALICE, "list")
    assert listing.returncode == 0, listing.stderr
    assert jobs[OWN] in listing.stdout
    assert jobs[OTHER] not in listing.stdout
    assert OTHER not in listing.stdout


def test_submit_and_cancel_only_within_ones_own_tenant(
    deployment: Deployment, jobs: dict[str, str]
) -> None:
    refused = cli(deployment, ALICE, "submit", str(deployment.root / f"job-{OTHER}.yaml"))
    assert refused.returncode != 0
    assert "access denied" in refused.stderr
    slow = deployment.write_manifest(OWN, "slow.yaml", command="python train.py --epochs 400")
    submitted = cli(deployment, ALICE, "submit", str(slow))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    # The job record, which cancel needs, is written by the validate task.
    wait_for_record(deployment, job_id)

    by_bob = cli(deployment, BOB, "cancel", job_id)
    assert by_bob.returncode != 0
    assert f"access denied: user 'bob' may not use tenant '{OWN}'" in by_bob.stderr
    by_alice = cli(deployment, ALICE, "cancel", job_id)
    assert by_alice.returncode == 0, by_alice.stderr
    assert f"{job_id}: cancelled" in by_alice.stdout


def wait_for_record(deployment: Deployment, job_id: str) -> None:
    store = deployment.stores[OWN]
    deadline = time.monotonic() + 300
    while not store.exists(JobLayout(job_id).record):
        assert time.monotonic() < deadline, f"{job_id} never got a job record"
        time.sleep(1)


# The Trainyard plugin


@pytest.mark.parametrize(
    "route", ["/trainyard/api/tenants/{tenant}/jobs", "/trainyard/tenants/{tenant}/jobs"]
)
def test_plugin_routes_refuse_another_tenant_and_serve_ones_own(
    deployment: Deployment, jobs: dict[str, str], route: str
) -> None:
    url = deployment.cluster.api_url + route
    headers = {"Authorization": f"Bearer {token(deployment, ALICE)}"}

    assert httpx.get(url.format(tenant=OTHER)).status_code == 401
    refused = httpx.get(url.format(tenant=OTHER), headers=headers)
    assert refused.status_code == 403
    assert jobs[OTHER] not in refused.text

    served = httpx.get(url.format(tenant=OWN), headers=headers)
    assert served.status_code == 200
    assert jobs[OWN] in served.text
    assert jobs[OTHER] not in served.text


def test_plugin_lists_a_tenants_jobs_with_their_state(
    deployment: Deployment, jobs: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {token(deployment, ALICE)}"}
    base = deployment.cluster.api_url
    listing = httpx.get(f"{base}/trainyard/api/tenants/{OWN}/jobs", headers=headers).json()
    states = {job["job_id"]: job["state"] for job in listing["jobs"]}
    assert states[jobs[OWN]] == "succeeded"
    # A user of one tenant lands on its job list.
    index = httpx.get(f"{base}/trainyard/", headers=headers, follow_redirects=True)
    assert f"tenants/{OWN}/jobs" in index.text
    assert f"tenants/{OTHER}/jobs" not in index.text


def test_data_events_only_for_ones_own_tenants_assets(deployment: Deployment) -> None:
    base = deployment.cluster.api_url
    headers = {"Authorization": f"Bearer {token(deployment, ALICE)}"}
    # Airflow's own route is closed to tenant roles: an asset event reaches any tenant's DAGs.
    direct = httpx.post(
        f"{base}/api/v2/assets/events", headers=headers, json={"asset_id": 1, "extra": {}}
    )
    assert direct.status_code == 403
    event = {"path": "datasets/digits", "files": 1}
    url = base + "/trainyard/api/tenants/{tenant}/data-events"
    assert httpx.post(url.format(tenant=OTHER), headers=headers, json=event).status_code == 403
    served = httpx.post(url.format(tenant=OWN), headers=headers, json=event)
    assert served.status_code == 200
    assert served.json() == {"assets": []}  # no data-triggered job in this deployment


# tenants sync


def airflow_objects(admin: AirflowClient, deployment: Deployment) -> dict[str, Any]:
    """Roles (with permissions), pools, storage connections and variables, as Airflow has them."""
    config = load_config(Path(deployment.cluster.env["TRAINYARD_CONFIG"]))
    roles = {}
    headers = {"Authorization": f"Bearer {token(deployment, ('admin', 'admin'))}"}
    for name in [PLATFORM_ADMIN_ROLE, *(tenant_role(t.name) for t in config.tenants)]:
        response = httpx.get(
            f"{deployment.cluster.api_url}/auth/fab/v1/roles/{name}", headers=headers
        )
        response.raise_for_status()
        roles[name] = sorted(
            (a["action"]["name"], a["resource"]["name"]) for a in response.json()["actions"]
        )
    pools = {
        pool.name: admin.request("GET", f"/pools/{pool.name}")
        for tenant in config.tenants
        for pool in tenant_pools(tenant)
    }
    connection = admin.request("GET", f"/connections/{storage_connection_id(OWN)}")
    variable = admin.request("GET", "/variables/trainyard_tenants")
    return {"roles": roles, "pools": pools, "connection": connection, "variable": variable}


def sync(deployment: Deployment) -> list[dict[str, str]]:
    result = deployment.cluster.trainyard("tenants", "sync", "--json")
    return list(json.loads(result.stdout))


def test_tenants_sync_repairs_drift_and_a_second_run_changes_nothing(
    deployment: Deployment, s3_server: S3Server
) -> None:
    with api(deployment, ("admin", "admin")) as admin:
        pool = tenant_pools(
            load_config(Path(deployment.cluster.env["TRAINYARD_CONFIG"])).tenant(OWN)
        )[0]
        admin.request(
            "PATCH",
            f"/pools/{pool.name}",
            params={"update_mask": "slots"},
            json={"pool": pool.name, "slots": pool.slots + 7, "include_deferred": False},
        )
        admin.request("DELETE", "/variables/trainyard_tenants")

        first = sync(deployment)
        changed = {
            (c["kind"], c["name"]): c["outcome"] for c in first if c["outcome"] != "unchanged"
        }
        assert changed == {
            ("pool", pool.name): "updated",
            ("variable", "trainyard_tenants"): "created",
        }
        kinds = {(c["kind"], c["name"]) for c in first}
        assert ("role", tenant_role(OWN)) in kinds
        assert ("role", tenant_role(OTHER)) in kinds
        assert ("role", PLATFORM_ADMIN_ROLE) in kinds
        assert ("connection", storage_connection_id(OWN)) in kinds
        assert ("connection", storage_connection_id(OTHER)) not in kinds  # local storage
        assert s3_server.secret_key not in json.dumps(first)
        after_first = airflow_objects(admin, deployment)
        assert after_first["pools"][pool.name]["slots"] == pool.slots
        assert after_first["pools"][pool.name]["include_deferred"] is True  # deferred learners
        assert after_first["connection"]["login"] == s3_server.access_key
        # Tenant roles reach their own DAGs only (granted by the DAGs' access_control).
        own = {resource for _, resource in after_first["roles"][tenant_role(OWN)]}
        assert f"DAG:trainyard_{OWN}" in own
        assert not any(OTHER in resource for resource in own)

        second = sync(deployment)
        assert {c["outcome"] for c in second} == {"unchanged"}
        assert [(c["kind"], c["name"]) for c in second] == [(c["kind"], c["name"]) for c in first]
        assert airflow_objects(admin, deployment) == after_first
