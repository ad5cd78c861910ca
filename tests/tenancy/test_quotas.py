"""Quotas: pool slots per job, rejection of jobs over the whole quota, and the admission policy
that sizes each run's learner and evaluation tasks in its tenant's pool."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.sdk import DAG
from airflow.serialization.serialized_objects import DagSerialization

from devkit.airflow_env import LOCAL_SETTINGS
from operators.dag_factory import tenant_dags
from operators.deployment.admission import task_instance_mutation_hook
from trainyard.failures import ResourceError
from trainyard.jobs.layout import RunMode
from trainyard.manifest.schema import Resources
from trainyard.manifest.submission import example_manifest
from trainyard.tenancy.config import TenantConfig, TrainyardConfig
from trainyard.tenancy.names import PoolSpec, learner_pool_tenant, tenant_pools
from trainyard.tenancy.quotas import PoolRequest, check_quota, learner_pool


def tenant(**fields: Any) -> TenantConfig:
    return TenantConfig.model_validate(
        {"name": "acme-labs", "storage": {"kind": "local", "root": "/srv/acme"}, **fields}
    )


@pytest.mark.parametrize(
    ("resources", "training", "evaluation"),
    [
        pytest.param({}, ("cpu", 1), ("cpu", 1), id="cpu-default"),
        pytest.param({"learners": 3}, ("cpu", 3), ("cpu", 1), id="cpu-3"),
        pytest.param({"gpus": 1}, ("gpu", 1), ("gpu", 1), id="one-gpu"),
        pytest.param({"gpus": 2, "learners": 4}, ("gpu", 8), ("gpu", 2), id="2x4-gpus"),
    ],
)
def test_training_takes_gpus_x_learners_gpu_slots_and_evaluation_one_learners_share(
    resources: dict[str, int], training: tuple[str, int], evaluation: tuple[str, int]
) -> None:
    """Evaluation runs one learner with the job's resources: GPUs of the GPU pool too."""
    job = Resources.model_validate(resources)
    for mode, (kind, slots) in ((RunMode.TRAIN, training), (RunMode.EVALUATE, evaluation)):
        expected = PoolRequest(f"trainyard_acme_labs_{kind}", slots)
        assert learner_pool("acme-labs", job, mode) == expected


def test_tenant_pools_are_sized_by_the_quotas() -> None:
    assert tenant_pools(tenant(gpu_quota=8, cpu_quota=3)) == [
        PoolSpec("trainyard_acme_labs_gpu", 8, "GPUs of tenant acme-labs"),
        PoolSpec("trainyard_acme_labs_cpu", 3, "CPU-only learners of tenant acme-labs"),
    ]


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        pytest.param("trainyard_acme_labs_gpu", "acme_labs", id="gpu-pool"),
        pytest.param("trainyard_acme_labs_cpu", "acme_labs", id="cpu-pool"),
        pytest.param("default_pool", None, id="airflows-default"),
        pytest.param("trainyard_acme_labs_io", None, id="not-a-learner-pool"),
    ],
)
def test_the_tenant_of_a_learner_pool(pool: str, expected: str | None) -> None:
    assert learner_pool_tenant(pool) == expected
    if expected is not None:  # the slug gives back the tenant's pools
        slug_pool = learner_pool(expected, Resources(), RunMode.TRAIN)
        assert slug_pool == learner_pool("acme-labs", Resources(), RunMode.TRAIN)


@pytest.mark.parametrize(
    ("quotas", "resources", "field", "fix"),
    [
        pytest.param(
            {"gpu_quota": 4},
            {"gpus": 2, "learners": 3},
            "resources.gpus: the job needs gpus x learners = 2 x 3 = 6 GPUs at once, more than "
            "tenant 'acme-labs''s whole GPU quota of 4",
            "ask for at most 4 GPUs in all",
            id="gpus-times-learners-over-the-gpu-quota",
        ),
        pytest.param(
            {},
            {"gpus": 1},
            "whole GPU quota of 0",
            "raise the tenant's gpu_quota",
            id="gpu-job-of-a-tenant-without-gpus",
        ),
        pytest.param(
            {"cpu_quota": 2},
            {"learners": 3},
            "resources.learners: the job needs 3 CPU learners at once, more than tenant "
            "'acme-labs''s whole CPU quota of 2",
            "use at most 2 learners",
            id="cpu-learners-over-the-cpu-quota",
        ),
    ],
)
def test_a_job_over_the_whole_quota_is_a_resource_error_naming_the_field(
    quotas: dict[str, int], resources: dict[str, int], field: str, fix: str
) -> None:
    with pytest.raises(ResourceError) as raised:
        check_quota(Resources.model_validate(resources), tenant(**quotas))

    assert field in raised.value.cause
    assert fix in raised.value.fix


