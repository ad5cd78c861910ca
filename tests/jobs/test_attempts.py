"""One attempt judged from its learners' ends and outcome files, and recorded."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from trainyard.backends import OOM_KILLED, LearnerEnd, LearnerExit, LearnerSpec, RunMode
from trainyard.backends.base import GANG_STOPPED
from trainyard.failures import (
    FailureClass,
    Hang,
    PlatformFault,
    Preemption,
    ResourceError,
    TrainyardFailure,
    UserError,
)
from trainyard.jobs.attempts import (
    claim_attempt,
    faults_in_a_row,
    judge_attempt,
    record_attempt,
    record_evaluation,
)
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.fencing import Superseded
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.records import AttemptInfo, JobRecord, load_record, save_record
from trainyard.runtime.outcome import Outcome
from trainyard.storage.config import LocalStorageConfig
from trainyard.storage.local import LocalStore

JOB_ID = "acme.digits-mlp.20261124-215908-abcd"
ATTEMPT = 2

SUCCEEDED = Outcome(exit_code=0, signal=None)
USER_ERROR = Outcome(
    exit_code=1,
    signal=None,
    failure=UserError(
        "the command failed with ZeroDivisionError: division by zero (train.py:12)",
        "fix the code at the place named (the whole traceback: see the learner log at "
        "jobs/.../learner-train-attempt-1-rank-0.log)",
    ),
)
PREEMPTED = Outcome(
    exit_code=143,
    signal=None,
    failure=Preemption(
        "the command exited with code 143 after SIGTERM: the runtime forwarded it (cancel, "
        "preemption or eviction)",
        "none needed: a retry resumes from the newest committed checkpoint",
    ),
)
HUNG = Outcome(
    exit_code=None,
    signal=9,
    failure=Hang("no progress for 30 minutes", "look for a deadlock in the data loader"),
)


def attempt_spec(mode: RunMode, attempt: int = ATTEMPT, num_learners: int = 1) -> LearnerSpec:
    """The spec of one attempt, as the learner task builds it (only identity matters here)."""
    return LearnerSpec(
        job_id=JOB_ID,
        tenant="acme",
        mode=mode,
        command="python train.py",
        attempt=attempt,
        num_learners=num_learners,
        checkpoint_interval=10.0,
        checkpoint_keep=3,
        storage=LocalStorageConfig(root=Path("unused")),
        work_dir=Path("unused"),
        cpus=1.0,
        memory_bytes=2 * 2**30,
        gpus=0,
        watchdog=0.0,
        watchdog_startup=0.0,
    )


def ends(*codes: int) -> list[LearnerEnd]:
    """Each rank's end as a process backend reports it: its exit code."""
    return [LearnerEnd(rank, LearnerExit(code)) for rank, code in enumerate(codes)]


def write_outcomes(store: LocalStore, mode: RunMode, outcomes: list[Outcome | None]) -> None:
    """Write each learner's outcome file where the runtime writes it (None: no file)."""
    layout = JobLayout(JOB_ID)
    for rank, outcome in enumerate(outcomes):
        if outcome is not None:
            store.put_json(layout.outcome(mode, ATTEMPT, rank), outcome.to_json())


CASES = [
    pytest.param(RunMode.TRAIN, [SUCCEEDED], [0], None, [], id="success-is-no-failure"),
    pytest.param(
        RunMode.TRAIN,
        [USER_ERROR],
        [1],
        UserError,
        ["learner 0", "ZeroDivisionError: division by zero"],
        id="user-error-outcome-is-a-user-error",
    ),
    pytest.param(
        RunMode.TRAIN,
        [PREEMPTED],
        [143],
        Preemption,
        ["learner 0", "after SIGTERM: the runtime forwarded it"],
        id="preemption-outcome-is-a-preemption",
    ),
    pytest.param(RunMode.TRAIN, [HUNG], [137], Hang, ["no progress"], id="hang-outcome-is-a-hang"),
    pytest.param(
        RunMode.TRAIN,
        [None],
        [137],
        PlatformFault,
        ["learner 0", "code 137", "without reporting an outcome"],
        id="missing-outcome-with-failed-exit-is-a-platform-fault",
    ),
    pytest.param(RunMode.TRAIN, [None], [0], None, [], id="missing-outcome-with-exit-0-is-fine"),
    pytest.param(
        RunMode.TRAIN,
        [SUCCEEDED],
        [75],
        PlatformFault,
        ["learner 0", "reported success but exited with code 75"],
        id="reported-success-with-failed-exit-is-a-platform-fault",
    ),
    pytest.param(
        RunMode.TRAIN,
        [SUCCEEDED, USER_ERROR, SUCCEEDED],
        [0, 1, 0],
        UserError,
        ["learner 1:", "ZeroDivisionError"],
        id="multi-rank-names-the-failed-learner",
    ),
    pytest.param(
        RunMode.TRAIN,
        [SUCCEEDED, None],
        [0, -9],
        PlatformFault,
        ["learner 1 exited with code -9"],
        id="multi-rank-names-the-learner-without-outcome",
    ),
    pytest.param(
        RunMode.EVALUATE,
        [USER_ERROR],
        [1],
        UserError,
        ["ZeroDivisionError"],
        id="evaluate-mode-reads-the-evaluate-outcome",
    ),
]


