"""Builds the training DAGs: one per tenant, all with the same tasks.

validate -> stage_data -> learner -> commit -> evaluate. The learner retries platform faults
with exponential backoff and resumes from the newest committed checkpoint; user errors fail at
once (the operators raise AirflowFailException for them).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param

from operators.callbacks import record_failure
from operators.commit import CommitModelOperator
from operators.evaluate import EvaluateModelOperator
from operators.learner import LearnerOperator
from operators.retry import LearnerRetryPolicy
from operators.stage_data import StageDataOperator
from operators.validate import ValidateJobOperator
from trainyard.config import TenantConfig, TrainyardConfig, dag_id_for_tenant, load_config
from trainyard.submission import example_manifest

LEARNER_RETRY_POLICY = LearnerRetryPolicy(platform_retries=3, preemption_retries=10)
STORAGE_RETRIES = 3

DAG_DOC = """
### Trainyard training jobs of tenant `{tenant}`

Each run trains one job. Trigger it with the form (edit the manifest, or override a common
field), with `trainyard submit job.yaml`, or with
`POST /api/v2/dags/{dag_id}/dagRuns` and `{{"conf": {{"manifest": {{...}}}}}}`.
Follow it with `trainyard status <job-id>`; the job id is the XCom of the `validate` task.
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


def trigger_params(tenant: str) -> dict[str, Param]:
    """The trigger form: the whole manifest plus the fields people change most often."""
    return {
        "manifest": Param(
            example_manifest(tenant),
            type="object",
            title="Job manifest",
            description=(
                "The job manifest (JSON). The default trains the digits example from "
                "examples/pytorch-digits in this tenant's storage."
            ),
        ),
        "job_name": _optional("string", "Job name", "Overrides name."),
        "command": _optional("string", "Command", "Overrides command."),
        "data_path": _optional("string", "Data path", "Overrides data.path."),
        "gpus": _optional("integer", "GPUs", "Overrides resources.gpus.", minimum=0),
        "cpus": _optional("number", "CPUs", "Overrides resources.cpus.", exclusiveMinimum=0),
        "memory": _optional("string", "Memory", "Overrides resources.memory, e.g. 4Gi."),
        "learners": _optional("integer", "Learners", "Overrides resources.learners.", minimum=1),
    }


def build_tenant_dag(tenant: TenantConfig) -> DAG:
    dag_id = dag_id_for_tenant(tenant.name)
    with DAG(
        dag_id=dag_id,
        description=f"Trainyard training jobs of tenant {tenant.name}",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=tenant.max_running_jobs,
        params=trigger_params(tenant.name),
        tags=["trainyard", f"tenant:{tenant.name}"],
        doc_md=DAG_DOC.format(tenant=tenant.name, dag_id=dag_id),
        default_args={
            "retries": STORAGE_RETRIES,
            "retry_delay": timedelta(seconds=5),
            "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=5),
            "on_failure_callback": record_failure,
        },
    ) as dag:
        validate = ValidateJobOperator(task_id="validate", tenant=tenant.name)
        job_id = validate.output
        stage = StageDataOperator(task_id="stage_data", tenant=tenant.name, job_id=job_id)
        learner = LearnerOperator(
            task_id="learner",
            tenant=tenant.name,
            job_id=job_id,
            retries=LEARNER_RETRY_POLICY.total_retries,
            retry_policy=LEARNER_RETRY_POLICY,
        )
        commit = CommitModelOperator(task_id="commit", tenant=tenant.name, job_id=job_id)
        evaluate = EvaluateModelOperator(task_id="evaluate", tenant=tenant.name, job_id=job_id)
        stage >> learner >> commit >> evaluate
    return dag


def tenant_dags(config: TrainyardConfig | None = None) -> dict[str, DAG]:
    """Every tenant's training DAG by dag_id, from the deployment config."""
    config = config or load_config()
    return {dag_id_for_tenant(t.name): build_tenant_dag(t) for t in config.tenants}
