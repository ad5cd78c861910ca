"""The DAG factory: one DAG per tenant and per scheduled job; a broken manifest fails alone."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast
from unittest import mock

import pendulum
import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import Asset, AssetAll, Context, CronTriggerTimetable
from airflow.sdk.exceptions import AirflowFailException, ParamValidationError
from airflow.serialization.decoders import decode_timetable
from airflow.serialization.encoders import encode_timetable
from airflow.timetables import trigger
from airflow.timetables.base import TimeRestriction

from devkit.airflow_env import REPO_ROOT
from operators.dag_factory import tenant_dags
from operators.tasks.submit import SubmitJobOperator
from trainyard.backends import RunMode
from trainyard.jobs.tasks import TRAINING_TASKS
from trainyard.tenancy.config import CONFIG_ENV, load_config
from trainyard.tenancy.names import dag_id_for_tenant

JOB: dict[str, Any] = {
    "name": "nightly",
    "tenant": "acme",
    "framework": {"name": "pytorch", "version": "2.13"},
    "code": {"uri": "examples/pytorch-digits"},
    "command": "python train.py",
    "schedule": "0 3 * * *",
}


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = {
        "work_dir": "work",
        "jobs_dir": "jobs",
        "tenants": [
            {"name": "acme", "storage": {"kind": "local", "root": "storage/acme"}},
            {"name": "globex", "storage": {"kind": "local", "root": "storage/globex"}},
        ],
    }
    jobs = {
        "acme/nightly.yaml": JOB,
        "acme/on-data.yaml": {**JOB, "name": "on-data", "schedule": {"on_new_data": "inbox"}},
        "acme/broken.yaml": {**JOB, "name": "broken", "schedule": "every day"},
        "globex/stray.yaml": {**JOB, "name": "stray"},  # names tenant acme in globex's folder
        "acme/my job!.yaml": "schedule: [",  # a file name Airflow takes no DAG id from
    }
    for name, manifest in jobs.items():
        (tmp_path / "jobs" / name).parent.mkdir(parents=True, exist_ok=True)
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        (tmp_path / "jobs" / name).write_text(text)
    path = tmp_path / "trainyard.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(path))
    return path


def test_each_scheduled_manifest_is_its_own_dag(config_file: Path) -> None:
    dags = tenant_dags(load_config(config_file))

    nightly = dags["trainyard_acme__nightly"]
    assert isinstance(nightly.timetable, CronTriggerTimetable)
    assert nightly.timetable.expression == "0 3 * * *"
    assert nightly.params["manifest"]["name"] == "nightly"
    assert nightly.max_active_runs == 1  # a retraining never overlaps itself
    # Its job runs in the tenant's DAG, under the tenant's limit on running jobs.
    [submit] = nightly.tasks
    assert isinstance(submit, SubmitJobOperator)
    assert submit.trigger_dag_id == "trainyard_acme"
    on_data = dags["trainyard_acme__on_data"].timetable.asset_condition
    assert isinstance(on_data, AssetAll)
    assert list(on_data.objects) == [Asset(name="acme:inbox", uri="trainyard://acme/inbox")]
    assert {"trainyard_acme", "trainyard_globex"} <= set(dags)


@pytest.mark.parametrize(
    ("now", "first_run"),
    [
        pytest.param("2026-11-25T03:15:00", "2026-11-26T03:00:00", id="just-after-a-slot"),
        pytest.param("2026-11-25T02:59:00", "2026-11-25T03:00:00", id="just-before-a-slot"),
    ],
)
def test_a_new_cron_job_waits_for_its_next_slot(
    config_file: Path, now: str, first_run: str
) -> None:
    """A nightly job added at 03:15 runs first the next night, not at once for 03:00."""
    dag = tenant_dags(load_config(config_file))["trainyard_acme__nightly"]
    # The scheduler's side of the timetable, as it reads it from the serialized DAG.
    timetable = decode_timetable(encode_timetable(dag.timetable))

    with mock.patch.object(trigger, "utcnow", return_value=pendulum.parse(now)):
        info = timetable.next_dagrun_info(
            last_automated_data_interval=None,
            restriction=TimeRestriction(earliest=None, latest=None, catchup=False),
        )

    assert info is not None
    assert info.run_after == pendulum.parse(first_run)


@pytest.mark.parametrize(
    ("dag_id", "field"),
    [
        pytest.param("trainyard_acme__broken", "schedule", id="bad-cron"),
        pytest.param("trainyard_globex__stray", "tenant", id="wrong-tenant-folder"),
        pytest.param("trainyard_acme__my_job_", "my job!.yaml", id="odd-file-name"),
    ],
)
def test_a_broken_manifest_gets_a_dag_that_names_the_field(
    config_file: Path, dag_id: str, field: str
) -> None:
    dag = tenant_dags(load_config(config_file))[dag_id]

    assert "invalid" in dag.tags
    assert f"{field}:" in (dag.description or "")
    [task] = dag.tasks
    with pytest.raises(AirflowFailException, match=field):
        task.execute(context=cast(Context, {}))  # type: ignore[union-attr]


def test_the_dag_file_loads_without_import_errors_despite_broken_manifests(
    config_file: Path,
) -> None:
    bag = DagBag(dag_folder=REPO_ROOT / "dags")

    assert bag.import_errors == {}
    assert {"trainyard_acme", "trainyard_acme__nightly", "trainyard_acme__broken"} <= set(
        bag.dag_ids
    )


@pytest.mark.parametrize(
    ("only", "expected"),
    [
        pytest.param("trainyard_acme", {"trainyard_acme"}, id="a-tenants-dag"),
        pytest.param("trainyard_acme.sweeps", {"trainyard_acme.sweeps"}, id="a-sweeps-dag"),
        pytest.param(
            "trainyard_acme__nightly",
            {
                "trainyard_acme",
                "trainyard_acme__nightly",
                "trainyard_acme__on_data",
                "trainyard_acme__broken",
                "trainyard_acme__my_job_",
            },
            id="a-scheduled-jobs-dag",
        ),
    ],
)
def test_a_task_process_builds_only_what_its_dag_needs(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, only: str, expected: set[str]
) -> None:
    """A task parses the DAG file with Airflow's parsing context naming its DAG."""
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", only)

    bag = DagBag(dag_folder=REPO_ROOT / "dags")

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == expected
    assert set(tenant_dags(load_config(config_file))) > expected  # the DAG processor's view


