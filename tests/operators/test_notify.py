"""Notifications through the providers' notifiers: a local SMTP server gets the mail, a local
webhook receiver the Slack message, and a dead endpoint raises nothing."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from operators import notify
from tests.support.http_server import serving
from trainyard.jobs.records import FailureInfo, JobRecord
from trainyard.tenancy.config import NotifierConfig, TenantConfig

JOB_ID = "acme.digits.20261201-100000-ab12"


class Inbox:
    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        mail = message_from_bytes(envelope.content, policy=policy.default)  # type: ignore[attr-defined]
        assert isinstance(mail, EmailMessage)
        self.mails.append(mail)
        return "250 OK"


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv(
        "AIRFLOW_CONN_TRAINYARD_SMTP",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": port,
                "extra": {"disable_tls": True, "disable_ssl": True, "timeout": 10},
            }
        ),
    )
    yield inbox
    controller.stop()


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, object]]]:
    received: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            return

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
        monkeypatch.setenv(
            "AIRFLOW_CONN_TRAINYARD_SLACK",
            json.dumps({"conn_type": "slackwebhook", "password": f"{url}/hook"}),
        )
        yield received


def tenant(*channels: dict[str, object]) -> TenantConfig:
    return TenantConfig.model_validate(
        {
            "name": "acme",
            "storage": {"kind": "local", "root": "/tmp/acme"},
            "notifications": list(channels),
        }
    )


def failure_notice() -> notify.Notice:
    record = JobRecord(
        job_id=JOB_ID, tenant="acme", dag_id="trainyard_acme", dag_run_id=JOB_ID, manifest={}
    )
    failure = FailureInfo(
        failure_class="user_error",
        task="learner",
        message="[user_error] ZeroDivisionError at train.py line 3",
        fix="correct train.py line 3 {{ not a template }}",
    )
    return notify.failure_notice(record, failure, "ZeroDivisionError at train.py line 3")


EMAIL = {
    "kind": "email",
    "connection": "trainyard_smtp",
    "to": ["ml@example.com"],
    "from_email": "trainyard@example.com",
}
SLACK = {"kind": "slack", "connection": "trainyard_slack"}


def test_failure_mail_and_slack_message_carry_class_cause_fix_and_link(
    smtp: Inbox, webhook: list[dict[str, object]]
) -> None:
    notify.send(tenant(EMAIL, SLACK), failure_notice(), {})  # type: ignore[arg-type]

    [mail] = smtp.mails
    assert mail["Subject"] == f"[Trainyard] {JOB_ID} failed: user_error"
    assert mail["To"] == "ml@example.com"
    html_part = mail.get_body(preferencelist=("html", "plain"))
    assert html_part is not None
    body = html_part.get_content()
    assert "ZeroDivisionError at train.py line 3" in body
    assert "correct train.py line 3 {{ not a template }}" in body
    assert f"/trainyard/tenants/acme/jobs/{JOB_ID}" in body
    [message] = webhook
    text = str(message["text"])
    assert "cause: ZeroDivisionError at train.py line 3" in text
    assert "fix: correct train.py line 3" in text


def test_a_channel_only_hears_the_events_it_asked_for(
    smtp: Inbox, webhook: list[dict[str, object]]
) -> None:
    notify.send(tenant({**EMAIL, "events": ["success"]}, SLACK), failure_notice(), {})  # type: ignore[arg-type]

    assert smtp.mails == []
    assert len(webhook) == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_dead_endpoint_raises_nothing_and_the_other_channel_still_hears(
    webhook: list[dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_TRAINYARD_SMTP",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": free_port(),
                "extra": {"disable_tls": True, "disable_ssl": True, "timeout": 5},
            }
        ),
    )

    notify.send(tenant(EMAIL, SLACK), failure_notice(), {})  # type: ignore[arg-type]

    assert len(webhook) == 1


def test_an_email_channel_without_recipients_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=re.escape("to: [someone@example.com]")):
        NotifierConfig.model_validate({"kind": "email", "connection": "smtp_default"})
