"""The learner task: classifying an attempt from the learners' outcome files, and its spec."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
import yaml
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators.evaluate import EvaluateModelOperator
from operators.learner import LearnerOperator, LearnerRunningOperator, learner_failure
from trainyard.backends import OOM_KILLED, LearnerExit, LearnerSpec, RunMode
from trainyard.failures import (
    Hang,
    PlatformFault,
    Preemption,
    ResourceError,
    TrainyardFailure,
    UserError,
)
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.records import JobRecord, save_record
from trainyard.manifest.schema import JobManifest, parse_manifest
from trainyard.runtime.outcome import Outcome
from trainyard.storage import join_key
from trainyard.storage.config import LocalStorageConfig
from trainyard.storage.local import LocalStore
from trainyard.tenancy.config import CONFIG_ENV

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


def attempt_spec(mode: RunMode, attempt: int = ATTEMPT) -> LearnerSpec:
    """The spec of one attempt, as the learner task builds it (only identity matters here)."""
    return LearnerSpec(
        job_id=JOB_ID,
        tenant="acme",
        mode=mode,
        command="python train.py",
        attempt=attempt,
        num_learners=1,
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


def exits(*codes: int) -> list[LearnerExit]:
    return [LearnerExit(code) for code in codes]


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
def test_learner_failure_classifies_the_attempt(
    local_store: LocalStore,
    mode: RunMode,
    outcomes: list[Outcome | None],
    exit_codes: list[int],
    expected: type[TrainyardFailure] | None,
    fragments: list[str],
) -> None:
    write_outcomes(local_store, mode, outcomes)

    failure = learner_failure(local_store, attempt_spec(mode), exits(*exit_codes))

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

    failure = learner_failure(local_store, attempt_spec(RunMode.TRAIN), exits(137))

    assert isinstance(failure, PlatformFault)


def test_training_outcome_is_not_read_for_evaluation(local_store: LocalStore) -> None:
    write_outcomes(local_store, RunMode.TRAIN, [USER_ERROR])

    failure = learner_failure(local_store, attempt_spec(RunMode.EVALUATE), exits(1))

    assert isinstance(failure, PlatformFault)


def test_oom_killed_by_the_backend_is_a_resource_error_naming_the_limit(
    local_store: LocalStore,
) -> None:
    """The runtime only saw SIGKILL (a platform fault); the backend knows it was memory."""
    killed = Outcome(exit_code=None, signal=9, failure=PlatformFault("killed by SIGKILL", ""))
    write_outcomes(local_store, RunMode.TRAIN, [killed])

    failure = learner_failure(
        local_store, attempt_spec(RunMode.TRAIN), [LearnerExit(137, reason=OOM_KILLED)]
    )

    assert isinstance(failure, ResourceError)
    assert "resources.memory = 2Gi" in failure.cause
    assert "raise resources.memory above 2Gi" in failure.fix


# The learner spec, from a manifest and the deployment config.

MANIFEST = {
    "name": "digits-mlp",
    "tenant": "acme",
    "framework": {"name": "pytorch", "version": "2.13"},
    "code": {"uri": "examples/pytorch-digits"},
    "command": "python train.py --epochs 8",
    "data": {"path": "datasets/digits"},
    "resources": {"gpus": 1, "cpus": "1500m", "memory": "3Gi", "learners": 3},
    "checkpoint": {"interval": "2m", "keep": 5},
    "evaluation": {"command": "python evaluate.py --split test", "metric": "accuracy"},
}


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = {
        "work_dir": "scratch",
        "tenants": [
            {"name": "acme", "storage": {"kind": "local", "root": "storage/acme"}},
            {"name": "globex", "storage": {"kind": "local", "root": "storage/globex"}},
        ],
    }
    path = tmp_path / "trainyard.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(path))
    return tmp_path


@pytest.fixture
def manifest() -> JobManifest:
    return parse_manifest(MANIFEST)


def test_training_spec_runs_every_learner_of_the_manifest(
    config_dir: Path, manifest: JobManifest
) -> None:
    operator = LearnerOperator(task_id="learner", tenant="acme", job_id=JOB_ID)

    spec = operator.learner_spec(manifest, attempt=3)

    assert spec.job_id == JOB_ID
    assert spec.tenant == "acme"
    assert spec.mode is RunMode.TRAIN
    assert spec.command == "python train.py --epochs 8"
    assert spec.attempt == 3
    assert spec.num_learners == 3
    assert spec.checkpoint_interval == 120.0
    assert spec.checkpoint_keep == 5
    assert spec.storage == LocalStorageConfig(root=config_dir / "storage" / "acme")
    assert spec.work_dir == config_dir / "scratch"
    assert spec.cpus == 1.5
    assert spec.memory_bytes == 3 * 2**30
    assert spec.gpus == 1


def test_evaluation_spec_runs_one_learner_with_the_evaluation_command(
    config_dir: Path, manifest: JobManifest
) -> None:
    operator = EvaluateModelOperator(task_id="evaluate", tenant="acme", job_id=JOB_ID)

    spec = operator.learner_spec(manifest, attempt=1)

    assert spec.mode is RunMode.EVALUATE
    assert spec.num_learners == 1
    assert spec.command == "python evaluate.py --split test"
    assert spec.storage == LocalStorageConfig(root=config_dir / "storage" / "acme")


@pytest.mark.parametrize(
    ("operator_type", "tenant"),
    [
        pytest.param(LearnerOperator, "globex", id="training"),
        pytest.param(EvaluateModelOperator, "globex", id="evaluation"),
    ],
)
def test_spec_uses_the_operators_tenant_storage(
    config_dir: Path,
    manifest: JobManifest,
    operator_type: type[LearnerRunningOperator],
    tenant: str,
) -> None:
    operator = operator_type(task_id="task", tenant=tenant, job_id="globex.digits-mlp.x")

    spec = operator.learner_spec(manifest, attempt=1)

    assert spec.tenant == tenant
    assert spec.storage == LocalStorageConfig(root=config_dir / "storage" / tenant)


def test_user_errors_are_retried_only_as_often_as_the_manifest_opts_in(config_dir: Path) -> None:
    """A real learner whose code fails: retryable once (retries.user_errors: 1), then final."""
    store = LocalStore(config_dir / "storage" / "acme")
    store.put_bytes(join_key(JobLayout(JOB_ID).code, "main.py"), b"raise SystemExit('flaky')\n")
    failing = parse_manifest(
        {**MANIFEST, "command": "python main.py", "retries": {"user_errors": 1}}
    )
    save_record(
        store,
        JobRecord(
            job_id=JOB_ID,
            tenant="acme",
            dag_id="trainyard_acme",
            dag_run_id=JOB_ID,
            manifest=failing.model_dump(mode="json"),
        ),
    )
    operator = LearnerOperator(task_id="learner", tenant="acme", job_id=JOB_ID)

    with pytest.raises(AirflowException) as first:
        operator.run_learners(failing, cast(Context, {"ti": SimpleNamespace(try_number=1)}))
    assert not isinstance(first.value, AirflowFailException)
    assert isinstance(first.value.__cause__, UserError)
    with pytest.raises(AirflowFailException) as second:
        operator.run_learners(failing, cast(Context, {"ti": SimpleNamespace(try_number=2)}))
    assert "flaky" in str(second.value)
