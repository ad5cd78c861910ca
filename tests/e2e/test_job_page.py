"""The Trainyard page in headless Chromium, and notifications, through real Airflow (FAB).

alice holds acme's role (S3 storage, user code sandboxed). Her job is SIGKILLed mid-training
and retried; its page must show the loss of both attempts with the resume mark, the attempt
timeline with the failure class, and the list its final state, with no JavaScript error; bob's
tenant's page is refused. acme's notification channels: an SMTP server (aiosmtpd), a Slack
webhook (a local receiver) and an email channel whose server is gone, which must change no
job's outcome. alice pauses then resumes a job with the page's buttons, confirming each, and
sees the new state without a reload; carol (Airflow's Viewer) sees no buttons and a forged POST
gets 403. Chromium is Debian's (`make services`); Playwright drives it, never downloading
a browser.
"""

from __future__ import annotations

import html
import math
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page

from devkit.airflow_env import create_user
from devkit.deployment import Deployment, deploy
from devkit.learners import wait_for_end, wait_until
from devkit.s3_server import S3Server, free_port
from tests.support.browser import chromium
from tests.support.fault_jobs import (
    committed,
    kill_user_code_after_first_checkpoint,
    submit,
)
from tests.support.notifications import (
    Inbox,
    Webhook,
    body_of,
    smtp_connection,
    smtp_server,
    webhook_receiver,
)
from tests.support.users import ALICE, BOB, token
from trainyard.cli.client import AirflowClient
from trainyard.jobs.accounting import read_utilisation, store_accounts, usage_by_tenant
from trainyard.jobs.records import JobState, load_record
from trainyard.tenancy.names import tenant_role

pytestmark = pytest.mark.e2e

CAROL = ("carol", "carol-secret-4")  # Airflow's Viewer: reads every DAG's runs, starts none

CHANNELS = [
    {
        "kind": "email",
        "connection": "trainyard_smtp",
        "to": ["ml-team@example.com"],
        "from_email": "trainyard@example.com",
    },
    {"kind": "slack", "connection": "trainyard_slack", "events": ["failure", "success"]},
    {
        "kind": "email",
        "connection": "trainyard_dead_smtp",
        "to": ["nobody@example.com"],
        "from_email": "trainyard@example.com",
        "events": ["failure", "success"],
    },
]


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[Inbox, Webhook]]:
    with smtp_server() as inbox, webhook_receiver() as hook:
        yield inbox, hook


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
    s3_server: S3Server,
    receivers: tuple[Inbox, Webhook],
) -> Iterator[Deployment]:
    inbox, hook = receivers
    connections = {
        "AIRFLOW_CONN_TRAINYARD_SMTP": inbox.connection(),
        "AIRFLOW_CONN_TRAINYARD_SLACK": hook.connection(),
        "AIRFLOW_CONN_TRAINYARD_DEAD_SMTP": smtp_connection(free_port()),  # nothing listens
    }
    with deploy(
        tmp_path_factory.mktemp("job-page"),
        s3_server,
        tenant_settings={"acme": {"notifications": CHANNELS}},
        airflow_env=connections,
        auth_manager="fab",
    ) as deployed:
        create_user(deployed.cluster.env, *ALICE, tenant_role("acme"))
        create_user(deployed.cluster.env, *BOB, tenant_role("globex"))
        create_user(deployed.cluster.env, *CAROL, "Viewer")
        yield deployed


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