def test_the_training_tasks_are_the_tenant_dags_tasks_in_run_order(config_file: Path) -> None:
    """`trainyard logs` walks TRAINING_TASKS: it must hold every task, upstream first."""
    dag = tenant_dags(load_config(config_file))[dag_id_for_tenant("acme")]

    assert [task.task_id for task in dag.topological_sort()] == list(TRAINING_TASKS)


def test_learner_and_evaluate_run_on_the_tenants_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A per-tenant override picks the Kubernetes tasks; the DAG keeps its shape."""
    s3 = {"kind": "s3", "endpoint": "minio:9000", "bucket": "b", "credentials_env": "S3"}
    config = {
        "learner_backend": "local",
        "work_dir": "work",
        "tenants": [
            {"name": "acme", "storage": s3, "learner_backend": "kubernetes"},
            {"name": "globex", "storage": {"kind": "local", "root": "storage/globex"}},
        ],
        "kubernetes": {"images": {"pytorch:2.13": "registry.example/pytorch:2.13"}},
    }
    path = tmp_path / "trainyard.yaml"
    path.write_text(yaml.safe_dump(config))

    dags = tenant_dags(load_config(path))

    kinds = {
        dag_id: {task_id: type(dag.get_task(task_id)).__name__ for task_id in dag.task_ids}
        for dag_id, dag in dags.items()
    }
    assert kinds["trainyard_acme"]["learner"] == "KubernetesLearnerOperator"
    assert kinds["trainyard_acme"]["evaluate"] == "KubernetesLearnerOperator"
    assert kinds["trainyard_globex"]["learner"] == "LearnerOperator"
    assert kinds["trainyard_globex"]["evaluate"] == "LearnerOperator"
    # Evaluation is the learner task in evaluate mode, on either backend.
    for dag_id in ("trainyard_acme", "trainyard_globex"):
        tasks = {task: dags[dag_id].get_task(task) for task in ("learner", "evaluate")}
        modes = {name: getattr(task, "mode", None) for name, task in tasks.items()}
        assert modes == {"learner": RunMode.TRAIN, "evaluate": RunMode.EVALUATE}
    assert dags["trainyard_acme"].task_ids == dags["trainyard_globex"].task_ids
    learner = dags["trainyard_acme"].get_task("learner")
    assert learner.retries == dags["trainyard_globex"].get_task("learner").retries


@pytest.mark.parametrize(
    "manifest",
    [pytest.param(False, id="false"), pytest.param([JOB], id="list"), pytest.param(3, id="number")],
)
def test_the_trigger_refuses_a_manifest_that_is_no_mapping_naming_manifest(
    config_file: Path, manifest: object
) -> None:
    """What the REST API checks before it creates a run: such a run never reaches validate."""
    params = copy.deepcopy(tenant_dags(load_config(config_file))["trainyard_acme"].params)
    with pytest.raises(ParamValidationError, match="Invalid input for param manifest: "):
        params.update({"manifest": manifest})  # each Param checks the value it is given
