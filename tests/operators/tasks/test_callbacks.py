"""The failure callback: what the job record says once a task has failed for good, and who
hears of it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import pytest
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException

from devkit.s3_server import free_port
from operators.tasks.base import TrainyardOperator, classified_failures
from operators.tasks.callbacks import record_failure
from tests.support.notifications import smtp_connection, webhook_receiver
from trainyard.failures import (
    Hang,
    PlatformFault,
    Preemption,
    ResourceError,
    TrainyardFailure,
    UserError,
)
from trainyard.jobs.control import PAUSED
from trainyard.jobs.records import (
    AttemptInfo,
    JobRecord,
    JobState,
    load_record,
    save_record,
    update_record,
)
from trainyard.storage.local import LocalStore
from trainyard.tenancy.config import TenantConfig

JOB_ID = "acme.digits-mlp.20261124-215908-abcd"
STARTED = datetime(2026, 11, 24, tzinfo=UTC)


def failed_task(store: LocalStore, classes: list[str | None]) -> TrainyardOperator:
    save_record(
        store,
        JobRecord(
            job_id=JOB_ID,
            tenant="acme",
            dag_id="trainyard_acme",
            dag_run_id=JOB_ID,
            manifest={},
            attempts=[
                AttemptInfo(attempt=n, failure_class=kind, started_at=STARTED)
                for n, kind in enumerate(classes, start=1)
            ],
        ),
    )
    task = TrainyardOperator(task_id="learner", tenant="acme", job_id=JOB_ID)
    task.__dict__["store"] = store  # the cached property, without an Airflow connection
    return task


def call_back(task: TrainyardOperator, exception: object) -> None:
    """The failure callback, as Airflow calls it for a task of the job's first run."""
    record_failure(cast(Context, {"task": task, "exception": exception, "run_id": JOB_ID}))


def fail(task: TrainyardOperator, failure: TrainyardFailure) -> None:
    error = AirflowException(f"[{failure.failure_class.value}] {failure.cause}")
    error.__cause__ = failure
    call_back(task, error)


@pytest.mark.parametrize(
    ("classes", "failure", "expected"),
    [
        pytest.param(
            ["hang", "platform_fault", "hang", "hang"],
            Hang("no new metric or checkpoint for 600 s"),
            "[hang] no new metric or checkpoint for 600 s (hung on 3 of 4 attempts)",
            id="hang-says-how-many-attempts-hung",
        ),
        pytest.param(
            ["platform_fault"],
            PlatformFault("storage unavailable"),
            "[platform_fault] storage unavailable",
            id="other-classes-keep-their-message",
        ),
    ],
)
def test_the_record_gets_the_final_class_and_message(
    local_store: LocalStore, classes: list[str | None], failure: TrainyardFailure, expected: str
) -> None:
    fail(failed_task(local_store, classes), failure)

    record = load_record(local_store, JOB_ID)
    assert record is not None
    assert record.state is JobState.FAILED
    assert record.failure is not None
    assert record.failure.failure_class == failure.failure_class.value
    assert record.failure.message == expected


def test_the_failure_reaches_the_tenants_channels_and_a_dead_one_changes_nothing(
    local_store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = failed_task(local_store, ["user_error"])
    task.__dict__["tenant_config"] = TenantConfig.model_validate(
        {
            "name": "acme",
            "storage": {"kind": "local", "root": str(local_store.root)},
            "notifications": [
                {"kind": "email", "connection": "dead_smtp", "to": ["ml@example.com"]},
                {"kind": "slack", "connection": "trainyard_slack"},
            ],
        }
    )
    monkeypatch.setenv("AIRFLOW_CONN_DEAD_SMTP", smtp_connection(free_port()))
    with webhook_receiver() as hook:
        monkeypatch.setenv("AIRFLOW_CONN_TRAINYARD_SLACK", hook.connection())
        fail(task, UserError("ValueError: bad lr (train.py:3)", "correct train.py line 3"))

    record = load_record(local_store, JOB_ID)
    assert record is not None
    assert record.state is JobState.FAILED
    assert record.failure is not None
    assert record.failure.fix == "correct train.py line 3"
    [message] = hook.received
    assert "cause: ValueError: bad lr (train.py:3)" in message["text"]
    assert "fix: correct train.py line 3" in message["text"]


def test_a_job_whose_cancel_was_requested_ends_cancelled_and_nobody_is_told(
    local_store: LocalStore,
) -> None:
    task = failed_task(local_store, [None])
    record = load_record(local_store, JOB_ID)
    assert record is not None
    save_record(local_store, record.model_copy(update={"cancel_requested": True}))
    task.__dict__["tenant_config"] = TenantConfig.model_validate(
        {
            "name": "acme",
            "storage": {"kind": "local", "root": str(local_store.root)},
            "notifications": [{"kind": "slack", "connection": "trainyard_slack"}],
        }
    )
    with webhook_receiver() as hook, pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_TRAINYARD_SLACK", hook.connection())
        fail(task, PlatformFault("the learner got SIGTERM"))

    ended = load_record(local_store, JOB_ID)
    assert ended is not None
    assert ended.state is JobState.CANCELLED
    assert hook.received == []


def test_a_run_the_job_has_left_changes_nothing(local_store: LocalStore) -> None:
    """A paused job resumed in a new run before its stopped run's learner task ended: that
    task's failure is not the job's, which is queued in its new run."""
    task = failed_task(local_store, [PAUSED])
    resumed = update_record(
        local_store, JOB_ID, dag_run_id="resume__" + JOB_ID, state=JobState.QUEUED
    )

    fail(task, Preemption("the command was stopped by SIGTERM"))

    assert load_record(local_store, JOB_ID) == resumed


@pytest.mark.parametrize(
    "exception",
    [
        pytest.param(AirflowException("[user_error] a label in the text only"), id="untyped"),
        pytest.param("Task was killed externally", id="only-a-text"),
        pytest.param(None, id="nothing"),
    ],
)
def test_an_untyped_failure_is_recorded_as_a_platform_fault(
    local_store: LocalStore, exception: BaseException | str | None
) -> None:
    """The class comes from the typed failure only; without one, the one default."""
    task = failed_task(local_store, [])

    call_back(task, exception)

    record = load_record(local_store, JOB_ID)
    assert record is not None
    assert record.failure is not None
    assert record.failure.failure_class == "platform_fault"
    assert record.failure.fix  # the platform fault's: what to do if retries do not get past it


def test_the_class_and_fix_come_through_the_translation(local_store: LocalStore) -> None:
    task = failed_task(local_store, ["resource_error"])
    with pytest.raises(AirflowException) as raised, classified_failures():
        raise ResourceError("learner 0 used 2Gi", "raise resources.memory above 1Gi")

    call_back(task, raised.value)

    record = load_record(local_store, JOB_ID)
    assert record is not None
    assert record.failure is not None
    assert record.failure.failure_class == "resource_error"
    assert record.failure.fix == "raise resources.memory above 1Gi"
