"""Retry budgets of the learner task, as an Airflow 3 retry policy.

Airflow counts every retry against one `retries` number. A training job needs two budgets:
preemptions (spot reclaim, drain, eviction) are the platform's business and must not use up
the retries meant for real faults, and they resume at once instead of backing off. The learner
task therefore gets `retries = platform_retries + preemption_retries`, and this policy fails the
task once either kind has used up its own share.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import RetryDecision, RetryPolicy

from trainyard.failures import FailureClass, Preemption, TrainyardFailure
from trainyard.records import load_record

PLATFORM_CLASSES = (FailureClass.PLATFORM_FAULT.value, FailureClass.HANG.value)


class LearnerRetryPolicy(RetryPolicy):
    def __init__(
        self,
        *,
        platform_retries: int = 3,
        preemption_retries: int = 10,
        base_delay: timedelta = timedelta(seconds=5),
        max_delay: timedelta = timedelta(minutes=5),
        preemption_delay: timedelta = timedelta(seconds=1),
    ) -> None:
        self.platform_retries = platform_retries
        self.preemption_retries = preemption_retries
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.preemption_delay = preemption_delay

    @property
    def total_retries(self) -> int:
        """What the task's `retries` must be so that both budgets fit."""
        return self.platform_retries + self.preemption_retries

    def decide(
        self, failure: TrainyardFailure, preemptions: int, platform_faults: int
    ) -> RetryDecision:
        """The decision for `failure`, given the attempts recorded so far (this one included)."""
        if isinstance(failure, Preemption):
            if preemptions > self.preemption_retries:
                return RetryDecision.fail(
                    f"preempted {preemptions} times: the preemption budget "
                    f"({self.preemption_retries} retries) is used up"
                )
            return RetryDecision.retry(
                self.preemption_delay,
                f"preemption {preemptions}: resuming from the newest checkpoint "
                "(does not count against the platform-fault budget)",
            )
        if failure.failure_class.value in PLATFORM_CLASSES:
            if platform_faults > self.platform_retries:
                return RetryDecision.fail(
                    f"{platform_faults} platform faults: the budget of "
                    f"{self.platform_retries} retries is used up"
                )
            delay = min(self.base_delay * 2 ** (platform_faults - 1), self.max_delay)
            return RetryDecision.retry(
                delay,
                f"platform fault {platform_faults} of {self.platform_retries} allowed retries",
            )
        return RetryDecision.default()

    def evaluate(
        self,
        exception: BaseException,
        try_number: int,
        max_tries: int,
        context: Any = None,
    ) -> RetryDecision:
        failure = exception.__cause__
        task = context["task"] if context else None
        if not isinstance(failure, TrainyardFailure) or task is None:
            return RetryDecision.default()
        record = load_record(task.store, task.job_id)
        if record is None:
            return RetryDecision.default()
        return self.decide(
            failure,
            preemptions=record.count_attempts(FailureClass.PREEMPTION.value),
            platform_faults=record.count_attempts(*PLATFORM_CLASSES),
        )
