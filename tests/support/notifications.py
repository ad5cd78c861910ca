"""Local receivers of notifications: an SMTP server (aiosmtpd) keeping the mails it gets, and
an HTTP endpoint keeping the JSON bodies posted to it (a Slack incoming webhook's stand-in)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from devkit.http_server import serving
from devkit.s3_server import free_port


@dataclass
class Inbox:
    port: int = 0
    mails: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd's hook for a received message."""
        mail = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(mail, EmailMessage)
        self.mails.append(mail)
        return "250 OK"

    def connection(self) -> str:
        """An Airflow smtp connection (AIRFLOW_CONN_<ID> value) to this server."""
        return smtp_connection(self.port)


def smtp_connection(port: int) -> str:
    return json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "extra": {"disable_tls": True, "disable_ssl": True, "timeout": 10},
        }
    )


def body_of(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("html", "plain"))
    assert part is not None, "the mail has no text"
    return str(part.get_content())


@contextmanager
def smtp_server() -> Iterator[Inbox]:
    inbox = Inbox(port=free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


@dataclass
class Webhook:
    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)

    def connection(self) -> str:
        """An Airflow slackwebhook connection whose webhook URL is this endpoint."""
        return json.dumps({"conn_type": "slackwebhook", "password": f"{self.url}/hook"})


@contextmanager
def webhook_receiver() -> Iterator[Webhook]:
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as hook.url:
        yield hook
