"""The plugin's pages in headless Chromium (Debian's, driven by Playwright), served by uvicorn
from stored records without Airflow: the scripts run without a JavaScript error and draw what
the API holds. The same pages behind real Airflow: tests/e2e/test_job_page.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trainyard_fleet as fleet_routes
import trainyard_web as web
import uvicorn
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page

from devkit.s3_server import free_port
from tests.manifest.test_sweep import sweep_manifest
from tests.plugins.stored import JOB_ID, stored_job
from tests.support.browser import chromium
from trainyard.jobs.layout import JobLayout
from trainyard.manifest.schema import parse_manifest
from trainyard.manifest.sweep import ParameterValue
from trainyard.storage.local import LocalStore
from trainyard.sweeps.record import SweepRecord, SweepState, TrialRow, write_sweep


@pytest.fixture
def server(client: TestClient, tmp_path: Path) -> Iterator[str]:
    """The app (auth overridden by the `client` fixture) on a loopback port."""
    stored_job(tmp_path)
    port = free_port()
    served = uvicorn.Server(
        uvicorn.Config(web.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not served.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    served.should_exit = True
    thread.join(timeout=30)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def watched(browser: Browser) -> tuple[Page, list[str]]:
    """A tab and the JavaScript errors and failed loads it reports."""
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}"))
    page.on(
        "response", lambda r: errors.append(f"{r.status}: {r.url}") if r.status >= 400 else None
    )
    return page, errors


def test_the_job_page_draws_each_attempt_and_the_resume_mark(
    server: str, browser: Browser, tmp_path: Path
) -> None:
    page, errors = watched(browser)
    page.goto(f"{server}/tenants/acme/jobs/{JOB_ID}")
    page.wait_for_selector('body[data-loaded="succeeded"]')

    loss = page.locator('.card[data-metric="loss"]')
    assert loss.locator("canvas").count() == 1
    legend = loss.locator(".u-legend .u-series .u-label").all_inner_texts()
    assert legend == ["step", "attempt 1", "attempt 2"]
    assert loss.locator('.resume[data-attempt="2"]').inner_text() == (
        "attempt 2 resumed at step 30"
    )
    timeline = page.locator("tr.attempt .failure-class").all_inner_texts()
    assert timeline == ["platform_fault", "succeeded"]
    assert "a retry resumes from the newest committed checkpoint" in page.inner_text("body")
    assert page.locator("text=Airflow run").get_attribute("target") == "_top"
    assert page.locator("#gate").inner_text().startswith("Gate: promoted (v1)")
    assert "v1 (production)" in page.locator('tr[data-version="1"]').inner_text()
    text = page.inner_text("body")
    assert "null" not in text
    assert "[object" not in text
    assert "undefined" not in text
    page.screenshot(path=str(tmp_path / "job-page.png"), full_page=True)
    assert errors == []


def test_the_list_filters_by_state_and_links_each_job(server: str, browser: Browser) -> None:
    page, errors = watched(browser)
    page.goto(f"{server}/tenants/acme/jobs")
    row = page.locator(f'tr[data-job="{JOB_ID}"]')
    row.locator(".state.succeeded").wait_for()
    page.wait_for_selector("#updated:has-text('updated')")  # jobs.js refreshed the table

    assert "step 40" in row.inner_text()
    page.locator("#state-filter").select_option("running")
    row.wait_for(state="detached")
    assert "state=running" in page.url
    page.locator("#state-filter").select_option("")
    row.locator("a").click()
    page.wait_for_selector('body[data-loaded="succeeded"]')
    assert errors == []


def test_the_fleet_page_draws_its_charts_and_links_the_failed_jobs(
    server: str, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleet_routes, "is_admin", lambda user: True)
    monkeypatch.setattr(fleet_routes, "pool_slots", lambda pools: {pools[0]: (1, 4)})
    page, errors = watched(browser)
    page.goto(f"{server}/admin")
    page.locator("#window").select_option("")  # all time: the stored job is from 2026-12-01
    page.wait_for_selector('tr[data-tenant="acme"] td.goodput:has-text("50%")')

    assert page.locator(".card[data-chart] canvas").count() == 3
    legends = page.locator(".card[data-chart] .u-legend .u-series .u-label").all_inner_texts()
    assert {"running", "max running", "goodput", "lost"} <= set(legends)
    assert "1 of 4" in page.locator('tr[data-tenant="acme"]').inner_text()
    cause = page.locator('tr.cause[data-class="platform_fault"]')
    assert cause.locator(f'a:has-text("{JOB_ID}")').get_attribute("href") == (
        f"/tenants/acme/jobs/{JOB_ID}"
    )
    text = page.inner_text("body")
    assert "null" not in text
    assert "undefined" not in text
    assert "[object" not in text
    assert errors == []


def stored_sweep(tmp_path: Path) -> str:
    """A finished sweep of acme: three trials (one pruned), each with its loss over steps."""
    store = LocalStore(tmp_path / "storage" / "acme")
    sweep_id = "acme.tune.20261207-101500-ab12"
    manifest = parse_manifest(sweep_manifest(trials=3))
    losses = {1: (0.30, "succeeded", 40), 2: (2.0, "pruned", 10), 3: (0.1, "succeeded", 40)}
    trials = []
    for number, (loss, state, steps) in losses.items():
        job_id = f"{sweep_id}.t{number}"
        rows = "".join(
            json.dumps({"step": step, "loss": loss + 1 / step, "attempt": 1}) + "\n"
            for step in range(10, steps + 1, 10)
        )
        store.put_bytes(JobLayout(job_id).metrics(1), rows.encode())
        values: dict[str, ParameterValue] = {
            "lr": 0.001 * number,
            "dropout": 0.1,
            "hidden": 32,
            "optimizer": "adam",
        }
        trials.append(
            TrialRow(
                number=number - 1,
                job_id=job_id,
                values=values,
                state=state,
                metric=loss,
                step=steps,
            )
        )
    assert write_sweep(
        store,
        SweepRecord(
            sweep_id=sweep_id,
            tenant="acme",
            dag_id="trainyard_acme.sweeps",
            dag_run_id=sweep_id,
            manifest=manifest.model_dump(mode="json"),
            state=SweepState.SUCCEEDED,
            trials=trials,
            best_job_id=f"{sweep_id}.t3",
        ),
        None,
    )
    return sweep_id


def test_the_sweep_page_lists_the_trials_best_first_and_draws_each_ones_metric(
    server: str, browser: Browser, tmp_path: Path
) -> None:
    sweep_id = stored_sweep(tmp_path)
    page, errors = watched(browser)
    page.goto(f"{server}/tenants/acme/sweeps/{sweep_id}")
    page.wait_for_selector('body[data-loaded="succeeded"]')

    rows = page.locator("tr.trial")
    assert [rows.nth(i).get_attribute("data-job") for i in range(3)] == [
        f"{sweep_id}.t3",
        f"{sweep_id}.t1",
        f"{sweep_id}.t2",
    ]
    assert page.locator("tr.trial.best").get_attribute("data-job") == f"{sweep_id}.t3"
    assert "(best)" in rows.nth(0).inner_text()
    assert page.locator('tr.trial[data-state="pruned"] .state.pruned').count() == 1
    legend = page.locator("#trials-chart .u-legend .u-series .u-label").all_inner_texts()
    assert legend == ["step", "t3 (succeeded)", "t1 (succeeded)", "t2 (pruned)"]
    assert page.locator("#best a").get_attribute("href") == f"/tenants/acme/jobs/{sweep_id}.t3"
    text = page.inner_text("body")
    assert "null" not in text
    assert "undefined" not in text
    assert errors == []
    page.screenshot(path=str(tmp_path / "sweep-page.png"), full_page=True)
    # Another tenant's sweep id under acme, or no sweep, is a 404 naming it.
    for missing in (sweep_id.replace("acme", "globex", 1), "acme.none.1"):
        response = page.goto(f"{server}/api/tenants/acme/sweeps/{missing}")
        assert response is not None
        assert response.status == 404
        assert "has no sweep" in page.inner_text("body")
