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

from operators.tasks.base import TrainyardOperator, classified_failures
from operators.triggers.deferral import DEFER_SETTLE_SECONDS
from trainyard.failures import PlatformFault
from trainyard.jobs.layout import JobLayout
from trainyard.storage import StorageError

#: Seconds between two checks of a sensor's condition: no sooner than a deferral settles.
POKE_SECONDS = DEFER_SETTLE_SECONDS


class TrainyardSensor(TrainyardOperator):
    """Wait, deferred, until `ready()`, at most `timeout_seconds()` from the first check."""

    #: What the sensor waits for, for the log and the failure message.
    awaited: str = ""
    #: The tenant setting that bounds the wait, for the failure's fix.
    timeout_setting: str = ""

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
            with classified_failures():
                raise PlatformFault(
                    f"waited {self.timeout_seconds():g}s for {self.awaited}, in vain",
                    f"none needed if a retry sees it; otherwise check the tenant's storage, or "
                    f"raise the tenant's {self.timeout_setting} in the deployment config",
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
    timeout_setting = "storage_wait_timeout"

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
    timeout_setting = "publish_wait_timeout"

    def ready(self) -> bool:
        try:
            return self.store.exists(JobLayout(self.job_id).results_manifest)
        except StorageError as error:
            self.log.warning("storage does not answer: %s", error)
            return False

    def timeout_seconds(self) -> float:
        return self.tenant_config.publish_wait_timeout
