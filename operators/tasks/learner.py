"""The learner task: one attempt of a job's learners on its tenant's backend.

A thin adapter over the core: the backend (`trainyard.backends.backend_for`) builds the attempt
and runs it, `trainyard.jobs.attempts` judges and records it. The task adds Airflow's side: the
attempt number, the retry semantics of the failure, and `on_kill`. Evaluation is this task in
evaluate mode.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from operators.hooks.sweeps import SweepStudyHook
from operators.tasks.base import TrainyardOperator, classified_failures, describe_failure
from trainyard.backends import (
    LearnerBackend,
    LearnerEnd,
    LearnerSpec,
    ProcessBackend,
    RunMode,
    backend_for,
)
from trainyard.failures import InternalError, TrainyardFailure, UserError
from trainyard.jobs.attempts import (
    claim_attempt,
    judge_attempt,
    record_attempt,
    record_evaluation,
)
from trainyard.jobs.control import attempt_of_try, ended_by_pause, record_pause
from trainyard.jobs.limits import learner_seconds, queued_too_long, runtime_exceeded
from trainyard.jobs.records import JobState, load_record
from trainyard.manifest.schema import JobManifest
from trainyard.runtime.process import die_with_parent
from trainyard.sweeps.trials import EarlyStopWatch, record_pruned


class LearnerOperator(TrainyardOperator):
    """Run the job's learners on a process backend, in `mode`.

    Train (the default): every learner runs the job's command; a failed attempt raises with its
    failure class, and platform faults are retried. Evaluate: one learner runs
    `evaluation.command` against the committed model, and the metrics it stored are copied into
    the job record and returned (XCom); a manifest without evaluation runs nothing. Judging the
    metrics is the register_model task's job, so that a rejected model is still kept as a
    version. `on_kill` asks the learners to stop gracefully so they can commit a final
    checkpoint.
    """

    def __init__(self, *, mode: RunMode = RunMode.TRAIN, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self._running: ProcessBackend | None = None

    @cached_property
    def backend(self) -> LearnerBackend:
        return backend_for(self.trainyard_config, self.tenant)

    def attempt(self, context: Context) -> int:
        """The job's attempt number of this try: a resumed job's tries count on from the
        attempts of its earlier runs (`trainyard.jobs.control`)."""
        record, _ = self.load_job()
        return attempt_of_try(record, context["ti"].try_number)

    def claim(self, attempt: int) -> None:
        """Make `attempt` the job's current training attempt before its learners start: an
        older one still running is fenced off (`trainyard.jobs.fencing`)."""
        if self.mode is RunMode.TRAIN:
            with classified_failures():
                claim_attempt(self.store, self.job_id, attempt)

    def learner_spec(self, manifest: JobManifest, attempt: int) -> LearnerSpec:
        with classified_failures():
            return self.backend.learner_spec(
                manifest,
                job_id=self.job_id,
                mode=self.mode,
                attempt=attempt,
                credentials=self.storage_hook.get_credentials(),
                on_output=self.log.info,
            )

    def execute(self, context: Context) -> Any:
        return self.run_task(context)

    def run_task(self, context: Context) -> Any:
        """The task: load the job, run its learners, and return what `learners_done` returns.

        Kept apart from `execute` so that a task type whose `execute` is another base's (the
        Kubernetes task: the provider's) runs the same flow.
        """
        record, manifest = self.load_job()
        if self.mode is RunMode.TRAIN and record.state is JobState.PRUNED:
            # A crash between the prune's record and the task's skip leaves the try running;
            # its retry must not train the trial again (its sweep already stopped it).
            raise AirflowSkipException(f"{self.job_id} was pruned by its sweep: not trained again")
        if self.mode is RunMode.EVALUATE and manifest.evaluation is None:
            self.log.info("the manifest names no evaluation")
            return {}
        self.run_learners(manifest, context)
        return self.learners_done()

    def learners_done(self) -> dict[str, Any] | None:
        """What the task returns once its learners succeeded: the evaluation's metrics."""
        if self.mode is RunMode.TRAIN:
            return None
        with classified_failures():
            metrics = record_evaluation(self.store, self.job_id)
        self.log.info("evaluation metrics: %s", metrics)
        return metrics

    def run_learners(self, manifest: JobManifest, context: Context) -> None:
        backend = self.backend
        if not isinstance(backend, ProcessBackend):  # the DAG factory gives it its own task
            with classified_failures():
                raise InternalError(
                    f"the {backend.name} backend's learners are not processes of this task: "
                    "the DAG was built for another backend",
                    "none needed if the retry runs the rebuilt DAG; otherwise report it to the "
                    "platform team (operators/dag_factory.py builds the DAG)",
                )
        attempt = self.attempt(context)
        spec = self.learner_spec(manifest, attempt)
        self.claim(attempt)
        # A supervisor that dies (a scheduler killed with its process group) would leave this
        # process and its learners training beside the retry: its death stops them as a kill
        # of the task does (Airflow's SIGTERM handler calls on_kill: a final checkpoint).
        die_with_parent(signal.SIGTERM)
        self.log.info(
            "starting %d learner(s) of %s (attempt %d) on the %s backend",
            spec.num_learners,
            self.job_id,
            attempt,
            backend.name,
        )
        left = self.check_limits(manifest, context)
        started_at = datetime.now(UTC)
        self._running = backend
        ran_out = threading.Event()

        def deadline() -> None:
            ran_out.set()
            self.log.info("max_runtime ran out: stopping the learners (final checkpoint)")
            backend.stop()

        timer = threading.Timer(left, deadline) if left is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        watch = self.early_stop_watch(backend)
        try:
            with watch or contextlib.nullcontext():
                exits = backend.run(spec, on_output=self.log.info)
        finally:
            if timer is not None:
                timer.cancel()
        if watch is not None and watch.pruned.is_set():
            with classified_failures():
                record_pruned(self.store, self.job_id, attempt, started_at)
            # No failure: the rest of the run (commit, evaluate, register) is skipped.
            raise AirflowSkipException(f"{self.job_id} was pruned by its sweep")
        with classified_failures():
            ends = [LearnerEnd(rank, learner) for rank, learner in enumerate(exits)]
            failure = judge_attempt(self.store, spec, ends)
        if failure is not None and ran_out.is_set():
            assert manifest.max_runtime is not None  # the timer runs only under a limit
            record, _ = self.load_job()
            used = learner_seconds(record.attempts, started_at, datetime.now(UTC))
            failure = runtime_exceeded(self.job_id, manifest.max_runtime, used)
        self.conclude_attempt(manifest, attempt, started_at, failure)

    def early_stop_watch(self, backend: ProcessBackend) -> EarlyStopWatch | None:
        """The watch of a sweep's trial whose sweep stops trials early (None otherwise): it
        stops the learners (a final checkpoint) once the rule says so."""
        if self.mode is not RunMode.TRAIN:
            return None
        with classified_failures():
            trial = SweepStudyHook().trial_search(self.store, self.job_id)
        if trial is None:
            return None
        search, number = trial
        return EarlyStopWatch(search, number, self.store, self.job_id, backend.stop)

    def check_limits(self, manifest: JobManifest, context: Context) -> float | None:
        """Fail a job that waited longer than `max_queued` before its learners ever started, or
        whose `max_runtime` is used up (`trainyard.jobs.limits`); return the learner time left
        (None: no limit). Training only: evaluation runs on its own."""
        if self.mode is not RunMode.TRAIN:
            return None
        record, _ = self.load_job()
        with classified_failures():
            # The run's run_after: when it was triggered (or became due), so its wait since.
            queued_at = getattr(context.get("dag_run"), "run_after", None)
            if manifest.max_queued is not None and not record.attempts and queued_at:
                waited = (datetime.now(UTC) - queued_at).total_seconds()
                if waited > manifest.max_queued:
                    raise queued_too_long(manifest.max_queued, waited)
            if manifest.max_runtime is None:
                return None
            used = learner_seconds(record.attempts)
            if used >= manifest.max_runtime:
                raise runtime_exceeded(self.job_id, manifest.max_runtime, used)
            return manifest.max_runtime - used

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
            record = load_record(self.store, self.job_id)
            paused = record is not None and ended_by_pause(record, attempt)
            if self.mode is RunMode.TRAIN and paused:
                # Paused (trainyard.jobs.control): the attempt's end is the pause, which no
                # retry budget counts and no retry follows.
                record_pause(self.store, self.job_id, attempt, started_at)
                raise AirflowFailException(f"{self.job_id} was paused")
            user_errors = (
                record_attempt(self.store, self.job_id, attempt, started_at, failure)
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

    def on_kill(self) -> None:
        if self._running is not None:
            self._running.stop()
