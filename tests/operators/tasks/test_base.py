"""Failure translation: each failure class gets Airflow's retry semantics and keeps its cause."""

from __future__ import annotations

from typing import cast

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators.tasks.base import TrainyardOperator, classified_failures, failure_of_exception
from trainyard.failures import (
    FAILURE_TYPES,
    RETRIED_CLASSES,
    Deadline,
    FailureClass,
    Hang,
    InternalError,
    PlatformFault,
    Preemption,
    ResourceError,
    TrainyardFailure,
    UserError,
)
from trainyard.jobs.records import JobRecord, save_record
from trainyard.manifest.schema import ManifestError
from trainyard.storage import StorageError
from trainyard.storage.local import LocalStore

FAILURES = [
    pytest.param(
        UserError("train.py: NameError: name 'modle' is not defined", "fix the typo in train.py"),
        True,
        id="user-error-fails-fast",
    ),
    pytest.param(
        ResourceError("no node offers 4 GPUs of type a100", "ask for fewer GPUs"),
        True,
        id="resource-error-fails-fast",
    ),
    pytest.param(
        PlatformFault("learner 0 exited with code 137 without an outcome", "none needed"),
        False,
        id="platform-fault-is-retried",
    ),
    pytest.param(
        Preemption("the command stopped after SIGTERM", "none needed: resumes from a checkpoint"),
        False,
        id="preemption-is-retried",
    ),
    pytest.param(
        Hang("no output and no checkpoint for 30 minutes", "look for a deadlock"),
        False,
        id="hang-is-retried",
    ),
    pytest.param(
        InternalError("internal error in Trainyard: KeyError: 'x'", "report it"),
        False,
        id="internal-error-is-retried",
    ),
    pytest.param(
        Deadline("max_runtime ran out: the learners used 21s of the 20s allowed", "raise it"),
        True,
        id="deadline-fails-fast",
    ),
]


def test_the_table_covers_every_failure_class() -> None:
    failures = [cast(TrainyardFailure, param.values[0]) for param in FAILURES]
    assert {failure.failure_class for failure in failures} == set(FailureClass)
    assert set(FAILURE_TYPES) == set(FailureClass)


@pytest.mark.parametrize(("failure", "fails_fast"), FAILURES)
def test_failure_class_maps_to_retry_semantics(failure: TrainyardFailure, fails_fast: bool) -> None:
    with pytest.raises(AirflowException) as raised, classified_failures():
        raise failure

    assert isinstance(raised.value, AirflowFailException) is fails_fast
    assert failure.retried is (failure.failure_class in RETRIED_CLASSES) is not fails_fast
    # The class travels as the typed failure, for every reader.
    assert raised.value.__cause__ is failure
    assert failure_of_exception(raised.value) is failure
    message = str(raised.value)  # for people: class, cause and fix
    assert f"[{failure.failure_class.value}]" in message
    assert failure.cause in message
    assert f"Fix: {failure.fix}" in message


def test_failure_without_fix_has_no_empty_fix_text() -> None:
    with pytest.raises(AirflowFailException) as raised, classified_failures():
        raise UserError("the command exited with code 2")

    assert str(raised.value) == "[user_error] the command exited with code 2"


def test_invalid_manifest_fails_fast_naming_the_field() -> None:
    error = ManifestError([("resources.memory", "invalid quantity 'lots'")])

    with pytest.raises(AirflowFailException) as raised, classified_failures():
        raise error

    message = str(raised.value)
    assert "resources.memory: invalid quantity 'lots'" in message
    # The failure callback reads the class from __cause__: an invalid manifest is the user's.
    cause = raised.value.__cause__
    assert isinstance(cause, UserError)
    assert cause.failure_class is FailureClass.USER_ERROR
    assert "resources.memory" in cause.cause
    assert cause.__cause__ is error
    assert failure_of_exception(raised.value) is cause


