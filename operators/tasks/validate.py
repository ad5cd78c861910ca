"""First task of a training run: turn the run's conf into a validated, recorded job."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators.tasks.base import TrainyardOperator, classified_failures, failure_of_exception
from trainyard.backends import backend_for
from trainyard.failures import TrainyardFailure, UserError
from trainyard.jobs.code import snapshot_code
from trainyard.jobs.control import RESUME_KEY, check_resume, job_id_of_run
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.limits import with_limits
from trainyard.jobs.lineage import digest_prefix
from trainyard.jobs.records import FailureInfo, JobRecord, JobState, load_record, save_record
from trainyard.manifest.schema import JobManifest
from trainyard.manifest.submission import manifest_from_conf
from trainyard.storage import StorageError
from trainyard.tenancy.config import check_manifest_for_tenant
from trainyard.tenancy.names import dag_id_for_sweeps, dag_id_for_tenant
from trainyard.tenancy.quotas import check_quota


class ValidateJobOperator(TrainyardOperator):
    """Validate the manifest against the schema, the tenant and its quota, snapshot the code,
    record the job.

    Returns the job id (XCom) that every later task of the run works on. Nothing of the job but
    its record (state failed, with the reason) is written before the manifest is valid.
    """

    template_fields = ()

    def execute(self, context: Context) -> str:
        dag_run = context["dag_run"]
        conf, run_id = context["params"], dag_run.run_id
        # When the run was queued (submitted): a job's queue time counts its wait for a run
        # slot (the tenant's max_running_jobs) too.
        submitted_at = getattr(dag_run, "queued_at", None) or getattr(dag_run, "run_after", None)
        try:
            with classified_failures():
                return self.accept(conf, run_id, submitted_at)
        except AirflowFailException as rejected:
            self.record_rejection(conf, run_id, rejected)
            # The message says it all: the exception chain (ManifestError, pydantic's errors)
            # would only repeat it, with long inputs echoed whole.
            raise AirflowFailException(str(rejected)) from None

    def accept(self, conf: Any, run_id: str, submitted_at: datetime | None = None) -> str:
        """Validate the run's conf into a job, snapshot its code and record it (created when
        its run was `submitted_at`, default now)."""
        manifest = manifest_from_conf(conf)
        if manifest.sweep is not None:
            raise UserError(
                f"sweep: the manifest is a sweep, which runs as a run of "
                f"{dag_id_for_sweeps(self.tenant)}, not of {self.dag_id}",
                "submit it with trainyard submit (which chooses the DAG), or trigger "
                f"{dag_id_for_sweeps(self.tenant)}",
            )
        self.check_tenant(manifest)
        job_id = job_id_of_run(self.tenant, conf, run_id)
        layout = JobLayout(job_id)
        record = load_record(self.store, job_id)
        if conf.get(RESUME_KEY):
            try:
                record = check_resume(record, job_id, run_id)
            except ValueError as error:
                raise UserError(str(error), "resume the job, or submit it as a new one") from None
            if record.code_digest is not None:
                # A resume (trainyard.jobs.control) goes on with the job's code, record,
                # attempts, metrics and checkpoints.
                record.state = JobState.RUNNING
                save_record(self.store, record)
                self.log.info("job %s resumed (after attempt %d)", job_id, record.attempt_offset)
                return job_id
            # Paused while still queued, before this task ever accepted it: accepted now.
        snapshot_code(self.store, manifest, layout)
        record = record or JobRecord(
            job_id=job_id,
            tenant=self.tenant,
            dag_id=self.dag_id,
            dag_run_id=run_id,
            manifest={},
            created_at=submitted_at or datetime.now(UTC),
        )
        record.manifest = with_limits(manifest, self.tenant_config).model_dump(mode="json")
        record.state = JobState.RUNNING
        record.code_digest = digest_prefix(self.store, layout.code)
        save_record(self.store, record)
        self.log.info("job %s accepted: %s", job_id, manifest.model_dump_json())
        return job_id

    def record_rejection(self, conf: Any, run_id: str, rejected: AirflowFailException) -> None:
        """Keep why the job was refused in its record, where `trainyard status` finds it.

        Only the record is written: the refused job's code and data never reach its prefix.
        """
        job_id = job_id_of_run(self.tenant, conf, run_id)
        cause = failure_of_exception(rejected)
        failure = FailureInfo(
            failure_class=cause.failure_class.value,
            task=self.task_id,
            message=str(rejected),
            fix=cause.fix,
        )
        try:
            record = load_record(self.store, job_id) or JobRecord(
                job_id=job_id,
                tenant=self.tenant,
                dag_id=self.dag_id,
                dag_run_id=run_id,
                manifest={},
            )
            if record.dag_run_id != run_id:
                return  # a forged resume: the job named belongs to another run
            record.state, record.failure = JobState.FAILED, failure
            save_record(self.store, record)
        except (StorageError, TrainyardFailure, AirflowException) as error:
            self.log.warning("could not record the rejection of %s: %s", job_id, error)

    def check_tenant(self, manifest: JobManifest) -> None:
        if manifest.tenant != self.tenant:
            raise UserError(
                f"tenant: the manifest names tenant {manifest.tenant!r} but was submitted to "
                f"{self.dag_id}, the DAG of tenant {self.tenant!r}",
                f"trigger {dag_id_for_tenant(manifest.tenant)} instead, "
                f"or set tenant: {self.tenant}",
            )
        check_manifest_for_tenant(manifest, self.trainyard_config)
        # The tenant's quota before the machine: a job the tenant may never run is told so
        # whatever the backend could offer.
        check_quota(manifest.resources, self.tenant_config)
        backend_for(self.trainyard_config, self.tenant).check(manifest)


class InvalidJobOperator(BaseOperator):
    """The only task of a scheduled job whose manifest is invalid: it fails with the reason."""

    ui_color = "#fde2e1"

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def execute(self, context: Context) -> None:
        with classified_failures():
            raise UserError(
                self.message, "correct the manifest file named; it is read again once saved"
            )
