"""The plugin's app with the caller's identity, the auth manager's answer and Airflow's runs
stubbed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trainyard_web as web
import yaml
from fastapi.testclient import TestClient

from trainyard.tenancy.config import CONFIG_ENV


@pytest.fixture
def runs() -> dict[str, web.AirflowRun]:
    """The runs of acme's DAG as Airflow's metadata DB holds them, by run id: none unless a
    test adds some."""
    return {}


@pytest.fixture
def client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runs: dict[str, web.AirflowRun]
) -> Iterator[TestClient]:
    config = {
        "work_dir": "work",
        "tenants": [
            {"name": name, "storage": {"kind": "local", "root": f"storage/{name}"}}
            for name in ("acme", "globex")
        ],
    }
    (tmp_path / "trainyard.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "trainyard.yaml"))
    monkeypatch.setattr(web, "may_use_runs", lambda user, tenant, method="GET": True)
    monkeypatch.setattr(web, "register_data_event", lambda tenant, prefix, files: [prefix])
    monkeypatch.setattr(
        web,
        "airflow_runs",
        lambda tenant, run_id=None: {
            key: run for key, run in runs.items() if tenant == "acme" and run_id in (None, key)
        },
    )
    web.app.dependency_overrides[web.authenticated_user] = lambda: "someone"
    yield TestClient(web.app)
    web.app.dependency_overrides.clear()
