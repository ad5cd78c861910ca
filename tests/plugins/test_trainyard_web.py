"""The plugin's data-event route refuses bad bodies with a short 422 naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trainyard_web as web
import yaml
from fastapi.testclient import TestClient

from trainyard.tenancy.config import CONFIG_ENV


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    config = {
        "work_dir": "work",
        "tenants": [{"name": "acme", "storage": {"kind": "local", "root": "storage/acme"}}],
    }
    (tmp_path / "trainyard.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "trainyard.yaml"))
    monkeypatch.setattr(web, "may_use_runs", lambda user, tenant, method="GET": True)
    monkeypatch.setattr(web, "register_data_event", lambda tenant, prefix, files: [prefix])
    web.app.dependency_overrides[web.authenticated_user] = lambda: "someone"
    yield TestClient(web.app)
    web.app.dependency_overrides.clear()


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
