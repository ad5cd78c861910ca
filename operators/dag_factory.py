"""Builds the training DAGs: one per tenant, plus one per scheduled job manifest.

A tenant's DAG runs its jobs: validate -> stage_data -> learner -> commit -> evaluate ->
register_model, whatever the tenant's learner backend (`trainyard.backends.backend_for`):
learner and evaluate are the same task type in train and evaluate mode, the generic learner task
for a process backend and a KubernetesPodOperator task running the runtime in pods for
Kubernetes (`learner_task_type`). The learner retries platform faults with exponential backoff
and resumes from the newest committed checkpoint; user errors fail at once (the operators raise
AirflowFailException for them).

A scheduled job's DAG (cron or new data) has one task, which runs the job as a run of the
tenant's DAG and waits for it: every job of a tenant is a run of one DAG, whose
`max_active_runs` is the tenant's `max_running_jobs`. A scheduled job that cannot be built gets
a DAG that says why, so one broken manifest never hides the tenant's other DAGs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Asset, CronTriggerTimetable, Param
from airflow.sdk.definitions.deadline import DeadlineAlert

from operators.deployment.deadlines import queue_deadline
from operators.tasks.callbacks import record_failure
from operators.tasks.commit import CommitModelOperator
from operators.tasks.learner import LearnerOperator
from operators.tasks.register import RegisterModelOperator
from operators.tasks.retry import LearnerRetryPolicy, TaskRetryPolicy
from operators.tasks.stage_data import StageDataOperator
from operators.tasks.submit import SubmitJobOperator
from operators.tasks.sweep import SweepOperator, ValidateSweepOperator
from operators.tasks.validate import InvalidJobOperator, ValidateJobOperator
from trainyard.backends import LearnerBackend, ProcessBackend, RunMode, backend_for
from trainyard.backends.kubernetes import KubernetesBackend
from trainyard.jobs.tasks import TaskId
from trainyard.manifest.schema import DataTrigger, JobManifest, parse_manifest
from trainyard.manifest.submission import example_manifest, example_sweep_manifest
from trainyard.tenancy.config import (
    ScheduledJob,
    TenantConfig,
    TrainyardConfig,
    load_config,
    scheduled_jobs,
)
from trainyard.tenancy.names import (
    dag_access_control,
    dag_id_for_sweeps,
    dag_id_for_tenant,
    dag_tags,
    data_asset_name,
    data_asset_uri,
    is_tenant_dag,
)
from trainyard.tenancy.quotas import POOLED_TASKS, learner_pool

log = logging.getLogger(__name__)

#: Sweeps of one tenant at once (their trials count against its max_running_jobs).
MAX_ACTIVE_SWEEPS = 8
LEARNER_RETRY_POLICY = LearnerRetryPolicy(platform_retries=3, preemption_retries=10)
STORAGE_RETRIES = 3

TENANT_DOC = """
### Trainyard training jobs of tenant `{tenant}`

Each run trains one job. Trigger it with the form (edit the manifest, or override a common
field), with `trainyard submit job.yaml`, or with
`POST /api/v2/dags/{dag_id}/dagRuns` and `{{"conf": {{"manifest": {{...}}}}}}`.
Follow it with `trainyard status <job-id>`; the job id is the XCom of the `validate` task.
"""
SWEEPS_DOC = """
### Trainyard sweeps of tenant `{tenant}`

Each run is one hyper-parameter sweep: a manifest with a `sweep` section. Its trials run as
jobs of `{jobs_dag_id}` (ids `<sweep id>.t<N>`), at most `sweep.parallel` at once within the
tenant's limits. Submit with `trainyard submit sweep.yaml`; follow it with
`trainyard sweep show <sweep id>`. The `run_trials` task's XCom is the best trial's job id.
"""
JOB_DOC = """
### Scheduled Trainyard job `{job}` of tenant `{tenant}`

