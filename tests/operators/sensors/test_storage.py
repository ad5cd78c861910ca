"""The storage sensors: check, defer while the condition does not hold, fail past the timeout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from operators.sensors.storage import ModelPublishedSensor, StorageAvailableSensor, TrainyardSensor
from operators.tasks.base import failure_of_exception
from trainyard.failures import PlatformFault
from trainyard.jobs.layout import JobLayout
from trainyard.storage import StorageError
from trainyard.storage.local import LocalStore
from trainyard.tenancy.config import TenantConfig

JOB_ID = "acme.digits.20261202-010000-abcd"
CONTEXT = cast(Context, {"ti": SimpleNamespace(try_number=1)})


class DownStore(LocalStore):
    """Storage in an outage: every request fails as the S3 store's exhausted retries do."""

    def exists(self, key: str) -> bool:
        raise StorageError(f"cannot reach storage for {key}: connection refused")


def sensor(kind: type[TrainyardSensor], store: LocalStore, **timeouts: float) -> TrainyardSensor:
    task = kind(task_id="wait", tenant="acme", job_id=JOB_ID, poke_interval=2)
    task.store = store
    task.tenant_config = TenantConfig.model_validate(
        {"name": "acme", "storage": {"kind": "local", "root": "/tmp"}, **timeouts}
    )
    return task


SENSORS = [
    pytest.param(StorageAvailableSensor, False, id="storage-answers"),
    pytest.param(ModelPublishedSensor, True, id="model-published"),
]


@pytest.mark.parametrize(("kind", "needs_model"), SENSORS)
def test_a_sensor_whose_condition_holds_succeeds_at_once(
    tmp_path: Path, kind: type[TrainyardSensor], needs_model: bool
) -> None:
    store = LocalStore(tmp_path)
    if needs_model:
        store.put_json(JobLayout(JOB_ID).results_manifest, {"files": {}})

    sensor(kind, store).execute(CONTEXT)  # returns: no deferral


@pytest.mark.parametrize(
    ("kind", "store_type", "timeout_field"),
    [
        pytest.param(StorageAvailableSensor, DownStore, "storage_wait_timeout", id="outage"),
        pytest.param(ModelPublishedSensor, LocalStore, "publish_wait_timeout", id="unpublished"),
        pytest.param(
            ModelPublishedSensor, DownStore, "publish_wait_timeout", id="outage-at-commit"
        ),
    ],
)
def test_a_sensor_defers_until_the_tenants_timeout_then_fails_as_a_platform_fault(
    tmp_path: Path, kind: type[TrainyardSensor], store_type: type[LocalStore], timeout_field: str
) -> None:
    task = sensor(kind, store_type(tmp_path), **{timeout_field: 90})
    started = datetime.now(UTC)

    with pytest.raises(TaskDeferred) as deferred:
        task.execute(CONTEXT)

    assert deferred.value.method_name == "check"
    assert deferred.value.kwargs is not None
    deadline = datetime.fromisoformat(deferred.value.kwargs["deadline"])
    assert started + timedelta(seconds=90) <= deadline <= datetime.now(UTC) + timedelta(seconds=90)
    trigger: Any = deferred.value.trigger  # the triggerer waits the poke interval
    assert trigger.moment - datetime.now(UTC) <= timedelta(seconds=2)
    with pytest.raises(TaskDeferred):  # called back before the deadline: waits again
        task.check(CONTEXT, None, deadline=deadline.isoformat())
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    with pytest.raises(AirflowException) as failed:
        task.check(CONTEXT, None, deadline=past)
    assert not isinstance(failed.value, AirflowFailException)  # retried as a platform fault
    failure = failed.value.__cause__
    assert isinstance(failure, PlatformFault)
    assert failure_of_exception(failed.value) is failure
    assert failure.cause == f"waited 90s for {task.awaited}, in vain"
    assert f"raise the tenant's {timeout_field}" in failure.fix


def test_a_sensor_called_back_once_storage_is_back_succeeds(tmp_path: Path) -> None:
    task = sensor(StorageAvailableSensor, LocalStore(tmp_path))
    future = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()

    task.check(CONTEXT, None, deadline=future)  # returns: no deferral
