"""Tasks that wait first: each condition is checked, the task defers while one does not hold,
fails as a platform fault past that condition's timeout, and does its work once all hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar, cast

import pytest
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from operators.tasks.base import failure_of_exception
from operators.tasks.commit import CommitModelOperator
from operators.tasks.stage_data import StageDataOperator
from operators.tasks.waiting import MODEL_PUBLISHED, STORAGE_ANSWERS, WaitingOperator
from trainyard.failures import PlatformFault
from trainyard.jobs.layout import JobLayout
from trainyard.storage import ObjectStore, StorageError
from trainyard.storage.local import LocalStore
from trainyard.tenancy.config import TenantConfig

JOB_ID = "acme.digits.20261202-010000-abcd"
Waiting = TypeVar("Waiting", bound=WaitingOperator)
CONTEXT = cast(Context, {"ti": SimpleNamespace(try_number=1)})


class DownStore(LocalStore):
    """Storage in an outage: every request fails as the S3 store's exhausted retries do."""

    def exists(self, key: str) -> bool:
        raise StorageError(f"cannot reach storage for {key}: connection refused")


class Publishing(WaitingOperator):
    """A commit's waits, whose work only says it ran."""

    conditions = (STORAGE_ANSWERS, MODEL_PUBLISHED)

    def work(self, context: Context) -> str:
        return "worked"


def waiting(kind: type[Waiting], store: LocalStore, **timeouts: float) -> Waiting:
    task = kind(task_id="wait", tenant="acme", job_id=JOB_ID, poke_interval=2)
    task.store = store
    task.tenant_config = TenantConfig.model_validate(
        {"name": "acme", "storage": {"kind": "local", "root": "/tmp"}, **timeouts}
    )
    return task


def publish(store: ObjectStore) -> None:
    store.put_json(JobLayout(JOB_ID).results_manifest, {"files": {}})


def deferral(call: Any) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as deferred:
        call()
    return deferred.value


def test_a_task_whose_conditions_hold_does_its_work_at_once(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    publish(store)

    assert waiting(Publishing, store).execute(CONTEXT) == "worked"  # no deferral


@pytest.mark.parametrize(
    ("store_type", "waits_for", "timeout_field"),
    [
        pytest.param(DownStore, "storage", "storage_wait_timeout", id="outage"),
        pytest.param(LocalStore, "published", "publish_wait_timeout", id="unpublished"),
    ],
)
def test_a_task_defers_until_the_conditions_timeout_then_fails_as_a_platform_fault(
    tmp_path: Path, store_type: type[LocalStore], waits_for: str, timeout_field: str
) -> None:
    task = waiting(Publishing, store_type(tmp_path), **{timeout_field: 90})
    started = datetime.now(UTC)

    deferred = deferral(lambda: task.execute(CONTEXT))

    assert deferred.method_name == "check"
    assert deferred.kwargs is not None
    assert deferred.kwargs["waiting_for"] == waits_for
    deadline = datetime.fromisoformat(deferred.kwargs["deadline"])
    assert started + timedelta(seconds=90) <= deadline <= datetime.now(UTC) + timedelta(seconds=90)
    trigger: Any = deferred.trigger  # the triggerer waits the poke interval
    assert trigger.moment - datetime.now(UTC) <= timedelta(seconds=2)
    again = deferral(lambda: task.check(CONTEXT, None, **deferred.kwargs))  # before the deadline
    assert again.kwargs == deferred.kwargs  # the same deadline
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    with pytest.raises(AirflowException) as failed:
        task.check(CONTEXT, None, waiting_for=waits_for, deadline=past)
    assert not isinstance(failed.value, AirflowFailException)  # retried as a platform fault
    failure = failed.value.__cause__
    assert isinstance(failure, PlatformFault)
    assert failure_of_exception(failed.value) is failure
    condition = STORAGE_ANSWERS if waits_for == "storage" else MODEL_PUBLISHED
    assert failure.cause == f"waited 90s for {condition.awaited}, in vain"
    assert f"raise the tenant's {timeout_field}" in failure.fix


def test_each_condition_gets_its_own_deadline_when_the_wait_moves_on(tmp_path: Path) -> None:
    """Storage came back after a long outage: the wait for the published results starts its
    own timeout there, and is not failed by the storage wait's deadline."""
    task = waiting(Publishing, LocalStore(tmp_path), publish_wait_timeout=60)
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()

    deferred = deferral(lambda: task.check(CONTEXT, None, waiting_for="storage", deadline=past))

    assert deferred.kwargs is not None
    assert deferred.kwargs["waiting_for"] == "published"
    assert datetime.fromisoformat(deferred.kwargs["deadline"]) > datetime.now(UTC)
    publish(task.store)
    assert task.check(CONTEXT, None, **deferred.kwargs) == "worked"


def test_stage_data_waits_for_storage_to_answer(tmp_path: Path) -> None:
    deferred = deferral(lambda: waiting(StageDataOperator, DownStore(tmp_path)).execute(CONTEXT))

    assert deferred.kwargs is not None
    assert deferred.kwargs["waiting_for"] == "storage"


def test_the_commit_waits_for_storage_then_for_the_published_results(tmp_path: Path) -> None:
    down = deferral(lambda: waiting(CommitModelOperator, DownStore(tmp_path)).execute(CONTEXT))
    unpublished = deferral(
        lambda: waiting(CommitModelOperator, LocalStore(tmp_path)).execute(CONTEXT)
    )

    assert down.kwargs is not None
    assert unpublished.kwargs is not None
    assert (down.kwargs["waiting_for"], unpublished.kwargs["waiting_for"]) == (
        "storage",
        "published",
    )
