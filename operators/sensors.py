"""Sensors where waiting beats failing: the tenant's storage answers, the model is published.

A storage outage before staging or before commit would otherwise spend the task's retries (a
platform fault each), and an object store that shows a just-written object late would fail
the commit. Each sensor checks on a worker and, while its condition does not hold, defers for
`poke_interval` seconds (the triggerer waits, no worker slot is held), until the tenant's
timeout for it; past that it fails as a platform fault, retried as such.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException

from operators.base import TrainyardOperator
from operators.deferral import DEFER_SETTLE_SECONDS
from trainyard.jobs.checkpoints import MANIFEST
from trainyard.jobs.layout import JobLayout
from trainyard.storage import StorageError, join_key

#: Seconds between two checks of a sensor's condition: no sooner than a deferral settles.
POKE_SECONDS = DEFER_SETTLE_SECONDS


class TrainyardSensor(TrainyardOperator):
    """Wait, deferred, until `ready()`, at most `timeout_seconds()` from the first check."""

    #: What the sensor waits for, for the log and the failure message.
    awaited: str = ""

    def __init__(self, *, poke_interval: float = POKE_SECONDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.poke_interval = poke_interval

    def ready(self) -> bool:
        raise NotImplementedError

    def timeout_seconds(self) -> float:
        raise NotImplementedError

    def execute(self, context: Context) -> None:
        deadline = datetime.now(UTC) + timedelta(seconds=self.timeout_seconds())
        self.check(context, deadline=deadline.isoformat())

    def check(self, context: Context, event: Any = None, *, deadline: str) -> None:
        """One check; the triggerer calls it back after each wait (`deadline` kept)."""
        if self.ready():
            return
        if datetime.now(UTC) >= datetime.fromisoformat(deadline):
            raise AirflowException(
                f"[platform_fault] {self.awaited} within {self.timeout_seconds():g}s"
            )
        self.log.info("waiting for %s (until %s)", self.awaited, deadline)
        self.defer(
            trigger=TimeDeltaTrigger(timedelta(seconds=self.poke_interval)),
            method_name="check",
            kwargs={"deadline": deadline},
        )


class StorageAvailableSensor(TrainyardSensor):
    """The tenant's storage answers: a request gets a reply (the job record is read)."""

    awaited = "the tenant's storage to answer"

    def ready(self) -> bool:
        try:
            self.store.exists(JobLayout(self.job_id).record)
        except StorageError as error:
            self.log.warning("storage does not answer: %s", error)
            return False
        return True

    def timeout_seconds(self) -> float:
        return self.tenant_config.storage_wait_timeout


class ModelPublishedSensor(TrainyardSensor):
    """The results manifest the learner published last is visible in storage."""

    awaited = "the learner's published results manifest to be visible"

    def ready(self) -> bool:
        try:
            return self.store.exists(join_key(JobLayout(self.job_id).results, MANIFEST))
        except StorageError as error:
            self.log.warning("storage does not answer: %s", error)
            return False

    def timeout_seconds(self) -> float:
        return self.tenant_config.publish_wait_timeout
