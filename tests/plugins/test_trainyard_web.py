"""The plugin's routes: short 422s naming the field, the job list and job API, 403s."""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trainyard_web as web
import yaml
from fastapi.testclient import TestClient

from devkit.s3_server import S3Server
from operators.hooks.storage import storage_connection
from tests.plugins.stored import JOB_ID, stored_job
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.progress import read_metrics
from trainyard.jobs.records import JobRecord, JobState, save_record
from trainyard.jobs.state import RunFacts, job_view
from trainyard.storage import StorageCredentials, open_store
from trainyard.storage.s3 import S3Store
from trainyard.tenancy.config import CONFIG_ENV, TrainyardConfig


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        pytest.param(
            {"path": "datasets/x", "files": -1}, "files", "greater than or equal", id="negative"
        ),
        pytest.param(
            {"path": "datasets/x", "files": 10**12}, "files", "less than or equal", id="huge"
        ),
        pytest.param({"path": "x" * 10_000}, "path", "at most 8192 characters", id="long-path"),
        pytest.param({"path": ["datasets"]}, "path", "valid string", id="list"),
    ],
)
def test_a_bad_data_event_is_a_short_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str, text: str
) -> None:
    response = client.post("/api/tenants/acme/data-events", json=body)

    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["body", field]
    assert text in problem["msg"]
    assert len(response.text) < 500


def test_a_path_leaving_the_storage_is_refused_naming_path(client: TestClient) -> None:
    response = client.post("/api/tenants/acme/data-events", json={"path": "../globex/data"})

    assert response.status_code == 422
    assert response.json()["detail"].startswith("path: '../globex/data' leaves the tenant's")


def test_a_good_data_event_reaches_the_asset_events(client: TestClient) -> None:
    response = client.post(
        "/api/tenants/acme/data-events", json={"path": "./datasets/x/", "files": 2}
    )

    assert response.json() == {"assets": ["datasets/x"]}


def test_an_unknown_tenant_is_404_with_its_name_cut_short(client: TestClient) -> None:
    response = client.get(f"/api/tenants/{'n' * 5000}/jobs")

    assert response.status_code == 404
    assert len(response.text) < 300


def test_the_job_api_has_every_attempts_rows_resume_points_attempts_and_checkpoints(
    client: TestClient, tmp_path: Path
) -> None:
    stored_job(tmp_path)

    detail = client.get(f"/api/tenants/acme/jobs/{JOB_ID}").json()

    assert detail["metrics"] == ["loss"]
    assert {row["attempt"] for row in detail["rows"]} == {1, 2}
    assert detail["resumes"] == [{"attempt": 2, "step": 30.0}]
    assert [a["failure_class"] for a in detail["attempts"]] == ["platform_fault", None]
    assert detail["attempts"][0]["fix"] == "a retry resumes from the newest committed checkpoint"
    [checkpoint] = detail["checkpoints"]
    assert (checkpoint["step"], checkpoint["size"]) == (20, 100)
    assert checkpoint["committed_at"]
    assert detail["links"]["run"] == f"/dags/trainyard_acme/runs/{JOB_ID}"
    assert detail["job"]["progress"] == 1.0
    assert detail["job"]["attempt"] == 2
    assert detail["gate"]["status"] == "promoted"
    assert detail["production_version"] == 1
    assert detail["versions"][0]["lineage"]["parent_checkpoint"] == 40
    assert [(u["attempt"], u["cpu_s"], u["gpus"][0]["util"]) for u in detail["utilisation"]] == [
        (2, 7.5, 80.0),
        (2, 7.5, 80.0),
    ]


def airflow_run(
    job_id: str, state: str, queued_at: datetime, *, learner_try: int = 0, name: str = "digits"
) -> web.AirflowRun:
    """A run of acme's DAG as `airflow_runs` reads it (run id = job id, as the CLI submits)."""
    started = None if state == "queued" else queued_at + timedelta(seconds=1)
    return web.AirflowRun(
        run_id=job_id,
        job_id=job_id,
        name=name,
        queued_at=queued_at,
        facts=RunFacts(state=state, start_date=started, learner_try=learner_try),
    )


