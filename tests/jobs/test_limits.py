"""Run-time limits: the tenant's defaults and maximum, learner time over attempts, the
`deadline` failures with cause and fix, and the learner task stopping a job whose max_runtime
runs out (with a final checkpoint) or that waited longer than max_queued."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from operators.tasks.base import failure_of_exception
from operators.tasks.learner import LearnerOperator
from trainyard.failures import Deadline, FailureClass
from trainyard.jobs.limits import learner_seconds, queued_too_long, runtime_exceeded, with_limits
from trainyard.jobs.records import AttemptInfo, JobRecord, load_record, save_record
from trainyard.jobs.state import RunFacts, job_view
from trainyard.manifest.schema import ManifestError, parse_manifest
from trainyard.storage.local import LocalStore
from trainyard.tenancy.config import (
    CONFIG_ENV,
    TenantConfig,
    TrainyardConfig,
    check_manifest_for_tenant,
)

JOB_ID = "acme.digits-mlp.20261124-215908-abcd"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
MANIFEST: dict[str, Any] = {
    "name": "digits-mlp",
    "tenant": "acme",
    "framework": {"name": "custom", "version": "1", "image": "registry.example/x:1"},
    "code": {"path": "."},
    "command": "python train.py",
}


def tenant(**fields: Any) -> TenantConfig:
    return TenantConfig.model_validate(
        {"name": "acme", "storage": {"kind": "local", "root": "s"}, **fields}
    )


def test_the_manifest_limits_win_over_the_tenants_defaults() -> None:
    defaults = tenant(default_max_runtime="1h", default_max_queued="10m")

    unset = with_limits(parse_manifest(MANIFEST), defaults)
    own = with_limits(parse_manifest({**MANIFEST, "max_runtime": "20s"}), defaults)

    assert (unset.max_runtime, unset.max_queued) == (3600.0, 600.0)
    assert (own.max_runtime, own.max_queued) == (20.0, 600.0)
    assert with_limits(parse_manifest(MANIFEST), tenant()).max_runtime is None


def test_a_limit_above_the_tenants_maximum_is_refused_naming_the_field() -> None:
    config = TrainyardConfig.model_validate(
        {"work_dir": "w", "tenants": [tenant(max_runtime="2h").model_dump(mode="json")]}
    )
    check_manifest_for_tenant(parse_manifest({**MANIFEST, "max_runtime": "2h"}), config)

    with pytest.raises(ManifestError, match=r"max_runtime.*more than tenant 'acme' allows"):
        check_manifest_for_tenant(parse_manifest({**MANIFEST, "max_runtime": "3h"}), config)


def test_a_bad_limit_names_the_field() -> None:
    with pytest.raises(ManifestError, match="max_queued"):
        parse_manifest({**MANIFEST, "max_queued": "soon"})


def test_learner_time_counts_attempts_not_the_gaps_between_them() -> None:
    attempts = [
        AttemptInfo(attempt=1, started_at=T0, ended_at=T0 + timedelta(seconds=30)),
        # An hour paused in between, then 10 s more.
        AttemptInfo(
            attempt=2,
            started_at=T0 + timedelta(hours=1),
            ended_at=T0 + timedelta(hours=1, seconds=10),
        ),
    ]

    assert learner_seconds(attempts) == 40.0
    now = T0 + timedelta(hours=2, seconds=5)
    assert learner_seconds(attempts, T0 + timedelta(hours=2), now) == 45.0


def test_deadline_failures_say_the_limit_the_time_and_the_fix() -> None:
    ran_out = runtime_exceeded(JOB_ID, 20.0, 21.0)
    waited = queued_too_long(60.0, 75.0)

    assert ran_out.failure_class is FailureClass.DEADLINE
    assert not ran_out.retried
    assert "21s of the 20s allowed" in ran_out.cause
    assert f"trainyard resume {JOB_ID}" in ran_out.fix
    assert "waited 1m 15s" in waited.cause
    assert "quota" in waited.fix


def test_the_view_shows_time_used_and_the_limit() -> None:
    record = JobRecord(
        job_id=JOB_ID,
        tenant="acme",
        dag_id="trainyard_acme",
        dag_run_id=JOB_ID,
        manifest={**MANIFEST, "max_runtime": 20.0},
        attempts=[AttemptInfo(attempt=1, started_at=T0, ended_at=T0 + timedelta(seconds=8))],
    )
    run = RunFacts(state="running", start_date=T0 + timedelta(minutes=5))

    view = job_view(run, record, [], now=T0 + timedelta(minutes=5, seconds=4))

    assert (view.runtime_s, view.max_runtime_s) == (12.0, 20.0)


# The learner task enforces the limits.

SLEEPER = """
import os, pathlib, signal, sys, time
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
checkpoints = pathlib.Path(os.environ["TRAINYARD_CHECKPOINT_DIR"])
while not stop:
    time.sleep(0.1)