class Session:
    """A browser tab logged in as a user (Airflow's `_token` cookie), recording every
    JavaScript error and failed request, which the test counts as failures."""

    def __init__(self, browser: Browser, deployment: Deployment, user: tuple[str, str]) -> None:
        self.base = deployment.cluster.api_url
        self.context = browser.new_context(viewport={"width": 1400, "height": 1800})
        self.context.add_cookies(
            [{"name": "_token", "value": token(deployment, user), "url": self.base}]
        )
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console error: {message.text}")

    def open(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def close(self) -> None:
        self.context.close()


def test_the_job_page_shows_both_attempts_the_resume_mark_and_the_timeline(
    deployment: Deployment,
    client: AirflowClient,
    browser: Browser,
    receivers: tuple[Inbox, Webhook],
    tmp_path: Path,
) -> None:
    store = deployment.stores["acme"]
    job_id = submit(deployment, "acme", "page")
    kill_user_code_after_first_checkpoint(store, job_id, signal.SIGKILL)
    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final.failure
    assert final.attempt == 2
    # Attempt 2's rows reached storage (the sandboxed learner's metrics file is synced).
    assert store.exists(f"jobs/{job_id}/logs/metrics-attempt-2.jsonl")

    alice = Session(browser, deployment, ALICE)
    response = alice.open(f"/trainyard/tenants/acme/jobs/{job_id}")
    assert response.status == 200
    page = alice.page
    page.wait_for_selector('body[data-loaded="succeeded"]')
    loss = page.locator('.card[data-metric="loss"]')
    legend = loss.locator(".u-legend .u-series .u-label").all_inner_texts()
    assert "attempt 1" in legend
    assert "attempt 2" in legend
    resume = loss.locator('.resume[data-attempt="2"]')
    assert resume.count() == 1
    assert "attempt 2 resumed at step" in resume.inner_text()
    first = page.locator('tr.attempt[data-attempt="1"] .failure-class')
    assert first.inner_text() == "platform_fault"
    # What the learners used, sampled by the runtime every 5 s: a CPU and a memory curve with a
    # line per attempt sampled (no GPU here, so no GPU curve).
    sampled = {f"attempt {row['attempt']}, rank 0" for row in read_utilisation(store, job_id)}
    assert sampled  # ~20 s of training in all
    cpu = page.locator('.card[data-usage="CPU cores used"]')
    assert cpu.locator("canvas").count() == 1
    assert sampled <= set(cpu.locator(".u-legend .u-series .u-label").all_inner_texts())
    assert page.locator('.card[data-usage="memory (GiB)"] canvas').count() == 1
    assert page.locator('.card[data-usage="GPU utilisation (%)"]').count() == 0
    assert page.locator("#gate").inner_text().startswith("Gate: promoted")
    assert page.locator("text=Airflow run").get_attribute("href") == (
        f"/dags/trainyard_acme/runs/{job_id}"
    )
    page.screenshot(path=str(tmp_path / "job-page.png"), full_page=True)
    assert (tmp_path / "job-page.png").stat().st_size > 10_000

    alice.open("/trainyard/tenants/acme/jobs")
    row = page.locator(f'tr[data-job="{job_id}"]')
    row.locator(".state.succeeded").wait_for()
    page.locator("#state-filter").select_option("failed")
    row.wait_for(state="detached")
    page.screenshot(path=str(tmp_path / "job-list.png"), full_page=True)

    assert alice.errors == [], "JavaScript errors on the pages"

    # bob's tenant: the page and its data are refused (the browser logs the 403 itself).
    other = job_id.replace("acme", "globex", 1)
    assert alice.open(f"/trainyard/tenants/globex/jobs/{other}").status == 403
    assert alice.open(f"/trainyard/api/tenants/globex/jobs/{other}").status == 403
    assert alice.open("/trainyard/tenants/globex/jobs").status == 403
    alice.close()

    # Notifications: the success reached the webhook; the dead mail server changed nothing.
    _, hook = receivers
    texts = wait_until(
        lambda: [m["text"] for m in hook.received if job_id in str(m.get("text"))],
        f"the Slack message of {job_id}",
    )
    assert f"[Trainyard] {job_id} succeeded" in texts[0]


def test_a_failing_job_mails_its_cause_and_fix_and_the_dead_channel_changes_nothing(
    deployment: Deployment, client: AirflowClient, receivers: tuple[Inbox, Webhook]
) -> None:
    inbox, hook = receivers
    store = deployment.stores["acme"]
    job_id = submit(
        deployment,
        "acme",
        "raises",
        command="python -c \"raise ValueError('learning rate must be positive')\"",
    )

    final = wait_for_end(client, store, job_id)

    assert final.state is JobState.FAILED
    assert final.failure is not None
    assert final.failure.failure_class == "user_error"
    record = load_record(store, job_id)
    assert record is not None
    assert record.failure is not None
    assert record.failure.fix
    [mail] = wait_until(
        lambda: [m for m in inbox.mails if job_id in str(m["Subject"])], f"the mail of {job_id}"
    )
    assert mail["Subject"] == f"[Trainyard] {job_id} failed: user_error"
    assert mail["To"] == "ml-team@example.com"
    body = html.unescape(body_of(mail))
    assert "ValueError: learning rate must be positive" in body
    assert record.failure.fix in body
    assert f"{deployment.cluster.api_url}/trainyard/tenants/acme/jobs/{job_id}" in body
    slack = wait_until(
        lambda: [m["text"] for m in hook.received if job_id in str(m.get("text"))],
        f"the Slack message of {job_id}",
    )
    assert "failure class: user_error" in slack[0]


def test_the_fleet_page_is_the_admins_and_a_tenant_user_lands_on_its_jobs(
    deployment: Deployment, browser: Browser
) -> None:
    alice = Session(browser, deployment, ALICE)
    assert alice.open("/trainyard/").status == 200
    assert alice.page.url == f"{alice.base}/trainyard/tenants/acme/jobs"
    assert alice.open("/trainyard/admin").status == 403
    assert alice.open("/trainyard/api/fleet").status == 403
    assert alice.open("/trainyard/api/usage?tenant=globex").status == 403
    alice.close()

    env = deployment.cluster.env
    admin = Session(browser, deployment, (env["TRAINYARD_USERNAME"], env["TRAINYARD_PASSWORD"]))
    assert admin.open("/trainyard/").status == 200
    assert admin.page.locator('#tenants tr[data-tenant="globex"]').count() == 1
    admin.page.locator("#fleet").click()
    admin.page.wait_for_url("**/trainyard/admin")
    admin.page.locator("#window").select_option("")  # all time
    usage = usage_by_tenant(store_accounts(deployment.stores["acme"])).get("acme")
    goodput = usage.goodput if usage else None
    shown = "" if goodput is None else f"{math.floor(goodput * 100 + 0.5)}%"  # Math.round
    admin.page.wait_for_function(
        "([selector, text]) => document.querySelector(selector)?.textContent === text",
        arg=['#tenants tr[data-tenant="acme"] td.goodput', shown],
    )
    assert admin.page.locator(".card[data-chart] canvas").count() == 3
    admin.page.screenshot(path=str(deployment.root / "fleet-page.png"), full_page=True)
    assert admin.errors == [], "JavaScript errors on the fleet page"
    admin.close()


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
