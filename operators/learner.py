"""The learner task: run the job's command on the configured backend and classify its end."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators.base import TrainyardOperator, classified_failures, describe_failure
from trainyard.backends import (
    OOM_KILLED,
    LearnerBackend,
    LearnerExit,
    LearnerSpec,
    RunMode,
    get_backend,
)
from trainyard.backends.base import failure_order
from trainyard.backends.local.environments import learner_python
from trainyard.failures import (
    RESUME_FIX,
    FailureClass,
    PlatformFault,
    TrainyardFailure,
    UserError,
    out_of_memory,
)
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.records import AttemptInfo, load_record, save_record
from trainyard.manifest.schema import JobManifest
from trainyard.manifest.units import format_bytes
from trainyard.runtime.outcome import Outcome
from trainyard.storage import ObjectNotFound, ObjectStore


def learner_failure(
    store: ObjectStore,
    spec: LearnerSpec,
    exits: Sequence[LearnerExit],
    ranks: Sequence[int] | None = None,
) -> TrainyardFailure | None:
    """The failure of this attempt, from the backend's view and the learners' outcomes, or None.

    The backend's view wins where it knows more (it OOM-killed the learner). A learner that
    died without writing its outcome (killed hard, node lost) is a platform fault: the retry
    resumes from the newest committed checkpoint. `ranks` names the rank of each exit, in the
    order to look at them (default: exits are by rank).
    """
    layout = JobLayout(spec.job_id)
    for rank, learner in zip(ranks or range(len(exits)), exits, strict=True):
        if learner.reason == OOM_KILLED:
            limit = format_bytes(spec.memory_bytes)
            return out_of_memory(
                f"learner {rank} was OOM-killed: it needed more than resources.memory = {limit}",
                limit,
            )
        try:
            outcome = Outcome.from_json(
                store.get_json(layout.outcome(spec.mode, spec.attempt, rank))
            )
        except ObjectNotFound:
            if learner.exit_code == 0:
                continue
            return PlatformFault(
                f"learner {rank} exited with code {learner.exit_code} without reporting an outcome",
                RESUME_FIX,
            )
        if outcome.failure is not None:
            failure = outcome.failure
            return type(failure)(f"learner {rank}: {failure.cause}", failure.fix)
        if learner.exit_code != 0:
            return PlatformFault(
                f"learner {rank} reported success but exited with code {learner.exit_code}",
                RESUME_FIX,
            )
    return None


class LearnerRunningOperator(TrainyardOperator):
    """Base of the tasks that run learners (training, evaluation) on the configured backend.

    A failed attempt raises with the failure class of its outcome; `on_kill` asks the learners
    to stop gracefully so they can commit a final checkpoint.
    """

    mode: RunMode

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._backend: LearnerBackend | None = None

    def learner_spec(self, manifest: JobManifest, attempt: int) -> LearnerSpec:
        command = manifest.command
        if self.mode is RunMode.EVALUATE:
            assert manifest.evaluation is not None
            command = manifest.evaluation.command
        resources = manifest.resources
        python = None
        if self.trainyard_config.learner_backend_of(self.tenant) == "local":
            with classified_failures():
                python = learner_python(
                    manifest.framework, self.trainyard_config.environments, self.log.info
                )
        return LearnerSpec(
            job_id=self.job_id,
            tenant=self.tenant,
            mode=self.mode,
            command=command,
            attempt=attempt,
            num_learners=resources.learners_in(self.mode),
            checkpoint_interval=manifest.checkpoint.interval,
            checkpoint_keep=manifest.checkpoint.keep,
            storage=self.tenant_config.storage,
            work_dir=self.trainyard_config.work_dir,
            cpus=resources.cpus,
            memory_bytes=resources.memory,
            gpus=resources.gpus,
            watchdog=manifest.watchdog or self.tenant_config.default_watchdog,
            watchdog_startup=manifest.watchdog_startup
            or self.tenant_config.default_watchdog_startup,
            credentials=self.storage_hook.get_credentials(),
            sandbox_network=self.trainyard_config.sandbox_network_of(self.tenant),
            python=python,
        )

    def execute(self, context: Context) -> Any:
        return self.run_task(context)

    def run_task(self, context: Context) -> Any:
        """The task: load the job, run its learners, and return what `learners_done` returns.

        Kept apart from `execute` so that a task type whose `execute` is another base's (the
        Kubernetes tasks: the provider's) runs the same flow.
        """
        _, manifest = self.load_job()
        self.run_learners(manifest, context)
        return self.learners_done()

    def learners_done(self) -> Any:
        """What the task returns once its learners succeeded: nothing, for training."""
        return None

    def run_learners(self, manifest: JobManifest, context: Context) -> None:
        attempt = context["ti"].try_number
        spec = self.learner_spec(manifest, attempt)
        backend = self.trainyard_config.learner_backend_of(self.tenant)
        try:
            self._backend = get_backend(backend)
        except ValueError as error:  # the deployment's config: no retry can fix it
            raise AirflowFailException(f"[platform configuration] {error}") from error
        self.log.info(
            "starting %d learner(s) of %s (attempt %d) on the %s backend",
            spec.num_learners,
            self.job_id,
            attempt,
            backend,
        )
        started_at = datetime.now(UTC)
        exits = self._backend.run(spec, on_output=self.log.info)
        with classified_failures():
            order = failure_order(exits)
            failure = learner_failure(self.store, spec, [exits[r] for r in order], order)
        self.conclude_attempt(manifest, attempt, started_at, failure)

    def conclude_attempt(
        self,
        manifest: JobManifest,
        attempt: int,
        started_at: datetime,
        failure: TrainyardFailure | None,
    ) -> None:
        """Record a training attempt and raise its failure with Airflow's retry semantics.

        Failing user code is retried only as often as the manifest opts in
        (`retries.user_errors`); every other class follows classified_failures.
        """
        with classified_failures():
            user_errors = (
                self.record_attempt(attempt, started_at, failure)
                if self.mode is RunMode.TRAIN
                else 0
            )
            if isinstance(failure, UserError) and user_errors <= manifest.retries.user_errors:
                raise AirflowException(
                    f"{describe_failure(failure)} (retrying: retries.user_errors is "
                    f"{manifest.retries.user_errors})"
                ) from failure
            if failure is not None:
                raise failure

    def record_attempt(
        self, attempt: int, started_at: datetime, failure: TrainyardFailure | None
    ) -> int:
        """Append this attempt's end to the job record, where the retry budgets count from.

        Returns how many attempts so far ended in a user error.
        """
        record = load_record(self.store, self.job_id)
        if record is None:
            return 0
        record.attempts.append(
            AttemptInfo(
                attempt=attempt,
                started_at=started_at,
                failure_class=failure.failure_class.value if failure else None,
                message=failure.cause if failure else "",
                fix=failure.fix if failure else "",
            )
        )
        save_record(self.store, record)
        return record.count_attempts(FailureClass.USER_ERROR.value)

    def on_kill(self) -> None:
        if self._backend is not None:
            self._backend.stop()


class LearnerOperator(LearnerRunningOperator):
    """Train: run the job's command on every learner; platform faults are retried."""

    mode = RunMode.TRAIN