def test_the_list_filters_by_state_newest_first(
    client: TestClient, tmp_path: Path, runs: dict[str, web.AirflowRun]
) -> None:
    store = stored_job(tmp_path)
    newer = JobRecord(
        job_id="acme.digits.20261202-100000-cd34",
        tenant="acme",
        dag_id="trainyard_acme",
        dag_run_id="acme.digits.20261202-100000-cd34",
        manifest={"name": "digits"},
        state=JobState.RUNNING,
    )
    save_record(store, newer)
    runs[newer.job_id] = airflow_run(newer.job_id, "running", datetime.now(UTC), learner_try=1)

    listed = client.get("/api/tenants/acme/jobs").json()["jobs"]
    running = client.get("/api/tenants/acme/jobs", params={"state": "running"}).json()["jobs"]

    assert [job["job_id"] for job in listed] == [newer.job_id, JOB_ID]
    assert [job["job_id"] for job in running] == [newer.job_id]
    assert running[0]["attempt"] == 1
    page = client.get("/tenants/acme/jobs", params={"state": "succeeded"})
    assert JOB_ID in page.text
    assert newer.job_id not in page.text


def test_pages_load_only_the_plugins_own_files(client: TestClient, tmp_path: Path) -> None:
    stored_job(tmp_path)

    page = client.get(f"/tenants/acme/jobs/{JOB_ID}").text
    sources = [s for s in re.findall(r'(?:src|href)="([^"]+)"', page) if s != "data:,"]

    assert sources
    assert all(source.startswith("/") and not source.startswith("//") for source in sources)
    for source in sources:
        if source.startswith("/static/"):
            assert client.get(source).status_code == 200, source
    assert client.get("/static/vendor/uplot-1.6.32/LICENSE").text.startswith("The MIT License")


