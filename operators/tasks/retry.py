"""Retry budgets of the learner task, as an Airflow 3 retry policy.

Airflow counts every retry against one `retries` number. A training job needs a budget per
failure class: preemptions (spot reclaim, drain, eviction) are the platform's business and must
not use up the retries meant for real faults, and they resume at once instead of backing off;
a job that hangs again and again makes no progress however often it is retried, so hangs get a
small budget of their own. A budget counts the faults *without progress*: an attempt that
advanced the newest committed checkpoint starts every count over (`attempts.faults_in_a_row`),
so a multi-day job that keeps checkpointing outlives any number of faults, and one that fails
again and again without a new checkpoint fails as soon as a class's budget is used up, saying
what to do. The manifest's `retries.total` caps a job's retries in all; the learner task's
Airflow `retries` is the highest cap plus the user-error retries a manifest may opt into
(`retries.user_errors`), so those never cut the platform's budgets.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import RetryDecision, RetryPolicy

from operators.tasks.base import failure_of_exception
from trainyard.failures import RETRIED_CLASSES, FailureClass, InternalError, TrainyardFailure
from trainyard.jobs.attempts import faults_in_a_row, record_attempt
from trainyard.jobs.control import attempt_of_try
from trainyard.jobs.fencing import Superseded
from trainyard.jobs.records import load_record
from trainyard.manifest.schema import MAX_TOTAL_RETRIES, MAX_USER_ERROR_RETRIES, RetrySpec

#: The retried classes (RETRIED_CLASSES) with a budget of the learner's own, counted in the job
#: record; an internal error is every task's, retried once (TaskRetryPolicy). The classes no
#: retry gets past fail at once and never reach a retry policy.
BUDGETED_CLASSES = RETRIED_CLASSES - {FailureClass.INTERNAL_ERROR}
_BUDGETED_VALUES = frozenset(kind.value for kind in BUDGETED_CLASSES)

#: What to do about a job that failed again and again without progress, per budgeted class.
_NO_PROGRESS_FIX = {
    FailureClass.PLATFORM_FAULT: "read each attempt's cause (trainyard status) and fix what "
    "fails around the learner (storage, nodes, the learner image); then resubmit the job, which "
    "resumes from the newest committed checkpoint",
    FailureClass.PREEMPTION: "its learners are stopped before they commit a checkpoint: "
    "checkpoint more often (checkpoint.interval), or run where learners are not reclaimed so "
    "often; then resubmit the job, which resumes from the newest committed checkpoint",
    FailureClass.HANG: "find what blocks in the learner log (a collective waiting for a dead "
    "rank, a data source); if the job legitimately goes that long without a metric row or "
    "checkpoint, raise the manifest's watchdog; then resubmit the job",
}


class TaskRetryPolicy(RetryPolicy):
    """Every Trainyard task's: an internal error (a bug in Trainyard) is retried once at most.

    A bug is not a fault: retrying it as one would only repeat it. One retry still covers a
    bug that a transient state triggers. Other failures keep the task's own retries.
    """

    def evaluate(
        self,
        exception: BaseException,
        try_number: int,
        max_tries: int,
        context: Any = None,
    ) -> RetryDecision:
        if not isinstance(failure_of_exception(exception), InternalError):
            return RetryDecision.default()
        if self.earlier_internal_errors(try_number, context):
            return RetryDecision.fail("a second internal error: not retried again")
        return RetryDecision.retry(reason="internal error: retried once")

    def earlier_internal_errors(self, try_number: int, context: Any) -> int:
        """How many earlier tries may have ended in an internal error: all, unless known better."""
        return try_number - 1


class LearnerRetryPolicy(TaskRetryPolicy):
    def __init__(
        self,
        *,
        platform_retries: int = 3,
        preemption_retries: int = 10,
        hang_retries: int = 2,
        base_delay: timedelta = timedelta(seconds=5),
        max_delay: timedelta = timedelta(minutes=5),
        preemption_delay: timedelta = timedelta(seconds=1),
    ) -> None:
        budgets = {
            FailureClass.PREEMPTION: preemption_retries,
            FailureClass.PLATFORM_FAULT: platform_retries,
            FailureClass.HANG: hang_retries,
        }
        # Keyed off the statement of retried classes: one retried without a budget fails here.
        self.budgets = {kind: budgets[kind] for kind in BUDGETED_CLASSES}
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.preemption_delay = preemption_delay

    @property
    def total_retries(self) -> int:
        """The task's Airflow `retries`: the highest cap of `retries.total`, plus the
        user-error retries a manifest may opt into, which therefore never cut the platform's
        budgets."""
        return MAX_TOTAL_RETRIES + MAX_USER_ERROR_RETRIES

    def decide(
        self,
        failure: TrainyardFailure,
        attempts: Mapping[FailureClass, int],
        retried: int = 0,
        cap: int = MAX_TOTAL_RETRIES,
    ) -> RetryDecision:
        """The decision for `failure`, given the attempts per class in a row without progress
        (this one included), how many platform retries the job had in all and its `cap` on
        them (the manifest's `retries.total`).

        A used-up budget fails the job with a fix that says what to do (set on `failure`, which
        the failure callback records): a retry is no longer the cure.
        """
        kind = failure.failure_class
        if kind not in self.budgets:
            return RetryDecision.default()
        count, budget = attempts.get(kind, 0), self.budgets[kind]
        if count > budget:
            failure.fix = (
                f"the job failed {count} times in a row as {kind.value} without progress (no new "
                f"committed checkpoint; its budget is {budget} retries): {_NO_PROGRESS_FIX[kind]}"
            )
            return RetryDecision.fail(
                f"{count} attempts in a row ended as {kind.value} without progress: its budget "
                f"of {budget} retries is used up"
            )
        if retried > cap:
            failure.fix = (
                f"the job failed {retried} times in all, more than its retries.total of {cap}: "
                "read each attempt's cause (trainyard status); resume the job (trainyard resume) "
                "to go on from its newest committed checkpoint, or submit it again with a larger "
                f"retries.total (at most {MAX_TOTAL_RETRIES})"
            )
            return RetryDecision.fail(
                f"{retried} failed attempts in all: more than retries.total = {cap}"
            )
        if kind is FailureClass.PREEMPTION:
            return RetryDecision.retry(
                self.preemption_delay,
                f"preemption {count}: resuming from the newest checkpoint "
                "(does not count against the platform-fault budget)",
            )
        delay = min(self.base_delay * 2 ** (count - 1), self.max_delay)
        return RetryDecision.retry(delay, f"{kind.value} {count} of {budget} allowed retries")

    def evaluate(
        self,
        exception: BaseException,
        try_number: int,
        max_tries: int,
        context: Any = None,
    ) -> RetryDecision:
        failure = failure_of_exception(exception)
        task = context["task"] if context else None
        record = load_record(task.store, task.job_id) if task is not None else None
        if isinstance(failure, InternalError):
            # The job's attempt of this try (a resumed job's tries count on: jobs/control.py).
            attempt = attempt_of_try(record, try_number) if record is not None else try_number
            recorded = record is None or any(a.attempt == attempt for a in record.attempts)
            if task is not None and not recorded:
                # Recorded as every other class's end is (`record_attempt`): a try lost to a
                # crash records nothing, and so is not taken for an internal error.
                ti = context.get("ti")
                started = getattr(ti, "start_date", None) or datetime.now(UTC)
                try:
                    record_attempt(task.store, task.job_id, attempt, started, failure)
                except Superseded as superseded:  # a newer attempt runs the job already
                    return RetryDecision.fail(str(superseded))
            return super().evaluate(exception, try_number, max_tries, context)
        if record is None:
            return RetryDecision.default()
        return self.decide(
            failure,
            {kind: faults_in_a_row(record, kind) for kind in self.budgets},
            retried=sum(1 for a in record.attempts if a.failure_class in _BUDGETED_VALUES),
            cap=RetrySpec.model_validate(record.manifest.get("retries", {})).total,
        )

    def earlier_internal_errors(self, try_number: int, context: Any) -> int:
        """Earlier tries that ended in an internal error, as the job record says (a try lost to
        a crash, the task process killed or its heartbeat lost, recorded nothing: not a bug)."""
        task = context["task"] if context else None
        record = load_record(task.store, task.job_id) if task is not None else None
        if record is None:
            return try_number - 1
        internal = FailureClass.INTERNAL_ERROR.value
        attempt = attempt_of_try(record, try_number)
        return sum(
            1
            for a in record.attempts
            if a.failure_class == internal and record.attempt_offset < a.attempt < attempt
        )
