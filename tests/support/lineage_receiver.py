"""A local OpenLineage receiver: the HTTP endpoint Airflow's OpenLineage provider posts run
events to, keeping each event for the tests to read."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devkit.http_server import serving

ENDPOINT = "api/v1/lineage"


class LineageReceiver:
    def __init__(self) -> None:
        self.url = ""  # set once it serves
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []

    def transport(self) -> str:
        """The provider's `[openlineage] transport` setting that posts here."""
        return json.dumps({"type": "http", "url": self.url, "endpoint": ENDPOINT})

    def add(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._events.append(event)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)


@contextmanager
def running_lineage_receiver() -> Iterator[LineageReceiver]:
    receiver = LineageReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path.strip("/") != ENDPOINT:
                self.send_response(404)
            else:
                receiver.add(json.loads(body))
                self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the events are what matters."""

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
        receiver.url = url
        yield receiver