@pytest.mark.parametrize(
    ("quotas", "resources"),
    [
        pytest.param({"gpu_quota": 4}, {"gpus": 2, "learners": 2}, id="gpus-exactly-the-quota"),
        pytest.param({"cpu_quota": 4}, {"learners": 4}, id="cpu-exactly-the-quota"),
        pytest.param({"cpu_quota": 1}, {"gpus": 1, "learners": 2}, id="gpu-job-ignores-cpu"),
    ],
)
def test_a_job_within_the_quota_passes(quotas: dict[str, int], resources: dict[str, int]) -> None:
    check_quota(Resources.model_validate(resources), tenant(**({"gpu_quota": 4} | quotas)))


@pytest.fixture
def config(tmp_path: Path) -> TrainyardConfig:
    return TrainyardConfig.model_validate(
        {
            "work_dir": str(tmp_path / "work"),
            "tenants": [
                {
                    "name": "acme",
                    "storage": {"kind": "local", "root": str(tmp_path / "acme")},
                    "gpu_quota": 8,
                    "priority": 5,
                    "max_running_jobs": 3,
                }
            ],
        }
    )


def test_the_dag_declares_the_tenants_pool_priority_and_run_limit(
    config: TrainyardConfig,
) -> None:
    dag = tenant_dags(config)["trainyard_acme"]

    # The form's default manifest: a CPU job of one learner.
    for task_id in ("learner", "evaluate"):
        task = dag.get_task(task_id)
        assert (task.pool, task.pool_slots) == ("trainyard_acme_cpu", 1)
    assert {task.priority_weight for task in dag.tasks} == {5}
    assert {str(task.weight_rule) for task in dag.tasks} == {"absolute"}
    assert dag.max_active_runs == 3


def run_task_instance(dag: DAG, conf: dict[str, Any], task_id: str = "learner") -> TaskInstance:
    """A task instance of a run, as the scheduler builds it from the serialized DAG, after the
    admission policy saw it."""
    serialized = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    ti = TaskInstance(serialized.get_task(task_id), run_id="run", dag_version_id=uuid.uuid4())
    task_instance_mutation_hook(ti, DagRun(dag_id=dag.dag_id, run_id="run", conf=conf))
    return ti


GPU_JOB = {"manifest": example_manifest("acme") | {"resources": {"gpus": 2, "learners": 3}}}


@pytest.mark.parametrize(
    ("conf", "learner", "evaluate"),
    [
        pytest.param({}, ("cpu", 1), ("cpu", 1), id="form-defaults"),
        pytest.param(GPU_JOB, ("gpu", 6), ("gpu", 2), id="gpu-manifest"),
        pytest.param(
            {"manifest": example_manifest("acme") | {"resources": {"learners": 2}}},
            ("cpu", 2),
            ("cpu", 1),
            id="cpu-manifest-with-two-learners",
        ),
        pytest.param({"gpus": 4}, ("gpu", 4), ("gpu", 4), id="form-override-of-gpus"),
        pytest.param(
            {"manifest": {"name": "Bad Name"}}, ("cpu", 1), ("cpu", 1), id="invalid-manifest"
        ),
    ],
)
def test_the_admission_policy_sizes_training_and_evaluation_from_the_runs_manifest(
    config: TrainyardConfig,
    conf: dict[str, Any],
    learner: tuple[str, int],
    evaluate: tuple[str, int],
) -> None:
    dag = tenant_dags(config)["trainyard_acme"]
    for task_id, (kind, slots) in (("learner", learner), ("evaluate", evaluate)):
        ti = run_task_instance(dag, conf, task_id)
        assert (ti.pool, ti.pool_slots) == (f"trainyard_acme_{kind}", slots), task_id


@pytest.mark.parametrize("task_id", ["validate", "stage_data", "commit", "register_model"])
def test_the_admission_policy_leaves_other_tasks_alone(
    config: TrainyardConfig, task_id: str
) -> None:
    ti = run_task_instance(tenant_dags(config)["trainyard_acme"], GPU_JOB, task_id)

    assert (ti.pool, ti.pool_slots) == ("default_pool", 1)


def test_airflow_loads_the_policy_from_the_shipped_local_settings() -> None:
    namespace: dict[str, Any] = {}
    exec(LOCAL_SETTINGS.read_text(), namespace)

    assert namespace["task_instance_mutation_hook"] is task_instance_mutation_hook
