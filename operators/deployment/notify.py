"""Notifications of a tenant's job outcomes, sent with Airflow's notifier classes.

Each channel of the tenant's `notifications` (deployment config) becomes the provider's
notifier: `SmtpNotifier` (email) or `SlackWebhookNotifier` (slack), with the Airflow connection
the channel names. The text is Trainyard's (class, cause, fix, a link to the job page); it goes
to the notifier as finished text and is never rendered as a Jinja template, since causes quote
user code and log lines. A notifier that fails is logged and changes nothing: the job's outcome
is decided before any message is sent.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass

from airflow.sdk import Context
from airflow.sdk.bases.notifier import BaseNotifier

from trainyard.jobs.records import JobRecord
from trainyard.jobs.registry import ModelVersion
from trainyard.jobs.state import JobView
from trainyard.tenancy.config import NotifierConfig, NotifyEvent, TenantConfig
from trainyard.tenancy.names import job_page_path

log = logging.getLogger(__name__)


def job_page_url(tenant: str, job_id: str) -> str:
    """The job's page (the plugin's, `job_page_path`) under Airflow's `[api] base_url`."""
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="").rstrip("/")
    return f"{base}{job_page_path(tenant, job_id)}"


@dataclass(frozen=True)
class Notice:
    """One message: a subject and labelled lines, as plain text (Slack) or HTML (email)."""

    event: NotifyEvent
    subject: str
    fields: tuple[tuple[str, str], ...]

    def text(self) -> str:
        return "\n".join([self.subject, *(f"{label}: {value}" for label, value in self.fields)])

    def html(self) -> str:
        rows = "".join(
            f"<tr><th align='left'>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
            for label, value in self.fields
        )
        return f"<p>{html.escape(self.subject)}</p><table>{rows}</table>"


def failure_notice(record: JobRecord, view: JobView, cause: str) -> Notice:
    """The failure of a job as `job_view` reads it (its state, attempt and failure)."""
    failure = view.failure
    assert failure is not None, "a failed job's view carries its failure"
    return Notice(
        NotifyEvent.FAILURE,
        f"[Trainyard] {record.job_id} {view.state.value}: {failure.failure_class}",
        (
            ("job", record.job_id),
            ("failure class", failure.failure_class),
            ("task", failure.task),
            ("attempt", str(view.attempt)),
            ("cause", cause),
            ("fix", failure.fix or "see the job page and the task log"),
            ("job page", job_page_url(record.tenant, record.job_id)),
        ),
    )


def success_notice(record: JobRecord, version: ModelVersion) -> Notice:
    metrics = ", ".join(f"{k} = {v}" for k, v in sorted((record.evaluation or {}).items()))
    return Notice(
        NotifyEvent.SUCCESS,
        f"[Trainyard] {record.job_id} succeeded",
        (
            ("job", record.job_id),
            ("evaluation", metrics or "none"),
            ("model", f"{version.job_name} v{version.version} ({version.status})"),
            ("job page", job_page_url(record.tenant, record.job_id)),
        ),
    )


def rejected_notice(record: JobRecord, version: ModelVersion) -> Notice:
    return Notice(
        NotifyEvent.REJECTED,
        f"[Trainyard] {version.job_name} v{version.version} rejected by the evaluation gate",
        (
            ("job", record.job_id),
            ("model", f"{version.job_name} v{version.version}"),
            ("reason", version.reason),
            ("job page", job_page_url(record.tenant, record.job_id)),
        ),
    )


def notifier_for(channel: NotifierConfig, notice: Notice) -> BaseNotifier:
    """The provider's notifier for one channel, carrying the finished message."""
    if channel.kind == "email":
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        return SmtpNotifier(
            to=channel.to,
            from_email=channel.from_email,
            smtp_conn_id=channel.connection,
            subject=notice.subject,
            html_content=notice.html(),
        )
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    return SlackWebhookNotifier(slack_webhook_conn_id=channel.connection, text=notice.text())


def send(tenant: TenantConfig, notice: Notice, context: Context) -> None:
    """Send `notice` on every channel of `tenant` that asked for its event; never raises."""
    for channel in tenant.notifications:
        if notice.event not in channel.events:
            continue
        try:
            # notify(), not the notifier's __call__: that would render the text as a template.
            notifier_for(channel, notice).notify(context)
        except Exception:
            log.exception(
                "the %s notification of %r over connection %r failed; the job's outcome stands",
                channel.kind,
                notice.subject,
                channel.connection,
            )
        else:
            log.info("sent the %s notification %r", channel.kind, notice.subject)
