"""Failure translation: each failure class gets Airflow's retry semantics and keeps its cause."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators.base import classified_failures
from trainyard.failures import (
    FailureClass,
    Hang,
    InternalError,
    PlatformFault,
    Preemption,
    ResourceError,
    TrainyardFailure,
    UserError,
)
from trainyard.manifest.schema import ManifestError
from trainyard.storage import StorageError

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
]


@pytest.mark.parametrize(("failure", "fails_fast"), FAILURES)
def test_failure_class_maps_to_retry_semantics(failure: TrainyardFailure, fails_fast: bool) -> None:
    with pytest.raises(AirflowException) as raised, classified_failures():
        raise failure

    assert isinstance(raised.value, AirflowFailException) is fails_fast
    assert raised.value.__cause__ is failure
    message = str(raised.value)
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
    assert "[user_error]" in message
    # The failure callback reads the class from __cause__: an invalid manifest is the user's.
    cause = raised.value.__cause__
    assert isinstance(cause, UserError)
    assert cause.failure_class is FailureClass.USER_ERROR
    assert "resources.memory" in cause.cause


def test_storage_outage_is_a_retryable_platform_fault() -> None:
    error = StorageError("cannot write 'jobs/x/job.json' in /srv/acme: No space left on device")

    with pytest.raises(AirflowException) as raised, classified_failures():
        raise error

    assert not isinstance(raised.value, AirflowFailException)
    assert raised.value.__cause__ is error
    assert "[platform_fault]" in str(raised.value)
    assert "No space left on device" in str(raised.value)


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


def test_airflow_exceptions_pass_through() -> None:
    with pytest.raises(AirflowFailException, match="no retry"), classified_failures():
        raise AirflowFailException("no retry")


def test_success_raises_nothing() -> None:
    with classified_failures():
        result = 42

    assert result == 42