Retrains `{job}` {when}, from the manifest `{path}`. Each run starts the job as a run of
`{dag_id}` (see the task's "Triggered DAG" link), so it shares the tenant's limit on running
jobs, and succeeds when the job does. Every successful job is a model version
(`trainyard models list {job} --tenant {tenant}`); only a better model is promoted.
"""


def _optional(kind: str, title: str, description: str, **schema: Any) -> Param:
    return Param(
        None,
        type=["null", kind],
        title=title,
        description=description,
        section="Override common fields (empty = keep the manifest's value)",
        **schema,
    )


def trigger_params(manifest: dict[str, Any]) -> dict[str, Param]:
    """The trigger form: the whole manifest plus the fields people change most often."""
    return {
        "manifest": Param(
            manifest,
            type="object",
            title="Job manifest",
            description="The job manifest (JSON). The default is this DAG's usual job.",
        ),
        "job_name": _optional("string", "Job name", "Overrides name."),
        "command": _optional("string", "Command", "Overrides command."),
        "data_path": _optional("string", "Data path", "Overrides data.path."),
        "gpus": _optional("integer", "GPUs", "Overrides resources.gpus.", minimum=0),
        "cpus": _optional("number", "CPUs", "Overrides resources.cpus.", exclusiveMinimum=0),
        "memory": _optional("string", "Memory", "Overrides resources.memory, e.g. 4Gi."),
        "learners": _optional("integer", "Learners", "Overrides resources.learners.", minimum=1),
    }


def data_asset(tenant: str, path: str) -> Asset:
    """The asset that stands for new data under `path` of a tenant's storage.

    `trainyard data upload` (or anyone, through the REST API) records an event on it.
    """
    return Asset(name=data_asset_name(tenant, path), uri=data_asset_uri(tenant, path))


def learner_task_type(backend: LearnerBackend) -> type[LearnerOperator]:
    """The task type that runs `backend`'s learners (train and evaluate mode): the one place a
    backend meets its Airflow task.

    A process backend's learners are children of the generic learner task; Kubernetes' are pods
    of a KubernetesPodOperator subclass, imported here, not at the top: a deployment without
    Kubernetes tenants never imports the provider and the kubernetes client to parse DAGs.
    """
    if isinstance(backend, ProcessBackend):
        return LearnerOperator
    if isinstance(backend, KubernetesBackend):
        from operators.tasks.kubernetes_learner import KubernetesLearnerOperator

        return KubernetesLearnerOperator
    raise TypeError(f"no Airflow task runs the learners of the {backend.name} backend")


def _trainyard_dag(
    dag_id: str,
    tenant: TenantConfig,
    *,
    manifest: dict[str, Any],
    schedule: CronTriggerTimetable | Sequence[Asset] | None,
    max_active_runs: int,
    description: str,
    doc_md: str,
    tags: list[str],
    deadline: DeadlineAlert | None = None,
) -> DAG:
    """A DAG of `tenant` whose trigger form starts from `manifest`; the caller adds tasks."""
    return DAG(
        dag_id=dag_id,
        deadline=deadline,
        description=description,
        schedule=schedule,
        catchup=False,
        max_active_runs=max_active_runs,
        params=trigger_params(manifest),
        tags=[*dag_tags(tenant.name), *tags],
        access_control=dag_access_control(tenant.name),
        doc_md=doc_md,
        default_args={
            "retries": STORAGE_RETRIES,
            # A flat delay where no policy sets one: a try lost to a crash of its worker or
            # the scheduler (no exception for a policy to read) retries after it, however many
            # tries the job had. The policies set their own delays (the learner's back off).
            "retry_delay": timedelta(seconds=5),
            "retry_policy": TaskRetryPolicy(),
            "on_failure_callback": record_failure,
            # The tenant's priority as is: when tenants wait for the same executor slots, the
            # higher priority's tasks go first, whatever their place in the DAG.
            "priority_weight": tenant.priority,
            "weight_rule": "absolute",
        },
    )


def build_tenant_dag(tenant: TenantConfig, backend: LearnerBackend) -> DAG:
    """The DAG that runs every job of `tenant`, at most `max_running_jobs` at once."""
    dag_id = dag_id_for_tenant(tenant.name)
    manifest = example_manifest(tenant.name)
    # The learner's and the evaluation's pools as the form's manifest sizes them; the admission
    # policy (operators/deployment/admission.py) resizes them for each run from the run's conf.
    resources = parse_manifest(manifest).resources
    with _trainyard_dag(
        dag_id,
        tenant,
        manifest=manifest,
        schedule=None,
        max_active_runs=tenant.max_running_jobs,
        description=f"Trainyard training jobs of tenant {tenant.name}",
        doc_md=TENANT_DOC.format(tenant=tenant.name, dag_id=dag_id),
        tags=[],
        # max_queued for a run held queued by max_active_runs or pools
        deadline=queue_deadline(tenant),
    ) as dag:
        learner_task = learner_task_type(backend)
        validate = ValidateJobOperator(task_id=TaskId.VALIDATE, tenant=tenant.name)
        job_id = validate.output
        stage = StageDataOperator(task_id=TaskId.STAGE_DATA, tenant=tenant.name, job_id=job_id)
        training = learner_pool(tenant.name, resources, RunMode.TRAIN)
        learner = learner_task(
            task_id=POOLED_TASKS[RunMode.TRAIN],
            retries=LEARNER_RETRY_POLICY.total_retries,
            retry_policy=LEARNER_RETRY_POLICY,
            pool=training.pool,
            pool_slots=training.slots,
            tenant=tenant.name,
            job_id=job_id,
        )
        commit = CommitModelOperator(task_id=TaskId.COMMIT, tenant=tenant.name, job_id=job_id)
        evaluation = learner_pool(tenant.name, resources, RunMode.EVALUATE)
        evaluate = learner_task(
            task_id=POOLED_TASKS[RunMode.EVALUATE],
            mode=RunMode.EVALUATE,
            pool=evaluation.pool,
            pool_slots=evaluation.slots,
            tenant=tenant.name,
            job_id=job_id,
        )
        register = RegisterModelOperator(
            task_id=TaskId.REGISTER_MODEL, tenant=tenant.name, job_id=job_id
        )
        stage >> learner >> commit >> evaluate >> register
    return dag


def build_sweeps_dag(tenant: TenantConfig) -> DAG:
    """The DAG that runs the tenant's sweeps: each run accepts one sweep and runs its trials as
    runs of the tenant's DAG (operators/tasks/sweep.py)."""
    dag_id = dag_id_for_sweeps(tenant.name)
    with _trainyard_dag(
        dag_id,
        tenant,
        manifest=example_sweep_manifest(tenant.name),
        schedule=None,
        max_active_runs=MAX_ACTIVE_SWEEPS,
        description=f"Trainyard sweeps of tenant {tenant.name}",
        doc_md=SWEEPS_DOC.format(tenant=tenant.name, jobs_dag_id=dag_id_for_tenant(tenant.name)),
        tags=["sweeps"],
    ) as dag:
        validate = ValidateSweepOperator(task_id=TaskId.VALIDATE, tenant=tenant.name)
        SweepOperator(task_id=TaskId.RUN_TRIALS, tenant=tenant.name, job_id=validate.output)
    return dag


def build_scheduled_dag(tenant: TenantConfig, job: ScheduledJob, manifest: JobManifest) -> DAG:
    """The DAG of one scheduled job: cron-driven, or driven by new data under a path.

    Its one task runs the job in the tenant's DAG, so the job counts against the tenant's
    `max_running_jobs` like any other; a retraining never overlaps itself (one run at a time).
    """
    trigger = manifest.schedule
    schedule: CronTriggerTimetable | list[Asset]
    if isinstance(trigger, DataTrigger):
        schedule = [data_asset(tenant.name, trigger.on_new_data)]
        when = f"whenever new data is registered under `{trigger.on_new_data}`"
    else:
        assert trigger is not None  # scheduled_jobs() only returns manifests with a schedule
        # No start date, and run_immediately of zero: a new job waits for its next scheduled
        # time instead of running at once for the slot it just missed. (run_immediately=False
        # still runs a slot missed by less than a tenth of the interval.)
        schedule = CronTriggerTimetable(trigger, timezone="UTC", run_immediately=timedelta(0))
        when = f"on the schedule `{trigger}` (UTC)"
    with _trainyard_dag(
        job.dag_id,
        tenant,
        manifest=manifest.model_dump(mode="json"),
        schedule=schedule,
        max_active_runs=1,
        description=f"Scheduled job {manifest.name} of tenant {tenant.name}",
        doc_md=JOB_DOC.format(
            job=manifest.name,
            tenant=tenant.name,
            when=when,
            path=job.path.name,
            dag_id=dag_id_for_tenant(tenant.name),
        ),
        tags=["scheduled"],
    ) as dag:
        SubmitJobOperator(task_id=TaskId.SUBMIT_JOB, tenant=tenant.name)
    return dag


def build_invalid_job_dag(tenant: TenantConfig, job: ScheduledJob) -> DAG:
    """Stands in for a scheduled job whose manifest is broken: the error is what users see."""
    message = f"invalid scheduled job manifest {job.error}"
    log.error("%s", message)
    with DAG(
        dag_id=job.dag_id,
        description=message[:200],
        schedule=None,
        tags=[*dag_tags(tenant.name), "invalid"],
        access_control=dag_access_control(tenant.name),
        doc_md=f"### This scheduled job cannot run\n\n```\n{message}\n```\n",
    ) as dag:
        InvalidJobOperator(task_id=TaskId.INVALID_MANIFEST, message=message)
    return dag


def tenant_dags(config: TrainyardConfig | None = None, only: str | None = None) -> dict[str, DAG]:
    """Every training DAG of the deployment, by dag_id; with `only`, just what that DAG needs.

    A task process parses the DAG file to find its own DAG (Airflow's parsing context names
    it): a task of a tenant's DAG (or its sweeps DAG) builds that DAG alone, a scheduled job's
    task its tenant's DAGs, instead of every tenant's DAGs and every scheduled manifest.
    """
    config = config or load_config()
    tenants = [t for t in config.tenants if only is None or is_tenant_dag(only, t.name)]
    # (A DAG built in a `with` block registers itself: build none that `only` does not need.)
    for tenant in tenants:
        if only == dag_id_for_sweeps(tenant.name):
            return {only: build_sweeps_dag(tenant)}
    dags = {
        dag_id_for_tenant(t.name): build_tenant_dag(t, backend_for(config, t.name)) for t in tenants
    }
    if only is not None and only in dags:
        return {only: dags[only]}
    if only is None:
        dags |= {dag_id_for_sweeps(t.name): build_sweeps_dag(t) for t in tenants}
    for job in scheduled_jobs(config, [t.name for t in tenants]):
        tenant = config.tenant(job.tenant)
        if job.manifest is None:
            dags[job.dag_id] = build_invalid_job_dag(tenant, job)
        else:
            dags[job.dag_id] = build_scheduled_dag(tenant, job, job.manifest)
    return dags
