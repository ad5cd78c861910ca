"""Retry budgets of the learner task, as an Airflow 3 retry policy.

Airflow counts every retry against one `retries` number. A training job needs a budget per
failure class: preemptions (spot reclaim, drain, eviction) are the platform's business and must
not use up the retries meant for real faults, and they resume at once instead of backing off;
a job that hangs again and again makes no progress however often it is retried, so hangs get a
small budget of their own. The learner task therefore gets `retries` = the sum of the budgets,
and this policy fails the task once one kind has used up its own share.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import RetryDecision, RetryPolicy

from operators.base import failure_of_exception
from trainyard.failures import RETRIED_CLASSES, FailureClass, InternalError, TrainyardFailure
from trainyard.jobs.records import load_record

#: The retried classes (RETRIED_CLASSES) with a budget of the learner's own, counted in the job
#: record; an internal error is every task's, retried once (TaskRetryPolicy). The classes no
#: retry gets past fail at once and never reach a retry policy.
BUDGETED_CLASSES = RETRIED_CLASSES - {FailureClass.INTERNAL_ERROR}


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
        """What the task's `retries` must be so that every budget fits."""
        return sum(self.budgets.values())

    def decide(
        self, failure: TrainyardFailure, attempts: Mapping[FailureClass, int]
    ) -> RetryDecision:
        """The decision for `failure`, given the attempts per class so far (this one included)."""
        kind = failure.failure_class
        if kind not in self.budgets:
            return RetryDecision.default()
        count, budget = attempts.get(kind, 0), self.budgets[kind]
        if count > budget:
            return RetryDecision.fail(
                f"{count} attempts ended as {kind.value}: its budget of {budget} retries is used up"
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
        if isinstance(failure, InternalError):
            return super().evaluate(exception, try_number, max_tries, context)
        task = context["task"] if context else None
        record = load_record(task.store, task.job_id) if task is not None else None
        if record is None:
            return RetryDecision.default()
        return self.decide(
            failure, {kind: record.count_attempts(kind.value) for kind in self.budgets}
        )

    def earlier_internal_errors(self, try_number: int, context: Any) -> int:
        """Earlier tries that did not record their end in the job record (every class does)."""
        task = context["task"] if context else None
        record = load_record(task.store, task.job_id) if task is not None else None
        if record is None:
            return try_number - 1
        return try_number - 1 - len(record.attempts)
