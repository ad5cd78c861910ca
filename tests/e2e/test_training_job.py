"""The digits example, submitted with the CLI, trains through real Airflow to an evaluated model.

One Airflow serves two tenants: `acme` on S3 (moto's server, as MinIO in production) and
`globex` on a local directory (the embedded default), so both storage backends run the same
job through the same DAG at the same time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.airflow import AirflowCluster, running_airflow
from tests.support.s3_server import S3Server
from trainyard.airflow_env import REPO_ROOT, wait_for_dags
from trainyard.checkpoints import CheckpointStore
from trainyard.client import AirflowClient, ApiSettings
from trainyard.config import load_config
from trainyard.jobs import JobLayout, job_id_for_run
from trainyard.records import JobState, load_record
from trainyard.storage import ObjectStore, open_store
from trainyard.storage.s3 import S3Store
from trainyard.submission import example_manifest

pytestmark = pytest.mark.e2e

EXAMPLE = REPO_ROOT / "examples" / "pytorch-digits"
TENANTS = ("acme", "globex")
S3_CREDENTIALS_ENV = "TRAINYARD_S3_ACME"
TRAIN_COMMAND = "python train.py --epochs 60"
EXAMPLE_CODE = "examples/pytorch-digits"  # where the trigger form's default manifest looks


@dataclass
class Deployment:
    cluster: AirflowCluster
    stores: dict[str, ObjectStore]
    jobs: dict[str, str]  # tenant -> job id of its digits run


def write_config(root: Path, s3_server: S3Server) -> Path:
    acme_storage = s3_server.config("acme-e2e").model_dump(mode="json")
    acme_storage["credentials_env"] = S3_CREDENTIALS_ENV
    config_file = root / "trainyard.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "learner_backend": "local",
                "work_dir": str(root / "work"),
                "tenants": [
                    {"name": "acme", "storage": acme_storage},
                    {"name": "globex", "storage": {"kind": "local", "root": str(root / "globex")}},
                ],
            }
        )
    )
    return config_file


def write_manifest(root: Path, tenant: str) -> Path:
    """The example's manifest for `tenant`, training long enough for several checkpoints."""
    manifest = yaml.safe_load((EXAMPLE / "job.yaml").read_text())
    manifest.update(tenant=tenant, code={"path": str(EXAMPLE)}, command=TRAIN_COMMAND)
    manifest["checkpoint"]["interval"] = "0.5s"
    path = root / f"job-{tenant}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deployment")
    config_file = write_config(root, s3_server)
    credentials = s3_server.env(S3_CREDENTIALS_ENV)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in credentials.items():
            patch.setenv(name, value)
        config = load_config(config_file)
        stores = {tenant: open_store(config.tenant(tenant).storage) for tenant in TENANTS}
        acme_store = stores["acme"]
        assert isinstance(acme_store, S3Store)
        acme_store.ensure_bucket()
        with running_airflow(root / "airflow", config_file, credentials) as cluster:
            dataset = root / "digits"
            subprocess.run(
                [sys.executable, str(EXAMPLE / "make_dataset.py"), "--out", str(dataset)],
                check=True,
            )
            for tenant in TENANTS:
                cluster.trainyard(
                    "data", "upload", str(dataset), "datasets/digits", "--tenant", tenant
                )
                cluster.trainyard("data", "upload", str(EXAMPLE), EXAMPLE_CODE, "--tenant", tenant)
            wait_for_dags(cluster.env, [f"trainyard_{tenant}" for tenant in TENANTS])
            submissions = {
                tenant: subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "trainyard"),
                        "submit",
                        str(write_manifest(root, tenant)),
                        "--wait",
                    ],
                    env=cluster.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for tenant in TENANTS
            }
            jobs = {}
            for tenant, process in submissions.items():
                stdout, stderr = process.communicate(timeout=600)
                assert process.returncode == 0, f"{tenant} job failed:\n{stdout}\n{stderr}"
                jobs[tenant] = stdout.split()[0]
            yield Deployment(cluster, stores, jobs)


