"""The REST client's trigger is idempotent: a retry after a lost, failed or late answer, whose
first try had created the run, gets Airflow's 409 and returns that run instead of failing or
making a second one (the job id is the run id)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devkit.http_server import serving
from trainyard.cli.client import AirflowClient, ApiSettings

DAG_ID = "trainyard_acme"
JOB_ID = "acme.digits-mlp.20261202-010000-abcd"


@contextmanager
def airflow_losing_first_answer(how: str) -> Iterator[tuple[str, dict[str, dict[str, str]]]]:
    """An API whose first POST of a run creates it, then fails its answer (`how`: a 500, the
    connection closed without one, or an answer later than the client waits); yields the URL
    and the runs it holds."""
    runs: dict[str, dict[str, str]] = {}
    released = threading.Event()  # the late answer comes once the test is over

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if self.path == "/auth/token":
                return self._answer(201, {"access_token": "token"})
            run_id = body["dag_run_id"]
            if run_id in runs:
                return self._answer(409, {"detail": f"DAG run {run_id} already exists"})
            runs[run_id] = {"dag_run_id": run_id, "state": "queued"}
            if how == "server-error":
                return self._answer(500, {"detail": "Internal Server Error"})
            if how == "late-answer":
                released.wait(timeout=60)
                return self._answer(200, runs[run_id])
            self.close_connection = True  # the answer is lost: no response at all
            return None

        def do_GET(self) -> None:
            run_id = self.path.rsplit("/", 1)[-1]
            if run_id in runs:
                self._answer(200, runs[run_id])
            else:
                self._answer(404, {"detail": "Not Found"})

        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
        try:
            yield url, runs
        finally:
            released.set()


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("server-error", id="a-500-after-the-run-was-created"),
        pytest.param("no-answer", id="the-answer-lost"),
        # The client's wait outlasts its whole retry budget: it still asks once more.
        pytest.param("late-answer", id="an-answer-later-than-the-retry-budget"),
    ],
)
def test_a_retried_trigger_returns_the_run_its_first_try_created(how: str) -> None:
    """A 1 s retry budget, a 2 s wait for each answer."""
    with airflow_losing_first_answer(how) as (url, runs):
        settings = ApiSettings(url, "admin", "admin", connect_retry_seconds=1)
        with AirflowClient(settings, timeout=2) as client:
            run = client.trigger_run(DAG_ID, JOB_ID, {"manifest": {}})

    assert run == {"dag_run_id": JOB_ID, "state": "queued"}
    assert list(runs) == [JOB_ID]
