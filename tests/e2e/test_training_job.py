"""The digits example, submitted with the CLI, trains through real Airflow to an evaluated model.

One Airflow serves two tenants: `acme` on S3 (moto's server, as MinIO in production) and
`globex` on a local directory (the embedded default), so both storage backends run the same
job through the same DAG at the same time. A third tenant, `initech`, runs its learners on the
test-only `bare` backend: the same DAG on another backend. Airflow's OpenLineage provider posts
the runs' lineage to a local receiver.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.deployment import BARE_TENANT, TENANTS, Deployment, deploy
from devkit.learners import wait_until
from devkit.s3_server import S3Server
from tests.support.lineage_receiver import LineageReceiver, running_lineage_receiver
from trainyard.cli.client import AirflowClient, ApiError
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JobLayout, job_id_for_run
from trainyard.jobs.records import JobState, load_record
from trainyard.manifest.submission import example_manifest

pytestmark = pytest.mark.e2e

TRAIN_COMMAND = "python train.py --epochs 60"


@pytest.fixture(scope="module")
def lineage() -> Iterator[LineageReceiver]:
    with running_lineage_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server, lineage: LineageReceiver
) -> Iterator[Deployment]:
    """The e2e deployment, with Airflow's OpenLineage provider posting to `lineage`."""
    settings = {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": lineage.transport(),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "trainyard-e2e",
    }
    with deploy(tmp_path_factory.mktemp("deployment"), s3_server, airflow_env=settings) as deployed:
        yield deployed


