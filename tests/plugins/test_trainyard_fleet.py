"""The fleet routes: usage per tenant from the stored records, only the caller's tenants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trainyard_web as web
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support.accounting import faulted_job
from trainyard.jobs.records import save_record
from trainyard.storage.local import LocalStore

RECENT = datetime.now(UTC) - timedelta(days=1)


@pytest.fixture
def stored(tmp_path: Path) -> None:
    """acme: a faulted job from yesterday and one from 30 days ago; globex: one from
    yesterday (storage roots as the `client` fixture's config names them)."""
    acme = LocalStore(tmp_path / "storage" / "acme")
    save_record(acme, faulted_job("acme.digits.new", created_at=RECENT))
    save_record(acme, faulted_job("acme.digits.old", created_at=RECENT - timedelta(days=30)))
    globex = LocalStore(tmp_path / "storage" / "globex")
    save_record(globex, faulted_job("globex.digits.new", "globex", created_at=RECENT))


def only_acme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "may_use_runs", lambda user, tenant, method="GET": tenant == "acme")


@pytest.mark.usefixtures("stored")
def test_usage_of_a_tenant_over_a_window(client: TestClient) -> None:
    response = client.get("/api/usage", params={"tenant": "acme", "since": "7d"})

    assert response.status_code == 200, response.text
    [acme] = response.json()
    assert acme["tenant"] == "acme"
    assert acme["jobs"] == {"succeeded": 1}
    assert acme["gpu_hours"] == pytest.approx(4 * 330 / 3600)
    assert acme["goodput"] == pytest.approx(270 / 330)
    assert acme["lost_hours_by_class"] == {"platform_fault": pytest.approx(80 / 3600)}
    assert acme["mean_queue_s"] == 30


@pytest.mark.usefixtures("stored")
def test_an_admin_sees_every_tenant(client: TestClient) -> None:
    response = client.get("/api/usage")

    assert response.status_code == 200, response.text
    assert {entry["tenant"]: entry["jobs"] for entry in response.json()} == {
        "acme": {"succeeded": 2},
        "globex": {"succeeded": 1},
    }


@pytest.mark.usefixtures("stored")
def test_a_tenant_user_sees_only_its_own_and_gets_403_on_another(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_acme(monkeypatch)

    mine = client.get("/api/usage")
    other = client.get("/api/usage", params={"tenant": "globex"})

    assert [entry["tenant"] for entry in mine.json()] == ["acme"]
    assert other.status_code == 403
    assert "globex" in other.json()["detail"]


def test_a_bad_window_is_422_naming_since(client: TestClient) -> None:
    response = client.get("/api/usage", params={"since": "a week"})

    assert response.status_code == 422
    assert "since:" in response.json()["detail"]


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of `GET /metrics`, parsed as Prometheus parses them, by name and labels."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


@pytest.mark.usefixtures("stored")
def test_the_metrics_hold_the_stored_records_numbers_without_credentials(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    web.app.dependency_overrides.clear()  # no caller at all

    def nobody_asks(user: object, tenant: str, method: str = "GET") -> bool:
        raise AssertionError("a scrape asks no user's rights")

    monkeypatch.setattr(web, "may_use_runs", nobody_asks)

    samples = scrape(client)

    acme, globex = (("tenant", "acme"),), (("tenant", "globex"),)
    assert samples["trainyard_jobs", (("state", "succeeded"), *acme)] == 2
    assert samples["trainyard_jobs", (("state", "running"), *globex)] == 0
    assert samples["trainyard_queue_length", acme] == 0
    platform = ("failure_class", "platform_fault")
    assert samples["trainyard_retries_total", (platform, *acme)] == 2
    assert samples["trainyard_lost_seconds_total", (platform, *acme)] == 160
    assert samples["trainyard_goodput_ratio", acme] == pytest.approx(270 / 330)
    assert samples["trainyard_gpu_seconds_held_total", globex] == 4 * 330
    # Each fault's restart took 20 s: in the 30 s bucket, not the 10 s one.
    assert samples["trainyard_recovery_seconds_bucket", (("le", "10.0"), *acme)] == 0
    assert samples["trainyard_recovery_seconds_bucket", (("le", "30.0"), *acme)] == 2
    assert samples["trainyard_recovery_seconds_count", acme] == 2
    assert samples["trainyard_recovery_seconds_sum", acme] == 40