(checkpoints / "step-7").mkdir()
(checkpoints / "step-7" / "w.txt").write_text("final")
sys.exit(143)
"""


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStore:
    """acme's job with code that trains until SIGTERM, then commits a final checkpoint."""
    config = {
        "work_dir": "scratch",
        "tenants": [{"name": "acme", "storage": {"kind": "local", "root": "storage/acme"}}],
    }
    (tmp_path / "trainyard.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "trainyard.yaml"))
    monkeypatch.chdir(tmp_path)
    store = LocalStore(tmp_path / "storage" / "acme")
    store.put_bytes(f"jobs/{JOB_ID}/code/train.py", SLEEPER.encode())
    return store


def learner_context(try_number: int = 1, run_after: datetime | None = None) -> Context:
    dag_run = SimpleNamespace(run_after=run_after or datetime.now(UTC))
    return cast(Context, {"ti": SimpleNamespace(try_number=try_number), "dag_run": dag_run})


def save_job(store: LocalStore, **manifest: Any) -> None:
    save_record(
        store,
        JobRecord(
            job_id=JOB_ID,
            tenant="acme",
            dag_id="trainyard_acme",
            dag_run_id=JOB_ID,
            manifest={
                **MANIFEST,
                "framework": {"name": "pytorch", "version": "2.13"},
                "command": "python train.py",
                "checkpoint": {"interval": "1s"},
                **manifest,
            },
        ),
    )


def test_max_runtime_stops_the_learners_with_a_final_checkpoint_and_fails_as_deadline(
    job: LocalStore,
) -> None:
    save_job(job, max_runtime=2.0)
    task = LearnerOperator(task_id="learner", tenant="acme", job_id=JOB_ID)

    with pytest.raises(AirflowFailException) as caught:
        task.execute(learner_context())

    failure = failure_of_exception(caught.value)
    assert isinstance(failure, Deadline)
    assert "max_runtime ran out" in failure.cause
    record = load_record(job, JOB_ID)
    assert record is not None
    [attempt] = record.attempts
    assert (attempt.failure_class, attempt.checkpoint_step) == ("deadline", 7)


def test_a_used_up_max_runtime_fails_before_any_learner_starts(job: LocalStore) -> None:
    save_job(job, max_runtime=5.0)
    record = load_record(job, JOB_ID)
    assert record is not None
    record.attempts = [AttemptInfo(attempt=1, started_at=T0, ended_at=T0 + timedelta(seconds=6))]
    save_record(job, record)
    task = LearnerOperator(task_id="learner", tenant="acme", job_id=JOB_ID)

    with pytest.raises(AirflowFailException, match=r"\[deadline\] max_runtime ran out"):
        task.execute(learner_context(try_number=2))


def test_max_queued_fails_a_job_that_waited_too_long_to_start(job: LocalStore) -> None:
    save_job(job, max_queued=60.0)
    task = LearnerOperator(task_id="learner", tenant="acme", job_id=JOB_ID)
    queued = datetime.now(UTC) - timedelta(minutes=5)

    with pytest.raises(AirflowFailException, match=r"\[deadline\] max_queued ran out"):
        task.execute(learner_context(run_after=queued))