@pytest.mark.parametrize("tenant", TENANTS)
def test_job_reaches_accuracy_with_model_and_checkpoints(
    deployment: Deployment, tenant: str
) -> None:
    store, job_id = deployment.stores[tenant], deployment.jobs[tenant]
    layout = JobLayout(job_id)
    record = load_record(store, job_id)
    assert record is not None
    assert record.state is JobState.SUCCEEDED
    assert record.evaluation is not None
    assert record.evaluation["accuracy"] >= 0.95
    assert store.get_json(layout.evaluation)["metrics"]["accuracy"] >= 0.95
    result_files = {
        info.key.removeprefix(layout.results + "/") for info in store.list(layout.results)
    }
    assert "model.pt" in result_files
    assert len(CheckpointStore(store, layout).committed_steps()) >= 2


@pytest.mark.parametrize("tenant", TENANTS)
def test_cli_reports_status_metrics_and_logs(
    deployment: Deployment, tenant: str, tmp_path: Path
) -> None:
    cluster, job_id = deployment.cluster, deployment.jobs[tenant]
    status = json.loads(cluster.trainyard("status", job_id, "--json").stdout)
    assert status["state"] == "succeeded"
    assert status["attempt"] == 1
    assert status["progress"] == 1.0

    rows = [
        json.loads(line)
        for line in cluster.trainyard("metrics", job_id, "--json").stdout.splitlines()
    ]
    assert rows, "no metric rows"
    steps = [row["step"] for row in rows if "step" in row]
    assert steps == sorted(steps)
    assert steps[-1] > 0
    assert all(row["attempt"] == 1 for row in rows)

    logs = cluster.trainyard("logs", job_id).stdout
    assert "=== learner (try 1) ===" in logs
    assert "epoch 59 done" in logs  # the training script's own output reached the task log
    assert "held-out accuracy" in logs

    cluster.trainyard("download", job_id, str(tmp_path / "model"))
    assert (tmp_path / "model" / "model.pt").stat().st_size > 0

    listing = cluster.trainyard("list", "--tenant", tenant).stdout
    assert job_id in listing


def wait_for_run(client: AirflowClient, dag_id: str, run_id: str) -> str:
    deadline = time.monotonic() + 300
    while (state := client.get_run(dag_id, run_id)["state"]) not in ("success", "failed"):
        assert time.monotonic() < deadline, f"{run_id} still {state}"
        time.sleep(2)
    return str(state)


def test_plain_rest_triggers_use_the_form_defaults_and_reject_bad_manifests(
    deployment: Deployment,
) -> None:
    """A UI/REST trigger without a job id: the form's default manifest trains, a bad one fails."""
    client = AirflowClient(ApiSettings.from_env(deployment.cluster.env))
    bad = example_manifest("globex")
    bad["resources"]["memory"] = "lots"
    good_run = client.trigger_run("trainyard_globex", "form-defaults", {})["dag_run_id"]
    bad_run = client.trigger_run("trainyard_globex", "bad-memory", {"manifest": bad})["dag_run_id"]

    assert wait_for_run(client, "trainyard_globex", bad_run) == "failed"
    tasks = {ti["task_id"]: ti for ti in client.task_instances("trainyard_globex", bad_run)}
    assert tasks["validate"]["state"] == "failed"
    assert tasks["validate"]["try_number"] == 1  # a user error is not retried
    log = "\n".join(client.task_log("trainyard_globex", bad_run, "validate", 1))
    assert "resources.memory" in log
    assert "2Gi" in log  # the error says what is allowed

    assert wait_for_run(client, "trainyard_globex", good_run) == "success"
    job_id = job_id_for_run("globex", "digits-mlp", good_run)
    status = json.loads(deployment.cluster.trainyard("status", job_id, "--json").stdout)
    assert status["state"] == "succeeded"
    assert status["dag_run_id"] == good_run
    assert status["evaluation"]["accuracy"] >= 0.95
