"""Notifications through the providers' notifiers: a local SMTP server gets the mail, a local
webhook receiver the Slack message, and a dead endpoint raises nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from devkit.s3_server import free_port
from operators.deployment import notify
from tests.support.notifications import (
    Inbox,
    Webhook,
    body_of,
    smtp_connection,
    smtp_server,
    webhook_receiver,
)
from trainyard.jobs.lineage import Lineage
from trainyard.jobs.records import AttemptInfo, FailureInfo, JobRecord
from trainyard.jobs.registry import ModelVersion
from trainyard.jobs.state import RunFacts, job_view
from trainyard.tenancy.config import NotifierConfig, TenantConfig

JOB_ID = "acme.digits.20261201-100000-ab12"
STARTED = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
EMAIL: dict[str, object] = {
    "kind": "email",
    "connection": "trainyard_smtp",
    "to": ["ml@example.com"],
    "from_email": "trainyard@example.com",
}
SLACK: dict[str, object] = {"kind": "slack", "connection": "trainyard_slack"}


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    with smtp_server() as inbox:
        monkeypatch.setenv("AIRFLOW_CONN_TRAINYARD_SMTP", inbox.connection())
        yield inbox


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    with webhook_receiver() as hook:
        monkeypatch.setenv("AIRFLOW_CONN_TRAINYARD_SLACK", hook.connection())
        yield hook


def tenant(*channels: dict[str, object]) -> TenantConfig:
    return TenantConfig.model_validate(
        {
            "name": "acme",
            "storage": {"kind": "local", "root": "/tmp/acme"},
            "notifications": list(channels),
        }
    )


def failure_notice() -> notify.Notice:
    failure = FailureInfo(
        failure_class="user_error",
        task="learner",
        message="[user_error] ZeroDivisionError at train.py line 3",
        fix="correct train.py line 3 {{ not a template }}",
    )
    record = JobRecord(
        job_id=JOB_ID,
        tenant="acme",
        dag_id="trainyard_acme",
        dag_run_id=JOB_ID,
        manifest={},
        failure=failure,
        attempts=[AttemptInfo(attempt=2, failure_class="user_error", started_at=STARTED)],
    )
    view = job_view(RunFacts(state="failed"), record, [])
    return notify.failure_notice(record, view, "ZeroDivisionError at train.py line 3")


def test_failure_mail_and_slack_message_carry_class_cause_fix_and_link(
    smtp: Inbox, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.test:8080/")
    notify.send(tenant(EMAIL, SLACK), failure_notice(), {})

    [mail] = smtp.mails
    assert mail["Subject"] == f"[Trainyard] {JOB_ID} failed: user_error"
    assert mail["To"] == "ml@example.com"
    body = body_of(mail)
    assert "ZeroDivisionError at train.py line 3" in body
    assert "correct train.py line 3 {{ not a template }}" in body
    assert f"http://airflow.test:8080/trainyard/tenants/acme/jobs/{JOB_ID}" in body
    assert "<th align='left'>attempt</th><td>2</td>" in body
    [message] = webhook.received
    text = str(message["text"])
    assert "cause: ZeroDivisionError at train.py line 3" in text
    assert "fix: correct train.py line 3" in text


def test_a_channel_only_hears_the_events_it_asked_for(smtp: Inbox, webhook: Webhook) -> None:
    only_success = {**EMAIL, "events": ["success"]}
    notify.send(tenant(only_success, SLACK), failure_notice(), {})

    assert smtp.mails == []
    assert len(webhook.received) == 1


def test_a_dead_endpoint_raises_nothing_and_the_other_channel_still_hears(
    webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TRAINYARD_SMTP", smtp_connection(free_port()))

    notify.send(tenant(EMAIL, SLACK), failure_notice(), {})

    assert len(webhook.received) == 1


def test_an_email_channel_without_recipients_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=re.escape("to: [someone@example.com]")):
        NotifierConfig.model_validate({"kind": "email", "connection": "smtp_default"})


def test_by_default_a_channel_hears_failures_and_rejections_not_successes(
    webhook: Webhook,
) -> None:
    record = JobRecord(
        job_id=JOB_ID,
        tenant="acme",
        dag_id="trainyard_acme",
        dag_run_id=JOB_ID,
        manifest={"name": "digits"},
        evaluation={"accuracy": 0.91},
    )
    version = ModelVersion(
        job_name="digits",
        version=3,
        job_id=JOB_ID,
        created_at=datetime.now(UTC),
        metric="accuracy",
        value=0.91,
        metrics={"accuracy": 0.91},
        status="rejected",
        reason="accuracy 0.91 is not better than production v2's 0.95",
        lineage=Lineage(
            job_id=JOB_ID, airflow_run_id=JOB_ID, manifest={}, code_digest="", framework="x"
        ),
    )
    channels = tenant(SLACK)

    notify.send(channels, notify.success_notice(record, version), {})
    notify.send(channels, notify.rejected_notice(record, version), {})

    [message] = webhook.received
    assert "digits v3 rejected by the evaluation gate" in message["text"]
    assert "not better than production v2's 0.95" in message["text"]
