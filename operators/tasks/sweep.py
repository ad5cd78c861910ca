"""The tasks of a tenant's sweeps DAG: accept the sweep, then run its trials as jobs.

A sweep is one run of `trainyard_<tenant>.sweeps`; each of its trials is a run of the tenant's
own DAG (`trainyard_<tenant>`), so it is a job like any other (record, checkpoints, attempts,
retries, failure classes) and counts against the tenant's `max_running_jobs` and quotas.
The controller task holds no worker slot between its looks: it defers on a timer, and each
look (`trainyard.sweeps.controller.look`) is idempotent, so a sweep goes on after a crash of
its worker, the scheduler or the whole Airflow from what its study and its trials' runs say.
It starts trials through the REST API (the connection `trainyard_api`, as the `max_queued`
deadline does): a task cannot trigger more than one run through the Task SDK.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from operators.hooks.airflow_api import AirflowApiHook
from operators.hooks.sweeps import SweepStudyHook
from operators.tasks.base import TrainyardOperator, classified_failures
from operators.tasks.validate import ValidateJobOperator
from trainyard.cli.client import AirflowClient
from trainyard.cli.control import stop_trials
from trainyard.cli.status import job_status
from trainyard.failures import PlatformFault, UserError
from trainyard.jobs.layout import job_id_for_run, tenant_of_or_none
from trainyard.jobs.records import JobState
from trainyard.manifest.submission import manifest_from_conf
from trainyard.sweeps import controller
from trainyard.sweeps.record import (
    RESUME_SWEEP_KEY,
    SweepRecord,
    SweepState,
    resume_sweep,
    write_sweep,
)
from trainyard.sweeps.search import SweepSearch
from trainyard.tenancy.names import dag_id_for_tenant

#: Seconds between two looks of a sweep's controller at its trials.
SWEEP_POLL_SECONDS = 10


class ValidateSweepOperator(ValidateJobOperator):
    """Validate a sweep's manifest as a job's (schema, tenant, quota, backend) and record the
    sweep, or take up a paused one (`RESUME_SWEEP_KEY`). Returns the sweep's id (XCom). Its
    trials' code is the sweep's snapshot."""

    def accept(self, conf: Any, run_id: str, submitted_at: datetime | None = None) -> str:
        resumed = conf.get(RESUME_SWEEP_KEY)
        if isinstance(resumed, str) and tenant_of_or_none(resumed) == self.tenant:
            try:
                resume_sweep(self.store, resumed, run_id)
            except ValueError as error:
                raise UserError(str(error), "resume a paused sweep of this tenant") from None
            self.log.info("sweep %s resumed in run %s", resumed, run_id)
            return resumed
        manifest = manifest_from_conf(conf)
        if manifest.sweep is None:
            raise UserError(
                f"sweep: {self.dag_id} runs sweeps, and the manifest has no sweep section",
                f"add one, or run the job as a run of {dag_id_for_tenant(self.tenant)} "
                "(trainyard submit chooses the DAG)",
            )
        self.check_tenant(manifest)
        sweep_id = job_id_for_run(self.tenant, manifest.name, run_id)
        write_sweep(  # False, writing nothing, for a retry: its first try recorded the sweep
            self.store,
            SweepRecord(
                sweep_id=sweep_id,
                tenant=self.tenant,
                dag_id=self.dag_id,
                dag_run_id=run_id,
                manifest=manifest.model_dump(mode="json"),
            ),
            None,
        )
        self.log.info("sweep %s accepted: %s", sweep_id, manifest.sweep.model_dump_json())
        return sweep_id


class SweepOperator(TrainyardOperator):
    """Run the sweep's trials to the end; return the best trial's job id (XCom). Fails when
    no trial trained to the end (each trial's own status says why)."""

    ui_color = "#efe6fb"

    def __init__(self, *, poll_seconds: float = SWEEP_POLL_SECONDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.poll_seconds = poll_seconds

    def execute(self, context: Context) -> str | None:
        return self.look(context)

    def look(self, context: Context, event: Any = None) -> str | None:
        """One look at the trials; then wait for the next (deferred) until the sweep ends."""
        with classified_failures():
            study = SweepStudyHook().storage_url()
            with AirflowApiHook().get_client() as client:
                record = controller.look(
                    self.store,
                    self.job_id,
                    lambda record: SweepSearch(record.spec, record.sweep_id, study),
                    lambda job_id: self._trial_state(client, job_id),
                    lambda job_id, manifest: self._start_trial(client, job_id, manifest),
                    lambda state, job_ids: stop_trials(client, self.store, state, job_ids),
                )
            if record is None:
                raise PlatformFault(
                    f"the record of sweep {self.job_id} is missing from {self.store.describe()}",
                    "clear the run from its validate task",
                )
        if record.state in (SweepState.PAUSED, SweepState.CANCELLED):
            raise AirflowFailException(
                f"sweep {record.sweep_id} is {record.state.value}: its run ends here"
            )
        if record.dag_run_id != context["run_id"]:
            raise AirflowFailException(
                f"sweep {record.sweep_id} goes on in the run {record.dag_run_id}: this one ends"
            )
        counts = {state: [t.state for t in record.trials].count(state) for state in JobState}
        self.log.info(
            "sweep %s: %d of %d trials drawn; %s",
            record.sweep_id,
            len(record.trials),
            record.spec.trials_to_run,
            ", ".join(f"{n} {state.value}" for state, n in counts.items() if n),
        )
        if record.state is SweepState.RUNNING:
            self.defer(
                trigger=TimeDeltaTrigger(timedelta(seconds=self.poll_seconds)),
                method_name="look",
            )
        if record.state is SweepState.FAILED:
            raise AirflowFailException(
                f"no trial of sweep {record.sweep_id} trained to the end; "
                f"'trainyard sweep show {record.sweep_id}' lists them and why each ended"
            )
        self.log.info("sweep %s: the best trial is %s", record.sweep_id, record.best_job_id)
        return record.best_job_id

    def _trial_state(self, client: AirflowClient, job_id: str) -> JobState | None:
        try:
            return job_status(client, self.store, job_id).state
        except LookupError:
            return None  # no run and no record: never started

    def _start_trial(self, client: AirflowClient, job_id: str, manifest: dict[str, Any]) -> None:
        self.log.info("starting trial %s", job_id)
        client.trigger_run(dag_id_for_tenant(self.tenant), job_id, {"manifest": manifest})
