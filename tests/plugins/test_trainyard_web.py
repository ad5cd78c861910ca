"""The plugin's routes: short 422s naming the field, the job list and job API, 403s."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trainyard_web as web
from fastapi.testclient import TestClient

from tests.plugins.stored import JOB_ID, stored_job
from trainyard.jobs.records import JobRecord, JobState, save_record


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


def test_the_list_filters_by_state_newest_first(client: TestClient, tmp_path: Path) -> None:
    store = stored_job(tmp_path)
    newer = JobRecord(
        job_id="acme.digits.20261202-100000-cd34",
        tenant="acme",
        dag_id="trainyard_acme",
        dag_run_id="r2",
        manifest={"name": "digits"},
        state=JobState.RUNNING,
    )
    save_record(store, newer)

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
