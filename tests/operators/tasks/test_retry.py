"""The learner's retry budgets: preemptions never use up the platform-fault retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import RetryAction
from airflow.sdk.exceptions import AirflowException

from operators.tasks.base import classified_failures
from operators.tasks.retry import BUDGETED_CLASSES, LearnerRetryPolicy, TaskRetryPolicy
from trainyard.failures import (
    RESUME_FIX,
    RETRIED_CLASSES,
    FailureClass,
    Hang,
    InternalError,
    PlatformFault,
    Preemption,
    TrainyardFailure,
    UserError,
)
from trainyard.jobs.records import AttemptInfo, JobRecord, load_record, save_record, update_record
from trainyard.manifest.schema import MAX_TOTAL_RETRIES, MAX_USER_ERROR_RETRIES
from trainyard.storage.local import LocalStore

STARTED = datetime(2026, 11, 24, tzinfo=UTC)
POLICY = LearnerRetryPolicy(
    platform_retries=3, preemption_retries=2, hang_retries=2, base_delay=timedelta(seconds=5)
)
PREEMPTION, FAULT, HANG = (
    FailureClass.PREEMPTION,
    FailureClass.PLATFORM_FAULT,
    FailureClass.HANG,
)
JOB_ID = "acme.digits-mlp.20261124-215908-abcd"


def translated(failure: Exception) -> AirflowException:
    """The exception a task raises for `failure`: what the retry policy is handed."""
    with pytest.raises(AirflowException) as raised, classified_failures():
        raise failure
    return raised.value


def saved_record(
    store: LocalStore,
    classes: list[str],
    progressed: list[bool] | None = None,
    manifest: dict[str, Any] | None = None,
) -> SimpleNamespace:
    """A task whose job record lists attempts that ended as `classes` (and, per attempt,
    whether it advanced the committed checkpoint: by default none did)."""
    progress = progressed or [False] * len(classes)
    save_record(
        store,
        JobRecord(
            job_id=JOB_ID,
            tenant="acme",
            dag_id="trainyard_acme",
            dag_run_id=JOB_ID,
            manifest=manifest or {},
            attempts=[
                AttemptInfo(attempt=n, failure_class=kind, started_at=STARTED, progressed=p)
                for n, (kind, p) in enumerate(zip(classes, progress, strict=True), start=1)
            ],
        ),
    )
    return SimpleNamespace(store=store, job_id=JOB_ID)


def test_the_budgets_are_keyed_off_the_one_statement_of_retried_classes() -> None:
    """Every retried class has a budget (an internal error: every task's single retry); a class
    no retry gets past has none."""
    assert set(POLICY.budgets) | {FailureClass.INTERNAL_ERROR} == RETRIED_CLASSES
    assert FailureClass.INTERNAL_ERROR not in POLICY.budgets


@pytest.mark.parametrize(
    ("failure", "attempts", "action", "delay"),
    [
        pytest.param(
            Preemption("x"), {PREEMPTION: 1}, RetryAction.RETRY, 1, id="preemption-resumes-at-once"
        ),
        pytest.param(
            Preemption("x"),
            {PREEMPTION: 2, FAULT: 3},
            RetryAction.RETRY,
            1,
            id="preemption-ignores-fault-budget",
        ),
        pytest.param(
            Preemption("x"), {PREEMPTION: 3}, RetryAction.FAIL, None, id="preemption-budget-used"
        ),
        pytest.param(
            PlatformFault("x"), {FAULT: 1}, RetryAction.RETRY, 5, id="first-fault-base-delay"
        ),
        pytest.param(
            PlatformFault("x"),
            {PREEMPTION: 5, FAULT: 2},
            RetryAction.RETRY,
            10,
            id="backoff-doubles",
        ),
        pytest.param(
            PlatformFault("x"), {FAULT: 4}, RetryAction.FAIL, None, id="fault-budget-used"
        ),
        pytest.param(
            Hang("x"), {HANG: 2, FAULT: 3}, RetryAction.RETRY, 10, id="hang-has-its-own-budget"
        ),
        pytest.param(Hang("x"), {HANG: 3}, RetryAction.FAIL, None, id="hang-budget-used"),
        pytest.param(UserError("x"), {}, RetryAction.DEFAULT, None, id="user-error-untouched"),
    ],
)
def test_decision_per_failure_and_history(
    failure: TrainyardFailure,
    attempts: dict[FailureClass, int],
    action: RetryAction,
    delay: int | None,
) -> None:
    decision = POLICY.decide(failure, attempts)

    assert decision.action is action
    expected_delay = timedelta(seconds=delay) if delay is not None else None
    assert decision.retry_delay == expected_delay


def test_a_used_up_budget_says_how_many_attempts_ended_so_and_what_to_do() -> None:
    hang = Hang("x", RESUME_FIX)

    decision = POLICY.decide(hang, {HANG: 3})

    assert decision.reason == (
        "3 attempts in a row ended as hang without progress: its budget of 2 retries is used up"
    )
    assert hang.fix.startswith(
        "the job failed 3 times in a row as hang without progress (no new committed checkpoint; "
        "its budget is 2 retries): find what blocks in the learner log"
    )


def test_task_retries_are_the_cap_plus_the_user_error_retries() -> None:
    """A manifest's retries.user_errors never cut into the platform's budgets."""
    assert POLICY.total_retries == MAX_TOTAL_RETRIES + MAX_USER_ERROR_RETRIES


@pytest.mark.parametrize(
    ("progressed", "action"),
    [
        pytest.param([False, True, True, True], RetryAction.RETRY, id="progressing-between"),
        pytest.param([False] * 4, RetryAction.FAIL, id="without-progress"),
    ],
)
def test_a_job_sigkilled_four_times_is_retried_while_it_progresses(
    local_store: LocalStore, progressed: list[bool], action: RetryAction
) -> None:
    task = saved_record(local_store, ["platform_fault"] * 4, progressed)
    killed = PlatformFault("the command was killed by SIGKILL", RESUME_FIX)

    decision = POLICY.evaluate(
        translated(killed), try_number=4, max_tries=9, context={"task": task}
    )

    assert decision.action is action
    if action is RetryAction.FAIL:
        assert killed.fix.startswith("the job failed 4 times in a row as platform_fault without")
        assert "resubmit the job" in killed.fix
    else:
        assert killed.fix == RESUME_FIX


def test_the_manifests_total_cap_fails_a_job_that_progresses_forever(
    local_store: LocalStore,
) -> None:
    for attempts, action in ((5, RetryAction.RETRY), (6, RetryAction.FAIL)):
        task = saved_record(
            local_store,
            ["preemption"] * attempts,
            [True] * attempts,
            manifest={"retries": {"total": 5}},
        )
        evicted = Preemption("evicted", RESUME_FIX)

        decision = POLICY.evaluate(
            translated(evicted), try_number=attempts, max_tries=9, context={"task": task}
        )

        assert decision.action is action
    assert evicted.fix.startswith(
        "the job failed 6 times in all, more than its retries.total of 5: read each attempt's "
        "cause (trainyard status); resume the job (trainyard resume)"
    )


def test_without_a_total_in_the_manifest_the_cap_is_the_highest() -> None:
    progressing = dict.fromkeys(BUDGETED_CLASSES, 1)
    for retried, action in ((MAX_TOTAL_RETRIES, RetryAction.RETRY), (101, RetryAction.FAIL)):
        decision = POLICY.decide(Preemption("evicted"), progressing, retried=retried)
        assert decision.action is action


def test_evaluate_counts_the_attempts_in_the_job_record(local_store: LocalStore) -> None:
    task = saved_record(local_store, ["preemption", "preemption", "platform_fault"])
    error = translated(PlatformFault("learner 0 exited with code 137"))

    decision = POLICY.evaluate(error, try_number=3, max_tries=5, context={"task": task})

    assert decision.action is RetryAction.RETRY
    assert decision.retry_delay == timedelta(seconds=5)  # the first platform fault


@pytest.mark.parametrize(
    ("error", "recorded", "action"),
    [
        pytest.param(
            translated(Preemption("spot node reclaimed")),
            ["platform_fault"] * 4,
            RetryAction.RETRY,
            id="class-from-the-type",
        ),
        pytest.param(
            RuntimeError("[preemption] looks like a preemption"),
            ["platform_fault"] * 4,
            RetryAction.FAIL,
            id="untyped-is-a-platform-fault-whatever-its-text",
        ),
    ],
)
def test_evaluate_reads_the_class_from_the_typed_failure_never_the_message(
    local_store: LocalStore, error: BaseException, recorded: list[str], action: RetryAction
) -> None:
    task = saved_record(local_store, recorded)

    decision = POLICY.evaluate(error, try_number=5, max_tries=8, context={"task": task})

    assert decision.action is action


def test_evaluate_without_a_classified_cause_keeps_airflows_default() -> None:
    decision = POLICY.evaluate(RuntimeError("boom"), try_number=1, max_tries=5, context=None)

    assert decision.action is RetryAction.DEFAULT


def internal_error() -> AirflowException:
    error = translated(KeyError("x"))  # a bug in Trainyard's task code
    assert isinstance(error.__cause__, InternalError)
    return error


@pytest.mark.parametrize(
    ("try_number", "action"),
    [
        pytest.param(1, RetryAction.RETRY, id="first-internal-error-is-retried"),
        pytest.param(2, RetryAction.FAIL, id="after-any-earlier-try-it-is-not"),
    ],
)
def test_an_internal_error_is_retried_once_at_most(try_number: int, action: RetryAction) -> None:
    decision = TaskRetryPolicy().evaluate(internal_error(), try_number, max_tries=4)

    assert decision.action is action


@pytest.mark.parametrize(
    ("recorded", "action"),
    [
        pytest.param(["preemption"] * 2, RetryAction.RETRY, id="earlier-tries-other-classes"),
        pytest.param(["preemption"], RetryAction.RETRY, id="a-try-lost-to-a-crash-is-no-bug"),
        pytest.param(["internal_error", "preemption"], RetryAction.FAIL, id="an-earlier-bug"),
    ],
)
def test_the_learner_counts_earlier_internal_errors_from_the_job_record(
    local_store: LocalStore, recorded: list[str], action: RetryAction
) -> None:
    """A try that ended unrecorded was lost to a crash (its task process killed), not a bug;
    an internal error is recorded as the attempt's end, so that the next one is counted."""
    task = saved_record(local_store, recorded)

    decision = POLICY.evaluate(internal_error(), try_number=3, max_tries=8, context={"task": task})

    assert decision.action is action
    record = load_record(local_store, JOB_ID)
    assert record is not None
    assert record.attempts[-1].attempt == 3
    assert record.attempts[-1].failure_class == "internal_error"


def test_a_resumed_jobs_internal_error_is_its_own_attempt_and_earlier_runs_do_not_count(
    local_store: LocalStore,
) -> None:
    """After a resume (trainyard.jobs.control) the run's tries count on from the job's attempts:
    try 1 is attempt 3, and an internal error of the earlier run is not this run's."""
    task = saved_record(local_store, ["internal_error", "paused"])
    update_record(local_store, JOB_ID, attempt_offset=2)

    decision = POLICY.evaluate(internal_error(), try_number=1, max_tries=8, context={"task": task})

    assert decision.action is RetryAction.RETRY
    record = load_record(local_store, JOB_ID)
    assert record is not None
    assert [a.attempt for a in record.attempts] == [1, 2, 3]


def test_an_internal_error_of_a_superseded_attempt_is_not_recorded_nor_retried(
    local_store: LocalStore,
) -> None:
    """The orphan of try 1 fails after the retry (attempt 2) claimed the job: its end is
    refused, and no retry of it follows (fencing)."""
    task = saved_record(local_store, [])
    update_record(local_store, JOB_ID, current_attempt=2)

    decision = POLICY.evaluate(internal_error(), try_number=1, max_tries=8, context={"task": task})

    assert decision.action is RetryAction.FAIL
    assert "superseded by attempt 2" in str(decision.reason)
    record = load_record(local_store, JOB_ID)
    assert record is not None
    assert record.attempts == []
