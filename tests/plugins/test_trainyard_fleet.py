"""The fleet routes: usage per tenant from the stored records, only the caller's tenants."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trainyard_fleet as fleet_routes
import trainyard_web as web
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support.accounting import faulted_job
from trainyard.jobs.records import save_record
from trainyard.storage.local import LocalStore
from trainyard.tenancy.names import gpu_pool, job_page_path

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


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller is an admin; acme's GPU pool has 3 of 8 slots in use."""
    monkeypatch.setattr(fleet_routes, "is_admin", lambda user: True)
    monkeypatch.setattr(
        fleet_routes,
        "pool_slots",
        lambda pools: {name: (3, 8) for name in pools if name == gpu_pool("acme")},
    )


@pytest.mark.usefixtures("stored", "fleet")
def test_the_fleet_api_gives_each_tenant_its_quota_use_goodput_and_failure_causes(
    client: TestClient,
) -> None:
    response = client.get("/api/fleet", params={"since": "7d"})

    assert response.status_code == 200, response.text
    acme, globex = response.json()
    assert (acme["tenant"], globex["tenant"]) == ("acme", "globex")
    assert acme["pools"] == [{"pool": gpu_pool("acme"), "used": 3, "total": 8}]
    assert acme["max_running_jobs"] == 4
    assert acme["goodput"] == pytest.approx(270 / 330)
    assert acme["lost_hours_by_class"] == {"platform_fault": pytest.approx(80 / 3600)}
    [cause] = acme["causes"]
    assert cause["failure_class"] == "platform_fault"
    assert cause["attempts"] == 1  # the job of 30 days ago is outside the window
    assert cause["jobs"] == {"acme.digits.new": job_page_path("acme", "acme.digits.new", "")}


@pytest.mark.usefixtures("stored", "fleet")
def test_the_admin_page_and_landing_page_for_an_admin(client: TestClient) -> None:
    admin = client.get("/admin")
    landing = client.get("/")

    assert admin.status_code == 200
    assert "admin.js" in admin.text
    assert "uPlot.iife.min.js" in admin.text
    assert client.get("/static/admin.js").status_code == 200
    assert landing.status_code == 200
    assert 'href="/admin"' in landing.text
    row = re.search(r'<tr data-tenant="acme">(.*?)</tr>', landing.text)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row[1])
    assert cells[1:4] == ["0", "0", "0"]  # running, queued, failed
    assert "3 of 8" in cells[4]
    assert cells[5] == "82%"


@pytest.mark.usefixtures("stored", "fleet")
def test_a_tenant_user_gets_403_on_the_fleet_and_lands_on_its_jobs(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_acme(monkeypatch)
    monkeypatch.setattr(fleet_routes, "is_admin", lambda user: False)

    assert client.get("/admin").status_code == 403
    assert client.get("/api/fleet").status_code == 403
    landing = client.get("/", follow_redirects=False)
    assert landing.status_code == 303
    assert landing.headers["location"] == "/tenants/acme/jobs"


@pytest.mark.usefixtures("stored", "fleet")
def test_a_user_of_several_tenants_sees_them_without_the_admin_link(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleet_routes, "is_admin", lambda user: False)

    landing = client.get("/")

    assert landing.status_code == 200
    assert re.findall(r'<tr data-tenant="([^"]+)">', landing.text) == ["acme", "globex"]
    assert 'href="/admin"' not in landing.text
