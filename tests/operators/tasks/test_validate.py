"""The validate task: quota admission, the backend's check, and rejections kept in the record
(the code snapshot itself: tests/jobs/test_code.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from operators.tasks.base import classified_failures
from operators.tasks.validate import InvalidJobOperator, ValidateJobOperator
from tests.support.paths import path_without
from trainyard.failures import ResourceError, UserError
from trainyard.jobs.control import pause_job, resume_job
from trainyard.jobs.records import JobRecord, JobState, load_record
from trainyard.jobs.state import RunFacts
from trainyard.manifest.schema import ManifestError
from trainyard.manifest.submission import example_manifest
from trainyard.storage.local import LocalStore
from trainyard.tenancy.config import CONFIG_ENV


def test_a_job_over_the_whole_gpu_quota_fails_validation_leaving_only_its_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = tmp_path / "acme"
    config = {
        "work_dir": str(tmp_path / "work"),
        "tenants": [{"name": "acme", "storage": {"kind": "local", "root": str(storage)}}],
    }
    (tmp_path / "trainyard.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "trainyard.yaml"))
    manifest = example_manifest("acme") | {"resources": {"gpus": 1}}  # gpu_quota is 0
    context = {"params": {"manifest": manifest}, "dag_run": SimpleNamespace(run_id="run-1")}

    with pytest.raises(AirflowFailException) as raised:
        ValidateJobOperator(task_id="validate", tenant="acme").execute(cast(Context, context))

    assert str(raised.value).startswith("[resource_error] resources.gpus: ")
    assert "gpu_quota" in str(raised.value)
    store = LocalStore(storage)
    assert [info.key for info in store.list()] == ["jobs/acme.digits-mlp.run-1/job.json"]
    record = load_record(store, "acme.digits-mlp.run-1")  # the reason, for `trainyard status`
    assert record is not None
    assert record.state is JobState.FAILED
    assert record.failure is not None
    assert record.failure.failure_class == "resource_error"
    assert record.failure.message == str(raised.value)


@pytest.mark.parametrize(
    ("conf", "job_id", "field"),
    [
        pytest.param(
            {"manifest": False}, "acme.job.run-1", "manifest: must be a mapping", id="bool"
        ),
        pytest.param(
            {"manifest": [1, 2]}, "acme.job.run-1", "manifest: must be a mapping", id="list"
        ),
        pytest.param(
            {"manifest": example_manifest("acme") | {"resources": 1}, "gpus": 2},
            "acme.digits-mlp.run-1",
            "resources: is 1 (of type int), so the trigger form's gpus cannot set resources.gpus",
            id="override-into-non-mapping",
        ),
        pytest.param(
            {"manifest": example_manifest("acme") | {"command": "x" * 9000}},
            "acme.digits-mlp.run-1",
            "command: 9,000 characters, more than the limit",
            id="long-string",
        ),
    ],
)
def test_an_invalid_conf_fails_validation_once_as_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conf: dict[str, Any], job_id: str, field: str
) -> None:
    storage = tmp_path / "acme"
    config = {
        "work_dir": str(tmp_path / "work"),
        "tenants": [{"name": "acme", "storage": {"kind": "local", "root": str(storage)}}],
    }
    (tmp_path / "trainyard.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "trainyard.yaml"))
    context = {"params": conf, "dag_run": SimpleNamespace(run_id="run-1")}

    with pytest.raises(AirflowFailException) as raised:
        ValidateJobOperator(task_id="validate", tenant="acme").execute(cast(Context, context))

    message = str(raised.value)
    assert message.startswith("[user_error] the job manifest is invalid:\n")
    assert field in message
    assert len(message) < 1000  # long values are echoed cut short
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__
    record = load_record(LocalStore(storage), job_id)
    assert record is not None
    assert record.state is JobState.FAILED
    assert record.failure is not None
    assert record.failure.failure_class == "user_error"
    assert record.failure.message == message


def test_without_bwrap_a_sandboxed_deployment_fails_the_job_once_at_validate_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sandbox.enabled: auto` (the default) on a machine without bubblewrap: the job is
    refused as a resource error (not retried) instead of running the tenant's code
    unsandboxed; the fix names the install command and the deliberate way out."""
    monkeypatch.setenv("PATH", path_without("bwrap", tmp_path / "bin"))
    storage = tmp_path / "acme"
    config = {
        "work_dir": str(tmp_path / "work"),
        "sandbox": {"enabled": "auto"},
        "tenants": [{"name": "acme", "storage": {"kind": "local", "root": str(storage)}}],
    }
    (tmp_path / "trainyard.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "trainyard.yaml"))
    context = {
        "params": {"manifest": example_manifest("acme")},
        "dag_run": SimpleNamespace(run_id="run-1"),
    }

    with pytest.raises(AirflowFailException) as raised:  # Airflow's "fail, no retry"
        ValidateJobOperator(task_id="validate", tenant="acme").execute(cast(Context, context))

    message = str(raised.value)
    assert message.startswith("[resource_error] sandbox.enabled: ")
    assert "bubblewrap" in message
    assert "apt-get install bubblewrap" in message
    assert "sandbox.enabled: false" in message
    record = load_record(LocalStore(storage), "acme.digits-mlp.run-1")
    assert record is not None
    assert record.state is JobState.FAILED
    assert record.failure is not None
    assert record.failure.failure_class == "resource_error"


def rejection(failure: Exception) -> AirflowFailException:
    """What the validate task's translation raises for `failure`, or `failure` itself."""
    if isinstance(failure, AirflowFailException):
        return failure
    with pytest.raises(AirflowFailException) as raised, classified_failures():
        raise failure
    return raised.value


@pytest.mark.parametrize(
    ("failure", "failure_class", "fix"),
    [
        pytest.param(
            UserError("name: required", "name the job"), "user_error", "name the job", id="user"
        ),
        pytest.param(
            ResourceError("resources.gpus: 2 > gpu_quota 1", "ask for fewer GPUs"),
            "resource_error",
            "ask for fewer GPUs",
            id="resource",
        ),
        pytest.param(
            ManifestError([("name", "required")]),
            "user_error",
            "correct the fields named",
            id="invalid-manifest",
        ),
        pytest.param(
            AirflowFailException("[user_error] a label in the text only"),
            "platform_fault",
            None,
            id="untyped-is-the-one-default",
        ),
    ],
)
def test_the_rejection_record_takes_its_class_and_fix_from_the_typed_failure(
    local_store: LocalStore, failure: Exception, failure_class: str, fix: str | None
) -> None:
    task = ValidateJobOperator(task_id="validate", tenant="acme")
    task.__dict__["store"] = local_store  # the cached property, without an Airflow connection
    rejected = rejection(failure)

    task.record_rejection({"manifest": example_manifest("acme")}, "run-1", rejected)

    record = load_record(local_store, "acme.digits-mlp.run-1")
    assert record is not None
    assert record.state is JobState.FAILED
    assert record.failure is not None
    assert record.failure.failure_class == failure_class
    assert record.failure.message == str(rejected)
    if fix is not None:
        assert record.failure.fix == fix
    else:
        assert record.failure.fix  # the platform fault's own


def test_a_scheduled_job_with_an_invalid_manifest_fails_fast_as_a_user_error() -> None:
    message = "invalid scheduled job manifest nightly.yaml: resources.gpus: not a number"

    with pytest.raises(AirflowFailException) as raised:
        InvalidJobOperator(task_id="invalid_manifest", message=message).execute(cast(Context, {}))

    failure = raised.value.__cause__
    assert isinstance(failure, UserError)
    assert failure.cause == message
    assert failure.fix


def bare_acme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> LocalStore:
    """Tenant acme (local storage, the bare backend, `settings` added) as the deployment, its
    example code stored; its storage."""
    storage = tmp_path / "acme"
    tenant = {"name": "acme", "storage": {"kind": "local", "root": str(storage)}}
    config = {
        "work_dir": str(tmp_path / "work"),
        "tenants": [{**tenant, "learner_backend": "bare", **settings}],
    }
    (tmp_path / "trainyard.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "trainyard.yaml"))
    store = LocalStore(storage)
    store.put_bytes("examples/pytorch-digits/train.py", b"print('training')\n")
    return store


def test_an_accepted_job_is_recorded_as_created_when_its_run_was_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its queue time (`jobs.accounting`) then counts the wait for a run slot too."""
    store = bare_acme(tmp_path, monkeypatch)
    queued_at = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
    dag_run = SimpleNamespace(run_id="run-1", queued_at=queued_at)
    context = {"params": {"manifest": example_manifest("acme")}, "dag_run": dag_run}

    job_id = ValidateJobOperator(task_id="validate", tenant="acme").execute(cast(Context, context))

    record = load_record(store, job_id)
    assert record is not None
    assert record.created_at == queued_at


def test_a_job_paused_while_queued_is_accepted_by_its_resume_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was never validated nor its code snapshot taken: its resume run does both, under
    the job id it was paused as."""
    store = bare_acme(tmp_path, monkeypatch, default_max_queued="10m")
    job_id = "acme.digits.20261206-100000-ab12"
    queued = JobRecord.of_queued_run(
        job_id, "acme", "trainyard_acme", job_id, {"manifest": example_manifest("acme")}
    )
    paused = pause_job(store, queued, RunFacts(state="queued"), 0, lambda _: None)
    triggered: list[tuple[str, dict[str, Any]]] = []
    resume_job(store, paused, RunFacts(state="failed"), lambda *run: triggered.append(run))
    [(run_id, conf)] = triggered
    context = {"params": conf, "dag_run": SimpleNamespace(run_id=run_id, queued_at=None)}

    accepted = ValidateJobOperator(task_id="validate", tenant="acme").execute(
        cast(Context, context)
    )

    assert accepted == job_id
    record = load_record(store, job_id)
    assert record is not None
    assert record.state is JobState.RUNNING
    assert record.code_digest is not None  # its code snapshot, taken now
    assert record.manifest["max_queued"] == 600.0  # the tenant's default, as for any new job
    assert record.dag_run_id == run_id