@pytest.fixture(scope="module")
def jobs(deployment: Deployment) -> dict[str, str]:
    """Tenant -> job id of a digits run submitted with `trainyard submit --wait`, both at
    once."""
    submissions = {}
    for tenant in TENANTS:
        manifest = deployment.write_manifest(
            tenant,
            f"job-{tenant}.yaml",
            command=TRAIN_COMMAND,
            checkpoint={"interval": "0.5s"},  # several checkpoints commit
        )
        submissions[tenant] = subprocess.Popen(
            [str(Path(sys.executable).parent / "trainyard"), "submit", str(manifest), "--wait"],
            env=deployment.cluster.env,
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


@pytest.mark.parametrize("tenant", TENANTS)
def test_job_reaches_accuracy_with_model_and_checkpoints(
    deployment: Deployment, jobs: dict[str, str], tenant: str
) -> None:
    store, job_id = deployment.stores[tenant], jobs[tenant]
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
def test_the_run_emits_its_lineage_to_the_operators_catalog(
    deployment: Deployment, jobs: dict[str, str], lineage: LineageReceiver, tenant: str
) -> None:
    """The register task's OpenLineage COMPLETE event: the dataset snapshot in (its digest as
    the version), the job's model version out."""
    record = load_record(deployment.stores[tenant], jobs[tenant])
    assert record is not None
    assert record.model_version is not None

    def registered() -> dict[str, Any] | None:
        for event in lineage.events():
            outputs = event.get("outputs") or []
            versions = [o.get("facets", {}).get("version", {}) for o in outputs]
            if (
                event.get("eventType") == "COMPLETE"
                and any(v.get("datasetVersion") == f"v{record.model_version}" for v in versions)
                and event["run"]["facets"].get("airflow", {}).get("dagRun", {}).get("run_id")
                == record.dag_run_id
            ):
                return event
        return None

    event = wait_until(registered, f"the lineage event of {jobs[tenant]}", timeout=120)
    assert event["job"]["name"].endswith("register_model")
    [dataset] = event["inputs"]
    assert dataset["name"].endswith("datasets/digits")
    assert dataset["facets"]["version"]["datasetVersion"] == record.data_digest
    [model] = event["outputs"]
    assert model["name"].endswith("models/digits-mlp")
    expected = "s3://" if tenant == "acme" else "file"
    assert dataset["namespace"].startswith(expected)
    assert model["namespace"].startswith(expected)


@pytest.mark.parametrize("tenant", TENANTS)
def test_cli_reports_status_metrics_and_logs(
    deployment: Deployment, jobs: dict[str, str], tenant: str, tmp_path: Path
) -> None:
    cluster, job_id = deployment.cluster, jobs[tenant]
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


def test_a_job_on_a_third_backend_trains_through_airflow(deployment: Deployment) -> None:
    """The proof of the seam: on the bare backend (one module behind `backend_for`), the
    digits example goes through the same DAG to an evaluated, registered model."""
    manifest = deployment.write_manifest(BARE_TENANT, "job-bare.yaml", command=TRAIN_COMMAND)

    submitted = deployment.cluster.trainyard("submit", str(manifest), "--wait")

    job_id = submitted.stdout.split()[0]
    store, layout = deployment.stores[BARE_TENANT], JobLayout(job_id)
    record = load_record(store, job_id)
    assert record is not None
    assert record.state is JobState.SUCCEEDED
    assert record.evaluation is not None
    assert record.evaluation["accuracy"] >= 0.95
    assert record.model_version == 1
    assert store.get_bytes(f"{layout.results}/model.pt")
    logs = deployment.cluster.trainyard("logs", job_id).stdout
    # Training, then the evaluation (the learner task in evaluate mode), both on it.
    assert logs.count("on the bare backend") == 2, logs
    assert "held-out digits" in logs.split("=== evaluate (try 1) ===")[1]


def wait_for_run(client: AirflowClient, dag_id: str, run_id: str) -> str:
    deadline = time.monotonic() + 300
    while (state := client.get_run(dag_id, run_id)["state"]) not in ("success", "failed"):
        assert time.monotonic() < deadline, f"{run_id} still {state}"
        time.sleep(2)
    return str(state)


def test_plain_rest_triggers_use_the_form_defaults_and_reject_bad_manifests(
    deployment: Deployment, client: AirflowClient
) -> None:
    """A UI/REST trigger without a job id: the form's default manifest trains, a bad one fails."""
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


def test_rest_triggers_with_non_mapping_manifests_and_overrides_fail_as_user_errors(
    deployment: Deployment, client: AirflowClient
) -> None:
    """A manifest that is no mapping is refused at the trigger (the form's schema says object);
    an override into a field that is no mapping fails validate once, with the message in the
    task log, the job record and `trainyard status`, and no exception chain of ours."""
    with pytest.raises(ApiError) as refused:
        client.trigger_run("trainyard_globex", "manifest-false", {"manifest": False})
    assert refused.value.status_code == 400
    assert "manifest" in str(refused.value)

    conf = {"manifest": example_manifest("globex") | {"resources": 1}, "gpus": 1}
    run_id = client.trigger_run("trainyard_globex", "override-into-int", conf)["dag_run_id"]

    assert wait_for_run(client, "trainyard_globex", run_id) == "failed"
    tasks = {ti["task_id"]: ti for ti in client.task_instances("trainyard_globex", run_id)}
    assert tasks["validate"]["state"] == "failed"
    assert tasks["validate"]["try_number"] == 1
    expected = "resources: is 1 (of type int), so the trigger form's gpus cannot set resources.gpus"
    log = client.request(
        "GET",
        f"/dags/trainyard_globex/dagRuns/{run_id}/taskInstances/validate/logs/1",
        params={"full_content": "true"},
        headers={"Accept": "application/json"},
    )["content"]
    failures = [error for event in log for error in event.get("error_detail") or []]
    assert [error["exc_type"] for error in failures] == ["AirflowFailException"]
    assert expected in failures[0]["exc_value"]
    assert not any("trainyard/" in frame["filename"] for frame in failures[0]["frames"])

    job_id = job_id_for_run("globex", "digits-mlp", run_id)
    status = json.loads(deployment.cluster.trainyard("status", job_id, "--json").stdout)
    assert status["state"] == "failed"
    assert status["failure"]["failure_class"] == "user_error"
    assert status["failure"]["task"] == "validate"
    assert expected in status["failure"]["message"]