@pytest.mark.parametrize(("mode", "outcomes", "exit_codes", "expected", "fragments"), CASES)
def test_judge_attempt_classifies_the_attempt(
    local_store: LocalStore,
    mode: RunMode,
    outcomes: list[Outcome | None],
    exit_codes: list[int],
    expected: type[TrainyardFailure] | None,
    fragments: list[str],
) -> None:
    write_outcomes(local_store, mode, outcomes)

    spec = attempt_spec(mode, num_learners=len(exit_codes))
    failure = judge_attempt(local_store, spec, ends(*exit_codes))

    if expected is None:
        assert failure is None
        return
    assert type(failure) is expected
    assert failure is not None
    for fragment in fragments:
        assert fragment in failure.cause
    reported = [o.failure for o in outcomes if o is not None and o.failure is not None]
    if reported:  # the fix the learner reported reaches the user unchanged
        assert failure.fix == reported[0].fix


def test_outcome_of_another_attempt_is_not_read(local_store: LocalStore) -> None:
    layout = JobLayout(JOB_ID)
    local_store.put_json(layout.outcome(RunMode.TRAIN, ATTEMPT - 1, 0), USER_ERROR.to_json())

    failure = judge_attempt(local_store, attempt_spec(RunMode.TRAIN), ends(137))

    assert isinstance(failure, PlatformFault)


def test_training_outcome_is_not_read_for_evaluation(local_store: LocalStore) -> None:
    write_outcomes(local_store, RunMode.TRAIN, [USER_ERROR])

    failure = judge_attempt(local_store, attempt_spec(RunMode.EVALUATE), ends(1))

    assert isinstance(failure, PlatformFault)


def test_oom_killed_by_the_backend_is_a_resource_error_naming_the_limit(
    local_store: LocalStore,
) -> None:
    """The runtime only saw SIGKILL (a platform fault); the backend knows it was memory."""
    killed = Outcome(exit_code=None, signal=9, failure=PlatformFault("killed by SIGKILL", ""))
    write_outcomes(local_store, RunMode.TRAIN, [killed])

    failure = judge_attempt(
        local_store, attempt_spec(RunMode.TRAIN), [LearnerEnd(0, LearnerExit(137, OOM_KILLED))]
    )

    assert isinstance(failure, ResourceError)
    assert "resources.memory = 2Gi" in failure.cause
    assert "raise resources.memory above 2Gi" in failure.fix


def test_ranks_stopped_for_the_gang_are_judged_after_the_rank_that_failed(
    local_store: LocalStore,
) -> None:
    """Rank 0 was stopped (its SIGTERM is a preemption in its outcome) because rank 1 failed."""
    write_outcomes(local_store, RunMode.TRAIN, [PREEMPTED, USER_ERROR])
    gang = [
        LearnerEnd(0, LearnerExit(143, GANG_STOPPED)),
        LearnerEnd(1, LearnerExit(1)),
    ]

    failure = judge_attempt(local_store, attempt_spec(RunMode.TRAIN, num_learners=2), gang)

    assert isinstance(failure, UserError)
    assert failure.cause.startswith("learner 1:")


