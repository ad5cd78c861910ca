"""The `max_queued` deadline alert of the tenant DAGs: where its deadline lies for each run, that
it survives Airflow's serialization through the plugin, and that its callback fails a job that
never started (through a REST API on loopback) and leaves a started one alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from operators.dag_factory import tenant_dags
from operators.deployment.deadlines import JobQueueDeadline, fail_unstarted_job
from tests.support.fake_airflow import FakeAirflow, fake_airflow
from trainyard.jobs.control import RESUME_KEY
from trainyard.jobs.records import AttemptInfo, JobRecord, JobState, load_record, save_record
from trainyard.manifest.submission import example_manifest
from trainyard.storage.local import LocalStore
from trainyard.tenancy.config import CONFIG_ENV, load_config

JOB_ID = "acme.digits.20261206-100000-ab12"
QUEUED_AT = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


class OneRow:
    """A session whose query finds one run: (queued_at, run_after, conf)."""

    def __init__(self, row: tuple[Any, ...] | None) -> None:
        self.row = row

    def execute(self, statement: object) -> OneRow:
        return self

    def one_or_none(self) -> tuple[Any, ...] | None:
        return self.row


def deadline_of(conf: dict[str, Any], tenant_default: float | None = 600.0) -> datetime | None:
    reference = JobQueueDeadline(tenant_default=tenant_default)
    session: Any = OneRow((QUEUED_AT, QUEUED_AT, conf))
    return reference._evaluate_with(session=session, dag_id="trainyard_acme", run_id=JOB_ID)


def test_a_runs_deadline_is_its_queue_time_plus_its_jobs_max_queued() -> None:
    manifest = example_manifest("acme")

    assert deadline_of({"manifest": {**manifest, "max_queued": "30s"}}) == QUEUED_AT + timedelta(
        seconds=30
    )
    assert deadline_of({"manifest": manifest}) == QUEUED_AT + timedelta(minutes=10)
    assert deadline_of({"manifest": manifest}, tenant_default=None) is None
    assert deadline_of({"manifest": manifest, RESUME_KEY: JOB_ID}) is None  # it ran before
    session: Any = OneRow(None)
    assert JobQueueDeadline()._evaluate_with(session=session, dag_id="d", run_id="r") is None


def test_the_tenant_dag_carries_the_alert_and_its_reference_round_trips() -> None:
    config = load_config()
    tenant = config.tenants[0].model_copy(update={"default_max_queued": 90.0})
    dag = tenant_dags(config.model_copy(update={"tenants": [tenant]}))[f"trainyard_{tenant.name}"]

    [alert] = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
    assert alert is not None
    assert alert.interval == timedelta(0)
    assert alert.callback.kwargs == {"tenant": tenant.name}
    stored = alert.reference.serialize_reference()
    assert JobQueueDeadline.deserialize_reference(stored) == JobQueueDeadline(tenant_default=90.0)


@pytest.fixture
def airflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAirflow]:
    """acme (local storage, max_queued 60 s by default) and its REST API on loopback, which
    the callback reaches through the `trainyard_api` connection."""
    config = {
        "work_dir": str(tmp_path / "work"),
        "tenants": [
            {
                "name": "acme",
                "storage": {"kind": "local", "root": str(tmp_path / "acme")},
                "default_max_queued": "60s",
            }
        ],
    }
    (tmp_path / "trainyard.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "trainyard.yaml"))
    with fake_airflow({"trainyard_acme"}) as server:
        host, port = server.url.removeprefix("http://").split(":")
        connection = {"conn_type": "http", "host": host, "port": int(port), "login": "platform"}
        monkeypatch.setenv(
            "AIRFLOW_CONN_TRAINYARD_API", json.dumps({**connection, "password": "secret"})
        )
        yield server


def queued_run(queued_at: datetime) -> dict[str, Any]:
    return {
        "dag_id": "trainyard_acme",
        "dag_run_id": JOB_ID,
        "state": "queued",
        "queued_at": queued_at.isoformat(),
        "run_after": queued_at.isoformat(),
        "start_date": None,
        "end_date": None,
        "conf": {"manifest": example_manifest("acme")},
    }


def test_the_callback_fails_a_job_that_never_started_and_ends_its_run(
    airflow: FakeAirflow, tmp_path: Path
) -> None:
    run = queued_run(datetime.now(UTC) - timedelta(seconds=75))
    airflow.runs["trainyard_acme"] = [run]

    said = asyncio.run(fail_unstarted_job("acme", {"dag_run": dict(run)}))

    assert "failed as deadline" in said
    assert f"PATCH /api/v2/dags/trainyard_acme/dagRuns/{JOB_ID}" in airflow.requests
    assert run["state"] == "failed"
    record = load_record(LocalStore(tmp_path / "acme"), JOB_ID)
    assert record is not None
    assert record.failure is not None
    assert (record.state, record.failure.failure_class) == (JobState.FAILED, "deadline")
    assert "max_queued ran out" in record.failure.message
    assert "(at most 1m 00s)" in record.failure.message  # the tenant's default
    submitted = run["conf"]["manifest"]
    assert (record.manifest["name"], record.manifest["command"]) == (
        submitted["name"],
        submitted["command"],
    )  # the run's: it never got to validate


def test_the_callback_leaves_a_job_whose_learners_started(
    airflow: FakeAirflow, tmp_path: Path
) -> None:
    run = {**queued_run(datetime.now(UTC) - timedelta(seconds=75)), "state": "running"}
    airflow.runs["trainyard_acme"] = [run]
    store = LocalStore(tmp_path / "acme")
    started = JobRecord.of_queued_run(JOB_ID, "acme", "trainyard_acme", JOB_ID, run["conf"])
    started.state = JobState.RUNNING
    started.attempts = [AttemptInfo(attempt=1, started_at=QUEUED_AT)]
    save_record(store, started)

    said = asyncio.run(fail_unstarted_job("acme", {"dag_run": dict(run)}))

    assert "started in time" in said
    assert not any(request.startswith("PATCH") for request in airflow.requests)
    assert run["state"] == "running"
    assert load_record(store, JOB_ID) == started
