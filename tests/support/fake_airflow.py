"""A stand-in for Airflow's REST API on loopback, for CLI tests that need no real Airflow.

It logs anyone in and answers `GET /api/v2/dags/<dag_id>` with 200 for the DAGs the user may
read and 403 for the others, as FAB's auth manager does; everything else is 404.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.http_server import serving


@dataclass
class FakeAirflow:
    url: str
    readable_dags: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)


@contextmanager
def fake_airflow(readable_dags: set[str]) -> Iterator[FakeAirflow]:
    state = FakeAirflow(url="", readable_dags=set(readable_dags))

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append(f"POST {self.path}")
            if self.path == "/auth/token":
                self._answer(201, {"access_token": "token"})
            else:
                self._answer(404, {"detail": "Not Found"})

        def do_GET(self) -> None:
            state.requests.append(f"GET {self.path}")
            prefix = "/api/v2/dags/"
            dag_id = self.path.removeprefix(prefix)
            if not self.path.startswith(prefix) or "/" in dag_id or "?" in dag_id:
                self._answer(404, {"detail": "Not Found"})
            elif dag_id in state.readable_dags:
                self._answer(200, {"dag_id": dag_id})
            else:
                self._answer(403, {"detail": "Forbidden"})

        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as state.url:
        yield state
