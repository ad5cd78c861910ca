"""Tasks that wait where waiting beats failing: the tenant's storage answers, the model is
published.

A storage outage before staging or before commit would otherwise spend the task's retries (a
platform fault each), and an object store that shows a just-written object late would fail
the commit. Such a task checks its conditions first, on a worker, and while one does not hold
defers for `poke_interval` seconds (the triggerer waits, no worker slot is held), until the
tenant's timeout for that condition; past it the task fails as a platform fault, retried as
such. The wait is part of the task it guards, not a sensor task before it: a hand-over between
two tasks costs a job more than a check does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import Context

from operators.tasks.base import TrainyardOperator, classified_failures
from operators.triggers.deferral import DEFER_SETTLE_SECONDS
from trainyard.failures import PlatformFault
from trainyard.jobs.layout import JobLayout
from trainyard.storage import StorageError

#: Seconds between two checks of a condition: no sooner than a deferral settles.
POKE_SECONDS = DEFER_SETTLE_SECONDS


@dataclass(frozen=True)
class Condition:
    """What a task waits for: an object of the job that answers (and, if `must_exist`, is
    there), bounded by the tenant setting `timeout_setting`."""

    name: str
    awaited: str  # for the log and the failure message
    timeout_setting: str
    key: Callable[[JobLayout], str]
    must_exist: bool


#: The tenant's storage answers: a request gets a reply (the job record is read).
STORAGE_ANSWERS = Condition(
    "storage",
    "the tenant's storage to answer",
    "storage_wait_timeout",
    lambda layout: layout.record,
    must_exist=False,
)
#: The results manifest the learner published last is visible in storage.
MODEL_PUBLISHED = Condition(
    "published",
    "the learner's published results manifest to be visible",
    "publish_wait_timeout",
    lambda layout: layout.results_manifest,
    must_exist=True,
)


class WaitingOperator(TrainyardOperator):
    """A task that waits, deferred, until each of its `conditions` holds (in order, each at
    most its timeout from the check that first found it unmet), then does its `work`."""

    #: What the task waits for before its work.
    conditions: tuple[Condition, ...] = ()

    def __init__(self, *, poke_interval: float = POKE_SECONDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.poke_interval = poke_interval

    def work(self, context: Context) -> Any:
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        return self.check(context)

    def check(
        self,
        context: Context,
        event: Any = None,
        *,
        waiting_for: str | None = None,
        deadline: str | None = None,
    ) -> Any:
        """Check the conditions; do the work once they hold. The triggerer calls it back after
        each wait, with the condition waited for and its deadline."""
        for condition in self.conditions:
            if self.holds(condition):
                continue
            timeout = float(getattr(self.tenant_config, condition.timeout_setting))
            if condition.name != waiting_for or deadline is None:
                deadline = (datetime.now(UTC) + timedelta(seconds=timeout)).isoformat()
            elif datetime.now(UTC) >= datetime.fromisoformat(deadline):
                with classified_failures():
                    raise PlatformFault(
                        f"waited {timeout:g}s for {condition.awaited}, in vain",
                        f"none needed if a retry sees it; otherwise check the tenant's "
                        f"storage, or raise the tenant's {condition.timeout_setting} in the "
                        "deployment config",
                    )
            self.log.info("waiting for %s (until %s)", condition.awaited, deadline)
            self.defer(
                trigger=TimeDeltaTrigger(timedelta(seconds=self.poke_interval)),
                method_name="check",
                kwargs={"waiting_for": condition.name, "deadline": deadline},
            )
        return self.work(context)

    def holds(self, condition: Condition) -> bool:
        try:
            found = self.store.exists(condition.key(JobLayout(self.job_id)))
        except StorageError as error:
            self.log.warning("storage does not answer: %s", error)
            return False
        return found or not condition.must_exist