def test_the_backends_own_view_comes_before_the_outcomes(local_store: LocalStore) -> None:
    """A pod the backend saw evicted is a preemption, whatever the learner wrote before."""
    write_outcomes(local_store, RunMode.TRAIN, [USER_ERROR])
    evicted = Preemption("the learner pod was evicted: node pressure", "none needed")

    failure = judge_attempt(
        local_store,
        attempt_spec(RunMode.TRAIN),
        [LearnerEnd(0, LearnerExit(1), failure=evicted)],
    )

    assert failure is evicted


@pytest.mark.parametrize(
    ("unseen", "expected"),
    [
        pytest.param(None, None, id="backend-saw-success"),
        pytest.param(
            PlatformFault("the pod vanished", "none needed"),
            PlatformFault,
            id="backend-saw-an-error",
        ),
    ],
)
def test_a_learner_whose_end_went_unseen_fails_the_attempt_only_as_the_backend_says(
    local_store: LocalStore, unseen: TrainyardFailure | None, expected: type | None
) -> None:
    write_outcomes(local_store, RunMode.TRAIN, [SUCCEEDED])
    spec = attempt_spec(RunMode.TRAIN, num_learners=2)

    failure = judge_attempt(local_store, spec, [LearnerEnd(0, LearnerExit(0))], unseen)

    assert failure is unseen
    assert (failure is None) == (expected is None)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        pytest.param(PREEMPTED, Preemption, id="deleted-pod-stopped-gracefully"),
        pytest.param(SUCCEEDED, None, id="finished-before-its-pod-went"),
        pytest.param(None, PlatformFault, id="killed-without-an-outcome"),
    ],
)
def test_a_learner_whose_pod_went_unseen_is_judged_by_the_outcome_it_wrote(
    local_store: LocalStore, outcome: Outcome | None, expected: type | None
) -> None:
    """A deleted or drained pod is gone before the task reads its status: the runtime's
    outcome (SIGTERM: a preemption) is how it ended, not the vanished pod."""
    write_outcomes(local_store, RunMode.TRAIN, [outcome])
    vanished = PlatformFault("the learner pod ended before its container did", "none needed")

    failure = judge_attempt(
        local_store, attempt_spec(RunMode.TRAIN), [LearnerEnd(0, None)], vanished
    )

    assert (failure is None) if expected is None else isinstance(failure, expected)
    if outcome is None:
        assert failure is vanished


def test_record_attempt_appends_to_the_record_and_counts_user_errors(
    local_store: LocalStore,
) -> None:
    save_record(
        local_store,
        JobRecord(
            job_id=JOB_ID, tenant="acme", dag_id="trainyard_acme", dag_run_id="r", manifest={}
        ),
    )
    started = datetime(2026, 11, 24, 21, 59, tzinfo=UTC)
    failing = UserError("the command failed", "fix the code")

    counts = [
        record_attempt(local_store, JOB_ID, 1, started, failing),
        record_attempt(local_store, JOB_ID, 2, started, Preemption("evicted", "none needed")),
        record_attempt(local_store, JOB_ID, 3, started, None),
    ]

    assert counts == [1, 1, 1]
    record = load_record(local_store, JOB_ID)
    assert record is not None
    assert [(a.attempt, a.failure_class, a.message) for a in record.attempts] == [
        (1, "user_error", "the command failed"),
        (2, "preemption", "evicted"),
        (3, None, ""),
    ]
    assert record.attempts[0].fix == "fix the code"


def test_the_end_of_an_attempt_older_than_the_current_one_is_refused(
    local_store: LocalStore,
) -> None:
    """Fencing on the record: once the retry claimed the job, the orphan of the attempt before
    it can neither record its end nor claim the job back."""
    save_record(
        local_store,
        JobRecord(
            job_id=JOB_ID, tenant="acme", dag_id="trainyard_acme", dag_run_id="r", manifest={}
        ),
    )
    started = datetime(2026, 11, 24, 21, 59, tzinfo=UTC)
    claim_attempt(local_store, JOB_ID, 1)
    claim_attempt(local_store, JOB_ID, 2)

    with pytest.raises(Superseded, match=r"attempt 1 .* superseded by attempt 2"):
        record_attempt(local_store, JOB_ID, 1, started, Preemption("stopped", "none needed"))
    with pytest.raises(Superseded):
        claim_attempt(local_store, JOB_ID, 1)
    record_attempt(local_store, JOB_ID, 2, started, None)

    record = load_record(local_store, JOB_ID)
    assert record is not None
    assert record.current_attempt == 2
    assert [(a.attempt, a.failure_class) for a in record.attempts] == [(2, None)]


