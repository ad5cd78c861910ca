"""The CLI against a fake REST API (tests/support/fake_airflow.py) and two tenants whose
storage is local, shared by the CLI's test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.fake_airflow import FakeAirflow, fake_airflow
from trainyard.tenancy.config import CONFIG_ENV


@pytest.fixture
def airflow() -> Iterator[FakeAirflow]:
    with fake_airflow({"trainyard_acme", "trainyard_globex"}) as api:
        yield api


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow: FakeAirflow) -> Path:
    """A config with two local tenants; the user may read both tenants' DAGs."""
    config = {
        "work_dir": "work",
        "tenants": [
            {"name": name, "storage": {"kind": "local", "root": f"storage/{name}"}}
            for name in ("acme", "globex")
        ],
    }
    (tmp_path / "trainyard.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "trainyard.yaml"))
    monkeypatch.setenv("TRAINYARD_API_URL", airflow.url)
    monkeypatch.setenv("TRAINYARD_API_RETRY_SECONDS", "0")
    monkeypatch.setenv("TRAINYARD_USERNAME", "alice")
    monkeypatch.setenv("TRAINYARD_PASSWORD", "s3cret")
    return tmp_path
