"""`trainyard usage`: each tenant's jobs summed from the stored records, only for the tenants
the user may see (Airflow is a loopback stand-in that answers the access check)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from tests.support.accounting import faulted_job
from tests.support.fake_airflow import FakeAirflow, fake_airflow
from trainyard.cli.app import app
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.records import save_record
from trainyard.storage.local import LocalStore
from trainyard.tenancy.config import CONFIG_ENV

RECENT = datetime.now(UTC) - timedelta(days=1)


@pytest.fixture
def airflow() -> Iterator[FakeAirflow]:
    with fake_airflow({"trainyard_acme", "trainyard_globex"}) as api:
        yield api


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow: FakeAirflow) -> Path:
    """Two local tenants: acme with a faulted job from yesterday and one from 30 days ago,
    globex with one from yesterday."""
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
    acme = LocalStore(tmp_path / "storage" / "acme")
    save_record(acme, faulted_job("acme.digits.new", created_at=RECENT))
    # One learner's utilisation: 36 CPU seconds and one GPU at 50 % for 72 s.
    row = {"interval_s": 72, "cpu_s": 36, "rss_bytes": 2**30, "gpus": [{"util": 50}]}
    acme.put_bytes(JobLayout("acme.digits.new").utilisation(1, 0), json.dumps(row).encode())
    save_record(acme, faulted_job("acme.digits.old", created_at=RECENT - timedelta(days=30)))
    globex = LocalStore(tmp_path / "storage" / "globex")
    save_record(globex, faulted_job("globex.digits.new", "globex", created_at=RECENT))
    return tmp_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_usage_as_json_sums_the_tenants_jobs_in_the_window(deployment: Path) -> None:
    result = invoke("usage", "--since", "7d", "--json")

    assert result.exit_code == 0, result.output
    by_tenant = {entry["tenant"]: entry for entry in json.loads(result.output)}
    assert set(by_tenant) == {"acme", "globex"}
    acme = by_tenant["acme"]
    assert acme["jobs"] == {"succeeded": 1}
    assert acme["gpu_hours"] == pytest.approx(4 * 330 / 3600)
    assert acme["cpu_hours"] == pytest.approx(8 * 330 / 3600)
    assert acme["cpu_hours_used"] == pytest.approx(0.01)
    assert acme["gpu_hours_used"] == pytest.approx(0.01)
    assert acme["goodput"] == pytest.approx(270 / 330)
    assert acme["lost_hours_by_class"] == {"platform_fault": pytest.approx(80 / 3600)}
    assert acme["mean_queue_s"] == 30


def test_usage_of_all_time_as_csv(deployment: Path) -> None:
    result = invoke("usage", "--tenant", "acme", "--csv")

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [row["tenant"] for row in rows] == ["acme"]
    assert rows[0]["jobs"] == "succeeded=2"
    assert float(rows[0]["gpu_hours"]) == pytest.approx(2 * 4 * 330 / 3600)
    assert rows[0]["retries_by_class"] == "platform_fault=2"


def test_usage_table_shows_goodput_and_lost_time(deployment: Path) -> None:
    result = invoke("usage", "--tenant", "globex")

    assert result.exit_code == 0, result.output
    assert "globex" in result.output
    assert "82%" in result.output  # 270 / 330
    assert "platform_fault=1m 20s" in result.output


def test_usage_leaves_out_tenants_the_user_may_not_see(
    deployment: Path, airflow: FakeAirflow
) -> None:
    airflow.readable_dags = {"trainyard_acme"}

    listed = invoke("usage", "--json")
    refused = invoke("usage", "--tenant", "globex", "--json")

    assert [entry["tenant"] for entry in json.loads(listed.output)] == ["acme"]
    assert refused.exit_code == 1
    assert "may not use tenant 'globex'" in " ".join(refused.output.split())


def test_a_bad_window_names_the_option(deployment: Path) -> None:
    result = invoke("usage", "--since", "a week")

    assert result.exit_code == 2
    assert "since:" in result.output
