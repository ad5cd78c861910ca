"""The outcome file: what the runtime writes is what the learner task reads back."""

from __future__ import annotations

import signal

import pytest

from trainyard.failures import (
    RESUME_FIX,
    RESUMES,
    FailureClass,
    Hang,
    InternalError,
    PlatformFault,
    Preemption,
    ResourceError,
    UserError,
)
from trainyard.runtime.outcome import Outcome
from trainyard.runtime.process import Finished


@pytest.mark.parametrize(
    "outcome",
    [
        pytest.param(Outcome(exit_code=0, signal=None), id="succeeded"),
        pytest.param(Outcome(1, None, UserError("boom (train.py:3)", "fix line 3")), id="user"),
        pytest.param(Outcome(None, 9, ResourceError("OOM", "raise memory")), id="resource"),
        pytest.param(Outcome(75, None, PlatformFault("storage down", RESUME_FIX)), id="platform"),
        pytest.param(Outcome(143, None, Preemption("SIGTERM", RESUME_FIX)), id="preemption"),
        pytest.param(Outcome(None, 15, Hang("no progress", "raise watchdog")), id="hang"),
        pytest.param(Outcome(1, None, InternalError("bug", "report it")), id="internal"),
    ],
)
def test_an_outcome_reads_back_as_it_was_written(outcome: Outcome) -> None:
    read = Outcome.from_json(outcome.to_json())

    assert (read.exit_code, read.signal) == (outcome.exit_code, outcome.signal)
    assert type(read.failure) is type(outcome.failure)
    if outcome.failure is not None:
        assert read.failure is not None
        assert (read.failure.cause, read.failure.fix) == (
            outcome.failure.cause,
            outcome.failure.fix,
        )
    assert read.runtime_exit_code == outcome.runtime_exit_code


def test_a_failure_class_this_version_does_not_know_is_a_platform_fault() -> None:
    document = {**Outcome(1, None, UserError("x")).to_json(), "failure_class": "cosmic_ray"}

    failure = Outcome.from_json(document).failure

    assert isinstance(failure, PlatformFault)
    assert failure.failure_class is FailureClass.PLATFORM_FAULT
    assert failure.cause == "x"


def test_an_older_outcome_without_a_fix_reads_with_an_empty_one() -> None:
    document = {"exit_code": 1, "signal": None, "failure_class": "user_error", "message": "x"}

    failure = Outcome.from_json(document).failure

    assert isinstance(failure, UserError)
    assert (failure.cause, failure.fix) == ("x", "")


@pytest.mark.parametrize(
    ("sig", "hint"),
    [
        (signal.SIGKILL, "raise resources.memory"),
        (signal.SIGABRT, "SIGABRT is a crash in native code: its last output is in logs/l.log"),
        (signal.SIGSEGV, "SIGSEGV is a crash in native code"),
    ],
)
def test_a_signal_the_runtime_did_not_send_is_a_platform_fault_with_its_own_hint(
    sig: signal.Signals, hint: str
) -> None:
    finished = Finished(returncode=-sig, stop_signal=None, tail=["terminate called"])

    failure = Outcome.of(finished, learner_log="logs/l.log").failure

    assert isinstance(failure, PlatformFault)
    assert f"killed by {sig.name}" in failure.cause
    assert hint in failure.fix
    assert failure.fix.endswith(RESUMES)
    assert sig == signal.SIGKILL or "memory" not in failure.fix


@pytest.mark.parametrize(
    ("stop_signal", "received", "whence"),
    [
        pytest.param(signal.SIGTERM, frozenset(), "the runtime forwarded it", id="forwarded"),
        pytest.param(None, frozenset({signal.SIGTERM}), "its process group", id="sent-to-it"),
    ],
)
def test_exit_0_after_a_stop_is_a_preemption_not_success(
    stop_signal: int | None, received: frozenset[int], whence: str
) -> None:
    finished = Finished(returncode=0, stop_signal=stop_signal, tail=[], received=received)

    outcome = Outcome.of(finished)

    assert not outcome.succeeded
    assert isinstance(outcome.failure, Preemption)
    assert "exited with code 0 after SIGTERM" in outcome.failure.cause
    assert whence in outcome.failure.cause
    assert outcome.failure.fix == RESUME_FIX


def test_exit_0_without_a_stop_is_success() -> None:
    outcome = Outcome.of(Finished(returncode=0, stop_signal=None, tail=[]))

    assert outcome.succeeded


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(
            [
                "Traceback (most recent call last):",
                '  File "/w/code/train.py", line 9, in <module>',
                "OSError: [Errno 28] No space left on device",
            ],
            id="python",
        ),
        pytest.param(["tar: model.tar: Cannot write: No space left on device"], id="a-tool"),
    ],
)
def test_a_full_disk_in_user_code_is_a_platform_fault_with_a_fix(tail: list[str]) -> None:
    outcome = Outcome.of(Finished(returncode=1, stop_signal=None, tail=tail))

    assert isinstance(outcome.failure, PlatformFault)
    assert outcome.failure.cause.startswith("the learner's disk is full: the command failed with")
    assert "free space on the learners' scratch disk" in outcome.failure.fix
