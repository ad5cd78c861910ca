"""The learner task: the attempt's spec from a manifest and the config, its retry semantics,
and evaluate mode (the judging itself: tests/jobs/test_attempts.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
import yaml
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from operators.tasks.learner import LearnerOperator
from trainyard.backends import RunMode
from trainyard.failures import Preemption, UserError
from trainyard.jobs.control import PAUSED, record_pause
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.records import JobRecord, JobState, load_record, save_record, update_record
from trainyard.manifest.schema import JobManifest, parse_manifest
from trainyard.storage import join_key
from trainyard.storage.config import LocalStorageConfig
from trainyard.storage.local import LocalStore
from trainyard.tenancy.config import CONFIG_ENV

JOB_ID = "acme.digits-mlp.20261124-215908-abcd"

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

#: What the tests that run real learners submit: the machine has no GPU, and a GPU job's
#: learners would find none (a platform fault; tests/backends/local runs them on stand-in GPUs).
CPU_JOB = {**MANIFEST, "resources": {"cpus": "1500m", "memory": "3Gi", "learners": 3}}


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
    operator = LearnerOperator(
        task_id="evaluate", tenant="acme", job_id=JOB_ID, mode=RunMode.EVALUATE
    )

    spec = operator.learner_spec(manifest, attempt=1)

    assert spec.mode is RunMode.EVALUATE
    assert spec.num_learners == 1
    assert spec.command == "python evaluate.py --split test"
    assert spec.storage == LocalStorageConfig(root=config_dir / "storage" / "acme")


@pytest.mark.parametrize(
    ("mode", "tenant"),
    [
        pytest.param(RunMode.TRAIN, "globex", id="training"),
        pytest.param(RunMode.EVALUATE, "globex", id="evaluation"),
    ],
)
def test_spec_uses_the_operators_tenant_storage(
    config_dir: Path, manifest: JobManifest, mode: RunMode, tenant: str
) -> None:
    operator = LearnerOperator(
        task_id="task", tenant=tenant, job_id="globex.digits-mlp.x", mode=mode
    )

    spec = operator.learner_spec(manifest, attempt=1)

    assert spec.tenant == tenant
    assert spec.storage == LocalStorageConfig(root=config_dir / "storage" / tenant)


def test_user_errors_are_retried_only_as_often_as_the_manifest_opts_in(config_dir: Path) -> None:
    """A real learner whose code fails: retryable once (retries.user_errors: 1), then final."""
    store = LocalStore(config_dir / "storage" / "acme")
    store.put_bytes(join_key(JobLayout(JOB_ID).code, "main.py"), b"raise SystemExit('flaky')\n")
    failing = parse_manifest(
        {**CPU_JOB, "command": "python main.py", "retries": {"user_errors": 1}}
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


def record_of(store: LocalStore, manifest: JobManifest) -> None:
    save_record(
        store,
        JobRecord(
            job_id=JOB_ID,
            tenant="acme",
            dag_id="trainyard_acme",
            dag_run_id=JOB_ID,
            manifest=manifest.model_dump(mode="json"),
        ),
    )


def test_a_retry_of_a_trial_its_sweep_pruned_trains_nothing(config_dir: Path) -> None:
    """A crash between the prune's record and the task's skip leaves the try to be retried: the
    retry skips, and leaves the pruned attempt the last one (its code would fail if it ran)."""
    store = LocalStore(config_dir / "storage" / "acme")
    store.put_bytes(join_key(JobLayout(JOB_ID).code, "main.py"), b"raise SystemExit('ran')\n")
    record_of(store, parse_manifest({**CPU_JOB, "command": "python main.py"}))
    update_record(store, JOB_ID, state=JobState.PRUNED)
    operator = LearnerOperator(task_id="learner", tenant="acme", job_id=JOB_ID)

    with pytest.raises(AirflowSkipException, match="pruned"):
        operator.execute(cast(Context, {"ti": SimpleNamespace(try_number=2)}))

    record = load_record(store, JOB_ID)
    assert record is not None
    assert record.state is JobState.PRUNED
    assert record.attempts == []


def test_a_paused_attempt_concluded_after_the_resume_stays_paused(config_dir: Path) -> None:
    """The pause recorded attempt 1's end and the job was resumed (the request withdrawn) before
    the paused run's task saw its learners stop: their preemption does not replace the pause,
    and the task fails without a retry."""
    store = LocalStore(config_dir / "storage" / "acme")
    manifest = parse_manifest(CPU_JOB)
    record_of(store, manifest)
    started = datetime.now(UTC)
    record_pause(store, JOB_ID, 1, started)
    update_record(store, JOB_ID, attempt_offset=1, dag_run_id="resume__" + JOB_ID)
    operator = LearnerOperator(task_id="learner", tenant="acme", job_id=JOB_ID)

    with pytest.raises(AirflowFailException, match="paused"):
        operator.conclude_attempt(manifest, 1, started, Preemption("stopped by SIGTERM"))

    record = load_record(store, JOB_ID)
    assert record is not None
    assert [(a.attempt, a.failure_class) for a in record.attempts] == [(1, PAUSED)]


def test_evaluate_mode_without_an_evaluation_runs_nothing(config_dir: Path) -> None:
    store = LocalStore(config_dir / "storage" / "acme")
    record_of(store, parse_manifest({k: v for k, v in MANIFEST.items() if k != "evaluation"}))
    operator = LearnerOperator(
        task_id="evaluate", tenant="acme", job_id=JOB_ID, mode=RunMode.EVALUATE
    )

    assert operator.execute(cast(Context, {"ti": SimpleNamespace(try_number=1)})) == {}
    assert [info.key for info in store.list()] == [JobLayout(JOB_ID).record]


def test_evaluate_mode_stores_the_metrics_its_learner_wrote(config_dir: Path) -> None:
    """A real learner in evaluate mode: the metrics it stored reach the record and the XCom."""
    store = LocalStore(config_dir / "storage" / "acme")
    script = (
        "import json, os\n"
        "with open(os.environ['TRAINYARD_METRICS_FILE'], 'w') as f:\n"
        "    f.write(json.dumps({'accuracy': 0.93}))\n"
    )
    store.put_bytes(join_key(JobLayout(JOB_ID).code, "evaluate.py"), script.encode())
    record_of(
        store,
        parse_manifest(
            {**CPU_JOB, "evaluation": {"command": "python evaluate.py", "metric": "accuracy"}}
        ),
    )
    operator = LearnerOperator(
        task_id="evaluate", tenant="acme", job_id=JOB_ID, mode=RunMode.EVALUATE
    )

    metrics = operator.execute(cast(Context, {"ti": SimpleNamespace(try_number=1)}))

    record = load_record(store, JOB_ID)
    assert record is not None
    assert metrics == record.evaluation
