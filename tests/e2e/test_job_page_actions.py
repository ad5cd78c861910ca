"""The job page's actions in headless Chromium, on real Airflow (FAB auth) with a real PyTorch
job: alice (acme's user) pauses then resumes it with the page's buttons, confirming each, and
sees the new state without a reload; carol (Airflow's Viewer) sees no buttons and a forged POST
gets 403."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Dialog

from devkit.airflow_env import create_user
from devkit.deployment import Deployment, deploy
from devkit.learners import wait_for_end, wait_until
from devkit.s3_server import S3Server
from tests.e2e.test_faults import committed, submit
from tests.e2e.test_job_page import Session
from tests.support.browser import chromium
from tests.support.users import ALICE
from trainyard.cli.client import AirflowClient
from trainyard.jobs.records import JobState, load_record
from trainyard.tenancy.names import tenant_role

pytestmark = pytest.mark.e2e

CAROL = ("carol", "carol-secret-4")  # Airflow's Viewer: reads every DAG's runs, starts none


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[Deployment]:
    with deploy(tmp_path_factory.mktemp("job-actions"), s3_server, auth_manager="fab") as deployed:
        create_user(deployed.cluster.env, *ALICE, tenant_role("acme"))
        create_user(deployed.cluster.env, *CAROL, "Viewer")
        yield deployed


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def test_pause_and_resume_with_the_pages_buttons_and_a_viewer_gets_none(
    deployment: Deployment, client: AirflowClient, browser: Browser
) -> None:
    store = deployment.stores["acme"]
    job_id = submit(deployment, "acme", "buttons", command="python train.py --epochs 600")
    wait_until(lambda: committed(store, job_id), "a committed checkpoint", timeout=300)
    alice = Session(browser, deployment, ALICE)
    confirmations: list[str] = []

    def confirm(dialog: Dialog) -> None:
        confirmations.append(dialog.message)
        dialog.accept()

    alice.page.on("dialog", confirm)
    alice.open(f"/trainyard/tenants/acme/jobs/{job_id}")
    page = alice.page
    page.wait_for_selector('body[data-loaded="running"]')

    page.locator('button[data-action="pause"]').click()

    page.wait_for_selector('body[data-loaded="paused"]', timeout=60_000)  # no reload
    assert confirmations == [f"Pause job {job_id}?"]
    record = load_record(store, job_id)
    assert record is not None
    assert record.state is JobState.PAUSED

    page.locator('button[data-action="resume"]').click()

    page.wait_for_selector('body[data-loaded="queued"], body[data-loaded="running"]')
    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final.failure
    page.wait_for_selector('body[data-loaded="succeeded"]')
    assert alice.errors == [], "JavaScript errors on the page"
    alice.close()

    carol = Session(browser, deployment, CAROL)
    carol.open(f"/trainyard/tenants/acme/jobs/{job_id}")
    carol.page.wait_for_selector('body[data-loaded="succeeded"]')
    assert carol.page.locator("#actions button").count() == 0
    forged = carol.context.request.post(
        f"{deployment.cluster.api_url}/trainyard/api/jobs/{job_id}/cancel"
    )
    assert forged.status == 403
    carol.close()
