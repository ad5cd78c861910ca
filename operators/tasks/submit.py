"""The task of a scheduled job's DAG: run the job as a run of its tenant's DAG, and wait for it.

Every job of a tenant, whether submitted, scheduled or started by new data, is a run of the
tenant's own DAG, so that DAG's `max_active_runs` (the tenant's `max_running_jobs`) caps all of
them at once; Airflow has no cap across DAGs. A job beyond the cap waits as a queued run: it is
not lost, and it starts when one of the tenant's jobs ends.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.providers.standard.triggers.external_task import DagStateTrigger
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators.tasks.base import classified_failures
from trainyard.jobs.layout import job_id_for_run
from trainyard.manifest.submission import manifest_from_conf
from trainyard.tenancy.names import dag_id_for_tenant

#: Seconds between two looks at the job's run while the task waits (deferred, in the triggerer).
JOB_POLL_SECONDS = 5


class SubmitJobOperator(TriggerDagRunOperator):
    """Start this run's job in the tenant's DAG, with this run's params as its conf, and wait.

    The job id, which is also the tenant run's id, derives from this run's id: a retry of this
    task finds the job it already started and waits for it instead of starting a second one.
    The task succeeds when the job does; a failed job fails it without retry, since the job's
    own tasks already retried what a retry could fix.
    """

    template_fields = ()
    ui_color = "#fff4e0"

    def __init__(self, *, tenant: str, **kwargs: Any) -> None:
        super().__init__(
            trigger_dag_id=dag_id_for_tenant(tenant),
            wait_for_completion=True,
            deferrable=True,
            poke_interval=JOB_POLL_SECONDS,
            openlineage_inject_parent_info=False,
            **kwargs,
        )
        self.tenant = tenant

    def execute(self, context: Context) -> None:
        conf = {key: value for key, value in context["params"].items() if value is not None}
        with classified_failures():
            manifest = manifest_from_conf(conf)
        dag_run = context["dag_run"]
        job_id = job_id_for_run(self.tenant, manifest.name, dag_run.run_id)
        if context["ti"].get_dr_count(dag_id=self.trigger_dag_id, run_ids=[job_id]):
            self.log.info("job %s was started by an earlier try: waiting for it", job_id)
            self.trigger_run_id = job_id
            self.defer(
                trigger=DagStateTrigger(
                    dag_id=self.trigger_dag_id,
                    states=[*self.allowed_states, *self.failed_states],
                    run_ids=[job_id],
                    poll_interval=JOB_POLL_SECONDS,
                ),
                method_name="execute_complete",
            )
        self.log.info("starting job %s as a run of %s", job_id, self.trigger_dag_id)
        self.conf = conf
        self.trigger_run_id = job_id
        self.note = f"Scheduled job {manifest.name}: run {dag_run.run_id} of {dag_run.dag_id}"
        super().execute(context)

    def execute_complete(self, context: Context, event: tuple[str, dict[str, Any]]) -> None:
        try:
            super().execute_complete(context, event)
        except AirflowException as failed:
            job_id = self.trigger_run_id
            raise AirflowFailException(
                f"job {job_id} (a run of {self.trigger_dag_id}) did not succeed; "
                f"'trainyard status {job_id}' shows why"
            ) from failed