def test_storage_outage_is_a_retryable_platform_fault() -> None:
    error = StorageError("cannot write 'jobs/x/job.json' in /srv/acme: No space left on device")

    with pytest.raises(AirflowException) as raised, classified_failures():
        raise error

    assert not isinstance(raised.value, AirflowFailException)
    failure = raised.value.__cause__
    assert isinstance(failure, PlatformFault)
    assert failure.__cause__ is error
    assert failure.cause.startswith("storage unavailable: ")
    assert "No space left on device" in failure.cause
    assert failure.fix


def test_an_unexpected_error_is_an_internal_error_with_its_traceback_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(AirflowException) as raised, classified_failures():
        raise KeyError("surprise")  # a bug in Trainyard's task code

    assert not isinstance(raised.value, AirflowFailException)  # the retry policy decides
    failure = raised.value.__cause__
    assert isinstance(failure, InternalError)
    assert str(raised.value).startswith(
        "[internal_error] internal error in Trainyard: KeyError: 'surprise'. Fix: "
    )
    assert "Traceback" in caplog.text
    assert "KeyError: 'surprise'" in caplog.text


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(RuntimeError("worker lost"), FailureClass.PLATFORM_FAULT, id="untyped"),
        pytest.param(
            AirflowException("task timed out"), FailureClass.PLATFORM_FAULT, id="airflow-own"
        ),
        pytest.param(None, FailureClass.PLATFORM_FAULT, id="no-exception"),
        pytest.param("Task was killed", FailureClass.PLATFORM_FAULT, id="only-a-text"),
        pytest.param(
            ManifestError([("name", "required")]), FailureClass.USER_ERROR, id="manifest-error"
        ),
        pytest.param(Hang("no progress", ""), FailureClass.HANG, id="raised-bare"),
    ],
)
def test_failure_of_exception_reads_the_class_from_the_type_with_one_default(
    error: BaseException | str | None, expected: FailureClass
) -> None:
    """An unknown cause is a platform fault (a retry is the safe side), never parsed from text."""
    failure = failure_of_exception(error)

    assert failure.failure_class is expected
    if isinstance(error, str):
        assert failure.cause == error
    elif error is not None and not isinstance(error, TrainyardFailure | ManifestError):
        assert failure.__cause__ is error
        assert type(error).__name__ in failure.cause


def test_failure_of_exception_ignores_a_class_written_in_the_message() -> None:
    """A message that looks like a class label is text, not a class."""
    wrapped = AirflowException("[user_error] looks like the user's")
    wrapped.__cause__ = Preemption("spot node reclaimed", "none needed")

    assert failure_of_exception(wrapped).failure_class is FailureClass.PREEMPTION
    assert failure_of_exception(RuntimeError("[user_error] text")).failure_class is (
        FailureClass.PLATFORM_FAULT
    )


def test_airflow_exceptions_pass_through() -> None:
    with pytest.raises(AirflowFailException, match="no retry"), classified_failures():
        raise AirflowFailException("no retry")


def test_success_raises_nothing() -> None:
    with classified_failures():
        result = 42

    assert result == 42


def task_of(store: LocalStore, job_id: str = "acme.digits-mlp.run-1") -> TrainyardOperator:
    task = TrainyardOperator(task_id="stage_data", tenant="acme", job_id=job_id)
    task.__dict__["store"] = store  # the cached property, without an Airflow connection
    return task


def test_a_missing_job_record_is_a_retryable_platform_fault(local_store: LocalStore) -> None:
    with pytest.raises(AirflowException) as raised:
        task_of(local_store).load_job()

    assert not isinstance(raised.value, AirflowFailException)
    failure = raised.value.__cause__
    assert isinstance(failure, PlatformFault)
    assert failure.cause.startswith("job record of acme.digits-mlp.run-1 is missing from ")
    assert "validate task" in failure.fix


def test_a_recorded_manifest_that_no_longer_parses_is_a_user_error(
    local_store: LocalStore,
) -> None:
    job_id = "acme.digits-mlp.run-1"
    record = JobRecord(
        job_id=job_id, tenant="acme", dag_id="d", dag_run_id="r", manifest={"name": 1}
    )
    save_record(local_store, record)

    with pytest.raises(AirflowFailException) as raised:
        task_of(local_store, job_id).load_job()

    assert isinstance(raised.value.__cause__, UserError)