def commit_step(store: LocalStore, tmp_path: Path, step: int) -> None:
    directory = tmp_path / f"step-{step}"
    directory.mkdir()
    (directory / "weights.bin").write_bytes(bytes([step]))
    CheckpointStore(store, JobLayout(JOB_ID)).commit(directory, step)


def test_record_attempt_says_whether_the_attempt_advanced_the_committed_checkpoint(
    local_store: LocalStore, tmp_path: Path
) -> None:
    save_record(
        local_store,
        JobRecord(
            job_id=JOB_ID, tenant="acme", dag_id="trainyard_acme", dag_run_id="r", manifest={}
        ),
    )
    started = datetime(2026, 11, 24, 21, 59, tzinfo=UTC)
    killed = PlatformFault("learner 0 was killed by SIGKILL", "none needed")

    record_attempt(local_store, JOB_ID, 1, started, killed)  # nothing committed yet
    commit_step(local_store, tmp_path, 10)
    record_attempt(local_store, JOB_ID, 2, started, killed)
    record_attempt(local_store, JOB_ID, 3, started, killed)  # no new checkpoint
    # Try 4 was lost to a crash (no entry): its checkpoint counts for try 5.
    commit_step(local_store, tmp_path, 20)
    record_attempt(local_store, JOB_ID, 5, started, killed)
    record_attempt(local_store, JOB_ID, 5, started, killed)  # recorded again: replaced

    record = load_record(local_store, JOB_ID)
    assert record is not None
    assert [(a.attempt, a.checkpoint_step, a.progressed) for a in record.attempts] == [
        (1, None, False),
        (2, 10, True),
        (3, 10, False),
        (5, 20, True),
    ]
    # Each entry keeps when its checkpoint was committed (from the manifest), for accounting.
    committed = {
        c.step: c.committed_at for c in CheckpointStore(local_store, JobLayout(JOB_ID)).committed()
    }
    assert record.attempts[0].checkpoint_at is None
    assert record.attempts[3].checkpoint_at is not None
    assert record.attempts[3].checkpoint_at.isoformat() == committed[20]


@pytest.mark.parametrize(
    ("progressed", "in_a_row"),
    [
        pytest.param([False, False, False, False], 4, id="no-progress-counts-all"),
        pytest.param([False, True, False, False], 3, id="progress-starts-over-with-itself"),
        pytest.param([False, False, False, True], 1, id="the-newest-progressed"),
    ],
)
def test_faults_in_a_row_count_back_to_the_last_progress(
    progressed: list[bool], in_a_row: int
) -> None:
    started = datetime(2026, 11, 24, 21, 59, tzinfo=UTC)
    record = JobRecord(
        job_id=JOB_ID,
        tenant="acme",
        dag_id="trainyard_acme",
        dag_run_id="r",
        manifest={},
        attempts=[
            AttemptInfo(attempt=n, failure_class="hang", started_at=started, progressed=p)
            for n, p in enumerate(progressed, start=1)
        ],
    )

    assert faults_in_a_row(record, FailureClass.HANG) == in_a_row
    assert faults_in_a_row(record, FailureClass.PREEMPTION) == 0


def test_an_attempt_of_a_job_without_a_record_counts_nothing(local_store: LocalStore) -> None:
    started = datetime.now(UTC)
    assert record_attempt(local_store, JOB_ID, 1, started, UserError("x", "y")) == 0
    assert load_record(local_store, JOB_ID) is None


def test_record_evaluation_copies_the_stored_metrics_into_the_record(
    local_store: LocalStore,
) -> None:
    save_record(
        local_store,
        JobRecord(
            job_id=JOB_ID, tenant="acme", dag_id="trainyard_acme", dag_run_id="r", manifest={}
        ),
    )
    local_store.put_json(JobLayout(JOB_ID).evaluation, {"metrics": {"accuracy": 0.97}})

    assert record_evaluation(local_store, JOB_ID) == {"accuracy": 0.97}
    record = load_record(local_store, JOB_ID)
    assert record is not None
    assert record.evaluation == {"accuracy": 0.97}