def test_another_tenants_job_page_is_403_and_a_foreign_job_id_404(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored_job(tmp_path)
    monkeypatch.setattr(web, "may_use_runs", lambda user, tenant, method="GET": tenant == "globex")

    for route in (f"/tenants/acme/jobs/{JOB_ID}", f"/api/tenants/acme/jobs/{JOB_ID}"):
        refused = client.get(route)
        assert refused.status_code == 403
        assert "loss" not in refused.text
    assert client.get(f"/api/tenants/globex/jobs/{JOB_ID}").status_code == 404


QUEUED_JOB = "acme.digits.20261203-100000-ef56"


def test_a_job_queued_before_validate_is_listed_and_has_a_page(
    client: TestClient, tmp_path: Path, runs: dict[str, web.AirflowRun]
) -> None:
    stored_job(tmp_path)
    runs[QUEUED_JOB] = airflow_run(QUEUED_JOB, "queued", datetime(2026, 12, 3, 10, tzinfo=UTC))

    [queued, finished] = client.get("/api/tenants/acme/jobs").json()["jobs"]
    detail = client.get(f"/api/tenants/acme/jobs/{QUEUED_JOB}").json()

    assert (queued["job_id"], queued["state"], queued["terminal"]) == (QUEUED_JOB, "queued", False)
    assert (queued["name"], queued["attempt"], queued["started_at"]) == ("digits", 0, None)
    assert queued["page"] == f"/tenants/acme/jobs/{QUEUED_JOB}"
    assert (finished["job_id"], finished["terminal"]) == (JOB_ID, True)
    assert detail["job"]["state"] == "queued"
    assert (detail["attempts"], detail["rows"], detail["versions"]) == ([], [], [])
    assert detail["links"]["run"] == f"/dags/trainyard_acme/runs/{QUEUED_JOB}"
    page = client.get(f"/tenants/acme/jobs/{QUEUED_JOB}")
    assert page.status_code == 200
    listing = client.get("/tenants/acme/jobs").text
    assert f'<a href="/tenants/acme/jobs/{QUEUED_JOB}">' in listing
    assert "queued" in listing


def test_a_job_cancelled_while_queued_or_running_is_cancelled_in_the_list_and_its_page(
    client: TestClient, tmp_path: Path, runs: dict[str, web.AirflowRun]
) -> None:
    store = stored_job(tmp_path)
    now = datetime.now(UTC)
    for job_id in (QUEUED_JOB, JOB_ID):
        runs[job_id] = airflow_run(job_id, "failed", now)
    # Cancelled while queued: `trainyard cancel` recorded it. While running: the request was
    # recorded, the run failed, and the callback has not ended the record yet.
    save_record(
        store,
        JobRecord(
            job_id=QUEUED_JOB,
            tenant="acme",
            dag_id="trainyard_acme",
            dag_run_id=QUEUED_JOB,
            manifest={"name": "digits"},
            state=JobState.CANCELLED,
            cancel_requested=True,
        ),
    )
    record = JobRecord.model_validate_json(store.get_bytes(JobLayout(JOB_ID).record))
    save_record(
        store, record.model_copy(update={"state": JobState.RUNNING, "cancel_requested": True})
    )

    listed = client.get("/api/tenants/acme/jobs", params={"state": "cancelled"}).json()["jobs"]

    assert sorted(job["job_id"] for job in listed) == sorted([QUEUED_JOB, JOB_ID])
    assert all(job["terminal"] for job in listed)
    for job_id in (QUEUED_JOB, JOB_ID):
        assert client.get(f"/api/tenants/acme/jobs/{job_id}").json()["job"]["state"] == "cancelled"


def test_the_list_and_the_page_read_attempt_and_progress_as_job_view_does(
    client: TestClient, tmp_path: Path, runs: dict[str, web.AirflowRun]
) -> None:
    """The CLI's status is `job_view` of the same run, record and rows (tests/cli)."""
    store = stored_job(tmp_path)
    record = JobRecord.model_validate_json(store.get_bytes(JobLayout(JOB_ID).record))
    save_record(store, record.model_copy(update={"state": JobState.RUNNING, "final_step": None}))
    runs[JOB_ID] = run = airflow_run(JOB_ID, "running", datetime.now(UTC), learner_try=3)

    [listed] = client.get("/api/tenants/acme/jobs").json()["jobs"]
    detail = client.get(f"/api/tenants/acme/jobs/{JOB_ID}").json()["job"]

    view = job_view(run.facts, record, read_metrics(store, JOB_ID))
    for job in (listed, detail):
        assert (
            (job["state"], job["attempt"], job["step"], job["total_steps"])
            == (
                view.state.value,
                view.attempt,
                view.step,
                view.total_steps,
            )
            == ("running", 3, 40, 40)
        )
        assert job["progress"] == view.progress == 1.0
        assert job["started_at"] is not None


def test_the_config_is_parsed_again_only_when_its_file_changes(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[Path] = []
    load = web.load_config

    def counted(path: Path) -> TrainyardConfig:
        parsed.append(path)
        return load(path)

    monkeypatch.setattr(web, "load_config", counted)
    config_file = tmp_path / "trainyard.yaml"

    for _ in range(3):
        assert client.get("/api/tenants/acme/jobs").status_code == 200
    config_file.write_text(config_file.read_text().replace("globex", "initech"))
    assert client.get("/api/tenants/initech/jobs").status_code == 200
    assert client.get("/api/tenants/globex/jobs").status_code == 404

    assert parsed == [config_file, config_file]  # the first request's, then the change's


def test_an_s3_tenant_is_read_with_its_connections_keys_not_the_environments(
    client: TestClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    s3_server: S3Server,
) -> None:
    """The API server holds no tenant's keys in its environment: the plugin opens the storage
    as the tasks do, with the keys of the tenant's Airflow connection."""
    storage = s3_server.config(f"plugin-{uuid.uuid4().hex[:16]}")
    storage = storage.model_copy(update={"credentials_env": "TRAINYARD_S3_NOWHERE"})
    document = {
        "work_dir": "work",
        "tenants": [{"name": "acme", "storage": storage.model_dump(mode="json")}],
    }
    config_file = tmp_path / "s3.yaml"
    config_file.write_text(yaml.safe_dump(document))
    monkeypatch.setenv(CONFIG_ENV, str(config_file))
    tenant = web.load_config(config_file).tenant("acme")
    keys = StorageCredentials(s3_server.access_key, s3_server.secret_key)
    connection = storage_connection(tenant, keys)
    store = open_store(tenant.storage, keys)
    assert isinstance(store, S3Store)
    store.ensure_bucket()
    local = stored_job(tmp_path)
    store.put_bytes(JobLayout(JOB_ID).record, local.get_bytes(JobLayout(JOB_ID).record))
    assert not [name for name in os.environ if name.startswith("TRAINYARD_S3")]

    without = client.get("/api/tenants/acme/jobs")
    monkeypatch.setenv(f"AIRFLOW_CONN_{connection.conn_id.upper()}", connection.as_json())
    listed = client.get("/api/tenants/acme/jobs").json()["jobs"]

    assert without.status_code == 503
    assert "trainyard tenants sync" in without.json()["detail"]
    assert [job["job_id"] for job in listed] == [JOB_ID]
