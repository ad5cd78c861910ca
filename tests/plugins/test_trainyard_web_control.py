"""The job control routes: pause, resume and cancel for whoever may start the tenant's runs
(a viewer gets 403), 409 with the reason for an action that does not apply, and a paused then
resumed job listed as one job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trainyard_web as web
from fastapi.testclient import TestClient

from tests.plugins.stored import JOB_ID, stored_job
from trainyard.jobs.control import RESUME_KEY
from trainyard.jobs.records import JobRecord, JobState, load_record, save_record
from trainyard.jobs.state import RunFacts
from trainyard.manifest.submission import example_manifest
from trainyard.storage.local import LocalStore


def a_run(run_id: str, state: str, conf: dict[str, Any] | None = None) -> web.AirflowRun:
    queued = datetime.now(UTC) - timedelta(minutes=1)
    return web.AirflowRun(
        run_id=run_id,
        job_id=web.job_id_of_run("acme", conf or {}, run_id),
        name="digits",
        queued_at=queued,
        facts=RunFacts(state=state, start_date=queued, learner_try=0 if state == "queued" else 1),
        conf=conf or {},
    )


@pytest.fixture
def running(tmp_path: Path, runs: dict[str, web.AirflowRun]) -> LocalStore:
    """The stored job (one committed checkpoint), running in its run."""
    store = stored_job(tmp_path)
    record = load_record(store, JOB_ID)
    assert record is not None
    save_record(store, record.model_copy(update={"state": JobState.RUNNING, "failure": None}))
    runs[JOB_ID] = a_run(JOB_ID, "running")
    return store


def test_pause_then_resume_is_one_job_paused_then_queued(
    client: TestClient,
    running: LocalStore,
    runs: dict[str, web.AirflowRun],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stopped: list[str] = []
    triggered: list[tuple[str, dict[str, object]]] = []

    def stop(record: JobRecord) -> None:
        stopped.append(record.dag_run_id)
        runs[record.dag_run_id] = a_run(record.dag_run_id, "failed")

    monkeypatch.setattr(web, "fail_airflow_run", stop)
    monkeypatch.setattr(
        web, "trigger_airflow_run", lambda dag_id, user: lambda *run: triggered.append(run)
    )

    paused = client.post(f"/api/jobs/{JOB_ID}/pause")

    assert paused.status_code == 200
    assert paused.json() == {"job_id": JOB_ID, "state": "paused"}
    assert stopped == [JOB_ID]
    detail = client.get(f"/api/tenants/acme/jobs/{JOB_ID}").json()
    assert detail["job"]["state"] == "paused"
    assert detail["attempts"][-1]["failure_class"] == "paused"
    assert client.post(f"/api/jobs/{JOB_ID}/pause").status_code == 409

    resumed = client.post(f"/api/jobs/{JOB_ID}/resume")

    assert resumed.json() == {"job_id": JOB_ID, "state": "queued"}
    [(run_id, conf)] = triggered
    assert conf[RESUME_KEY] == JOB_ID
    runs[run_id] = a_run(run_id, "queued", dict(conf))
    [listed] = client.get("/api/tenants/acme/jobs").json()["jobs"]
    assert (listed["job_id"], listed["state"], listed["dag_run_id"]) == (JOB_ID, "queued", run_id)


def test_a_job_queued_before_validate_pauses_and_resumes_with_what_was_submitted(
    client: TestClient,
    tmp_path: Path,
    runs: dict[str, web.AirflowRun],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored_job(tmp_path)
    queued_id = "acme.digits.20261203-100000-ef56"
    conf = {"manifest": example_manifest("acme"), "command": "python train.py --epochs 2"}
    runs[queued_id] = a_run(queued_id, "queued", conf)
    triggered: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        web,
        "fail_airflow_run",
        lambda r: runs.update({queued_id: a_run(queued_id, "failed", conf)}),
    )
    monkeypatch.setattr(
        web, "trigger_airflow_run", lambda dag_id, user: lambda *run: triggered.append(run)
    )

    paused = client.post(f"/api/jobs/{queued_id}/pause")

    assert paused.json() == {"job_id": queued_id, "state": "paused"}
    assert runs[queued_id].facts.state == "failed"  # it never starts
    assert client.get(f"/api/tenants/acme/jobs/{queued_id}").json()["job"]["state"] == "paused"

    resumed = client.post(f"/api/jobs/{queued_id}/resume")

    assert resumed.json() == {"job_id": queued_id, "state": "queued"}
    [(_, sent)] = triggered
    assert sent[RESUME_KEY] == queued_id
    assert sent["manifest"]["command"] == "python train.py --epochs 2"  # the form's override


def test_a_viewer_gets_403_for_every_action(
    client: TestClient, running: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "may_use_runs", lambda user, tenant, method="GET": method == "GET")
    monkeypatch.setattr(web, "fail_airflow_run", lambda record: pytest.fail("stopped"))

    for action in ("pause", "resume", "cancel"):
        assert client.post(f"/api/jobs/{JOB_ID}/{action}").status_code == 403
    record = load_record(running, JOB_ID)
    assert record is not None
    assert (record.state, record.pause_requested, record.cancel_requested) == (
        JobState.RUNNING,
        False,
        False,
    )


def test_resuming_a_succeeded_job_is_409_with_the_reason(
    client: TestClient, tmp_path: Path, runs: dict[str, web.AirflowRun]
) -> None:
    stored_job(tmp_path)
    runs[JOB_ID] = a_run(JOB_ID, "success")

    refused = client.post(f"/api/jobs/{JOB_ID}/resume")

    assert refused.status_code == 409
    assert "it succeeded" in refused.json()["detail"]


def test_cancel_ends_a_running_job_cancelled(
    client: TestClient,
    running: LocalStore,
    runs: dict[str, web.AirflowRun],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        web, "fail_airflow_run", lambda record: runs.update({JOB_ID: a_run(JOB_ID, "failed")})
    )

    assert client.post(f"/api/jobs/{JOB_ID}/cancel").json()["state"] == "cancelled"
    assert client.post(f"/api/jobs/{JOB_ID}/cancel").status_code == 409
    assert client.get(f"/api/tenants/acme/jobs/{JOB_ID}").json()["job"]["state"] == "cancelled"


def test_a_job_of_no_tenant_is_404(client: TestClient) -> None:
    assert client.post("/api/jobs/not-a-job/pause").status_code == 404


def test_the_job_page_data_says_whether_the_caller_may_act(
    client: TestClient, running: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    detail = f"/api/tenants/acme/jobs/{JOB_ID}"
    assert client.get(detail).json()["may_act"] is True

    monkeypatch.setattr(web, "may_use_runs", lambda user, tenant, method="GET": method == "GET")

    assert client.get(detail).json()["may_act"] is False
