"""The scheduled job's task: it runs the job as a run of the tenant's DAG, once, and waits."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.providers.standard.triggers.external_task import DagStateTrigger
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException, DagRunTriggerException, TaskDeferred
from airflow.serialization.serialized_objects import DagSerialization

from operators.dag_factory import build_tenant_dag
from operators.deployment.admission import task_instance_mutation_hook
from operators.tasks.submit import SubmitJobOperator
from trainyard.backends import backend_for
from trainyard.manifest.submission import example_manifest
from trainyard.tenancy.config import TenantConfig, TrainyardConfig

RUN_ID = "scheduled__2026-11-25T03:00:00+00:00"
JOB_ID = "acme.nightly.scheduled-2026-11-25t03-00-00-00-00"
MANIFEST = example_manifest("acme") | {
    "name": "nightly",
    "schedule": "0 3 * * *",
    "resources": {"gpus": 2, "learners": 2},
}


def context(existing_runs: int = 0, **params: Any) -> Context:
    """A scheduled run's context: its params (the manifest and form overrides), its run, and
    how many runs of the tenant's DAG carry the job's id already."""
    ti = SimpleNamespace(get_dr_count=lambda dag_id, run_ids: existing_runs)
    dag_run = SimpleNamespace(dag_id="trainyard_acme__nightly", run_id=RUN_ID)
    conf = {"manifest": MANIFEST, "command": None, **params}
    return cast(Context, {"params": conf, "dag_run": dag_run, "ti": ti})


def submit(ctx: Context) -> DagRunTriggerException:
    with pytest.raises(DagRunTriggerException) as raised:
        SubmitJobOperator(task_id="submit_job", tenant="acme").execute(ctx)
    return raised.value


def test_the_job_starts_in_the_tenants_dag_with_the_runs_params_as_its_conf() -> None:
    trigger = submit(context(command="python train.py --epochs 1"))

    assert trigger.trigger_dag_id == "trainyard_acme"
    assert trigger.dag_run_id == JOB_ID  # the job id, derived from the scheduled run's id
    assert trigger.conf == {"manifest": MANIFEST, "command": "python train.py --epochs 1"}
    assert (trigger.wait_for_completion, trigger.deferrable) == (True, True)
    assert RUN_ID in str(trigger.note)


def test_a_form_override_of_the_name_names_the_job() -> None:
    assert submit(context(job_name="nightly-rerun")).dag_run_id.startswith("acme.nightly-rerun.")


def test_a_retry_waits_for_the_job_it_started_instead_of_starting_another() -> None:
    operator = SubmitJobOperator(task_id="submit_job", tenant="acme")

    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context(existing_runs=1))

    trigger = deferred.value.trigger
    assert isinstance(trigger, DagStateTrigger)
    assert (trigger.dag_id, trigger.run_ids) == ("trainyard_acme", [JOB_ID])
    assert set(trigger.states) == {"success", "failed"}


def test_an_invalid_manifest_fails_at_once_naming_the_field_and_starts_nothing() -> None:
    with pytest.raises(AirflowFailException, match=r"(?s)\[user_error\].*resources.gpus: "):
        SubmitJobOperator(task_id="submit_job", tenant="acme").execute(context(gpus=-1))


@pytest.mark.parametrize(("state", "fails"), [("success", False), ("failed", True)])
def test_the_task_ends_as_the_job_did(state: str, fails: bool) -> None:
    operator = SubmitJobOperator(task_id="submit_job", tenant="acme")
    event = ("DagStateTrigger", {"run_ids": [JOB_ID], JOB_ID: state})

    if fails:  # without retry: the job's own tasks retried what a retry can fix
        with pytest.raises(AirflowFailException, match=f"trainyard status {JOB_ID}"):
            operator.execute_complete(context(), event)
    else:
        operator.execute_complete(context(), event)


def test_the_scheduled_jobs_learner_takes_its_gpu_share_in_the_tenants_dag() -> None:
    """The conf a scheduled run sends sizes the tenant DAG's learner (admission policy)."""
    conf = submit(context()).conf
    assert conf is not None
    storage = {"kind": "local", "root": "/srv/acme"}
    tenant = TenantConfig.model_validate({"name": "acme", "storage": storage, "gpu_quota": 8})
    backend = backend_for(TrainyardConfig(work_dir=Path("/srv/work"), tenants=[tenant]), "acme")
    dag = DagSerialization.from_dict(DagSerialization.to_dict(build_tenant_dag(tenant, backend)))
    ti = TaskInstance(dag.get_task("learner"), run_id=JOB_ID, dag_version_id=uuid.uuid4())

    task_instance_mutation_hook(ti, DagRun(dag_id=dag.dag_id, run_id=JOB_ID, conf=conf))

    assert (ti.pool, ti.pool_slots) == ("trainyard_acme_gpu", 4)
