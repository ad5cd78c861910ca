"""A stand-in for Airflow's REST API on loopback, for CLI tests that need no real Airflow.

It logs anyone in and answers `GET /api/v2/dags/<dag_id>` with 200 for the DAGs the user may
read and 403 for the others, as FAB's auth manager does. The runs in `runs` (per DAG id) are
listed (`.../dagRuns`) and read one by one (`.../dagRuns/<run id>`, with the task instances
in `task_instances` per run id, also across runs: `.../dagRuns/~/taskInstances?task_id=...`);
`PATCH .../dagRuns/<run id>` sets a run's state, `POST .../dagRuns` adds a queued run;
everything else is 404.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devkit.http_server import serving


@dataclass
class FakeAirflow:
    url: str
    readable_dags: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    task_instances: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def answer(self, path: str) -> tuple[int, object]:
        """The status and body of `GET path` (query string ignored)."""
        prefix = "/api/v2/dags/"
        if not path.startswith(prefix):
            return 404, {"detail": "Not Found"}
        dag_id, *rest = path.removeprefix(prefix).split("?")[0].split("/")
        if dag_id not in self.readable_dags:
            return 403, {"detail": "Forbidden"}
        runs = {run["dag_run_id"]: run for run in self.runs.get(dag_id, [])}
        match rest:
            case []:
                return 200, {"dag_id": dag_id}
            case ["dagRuns"]:
                return 200, {"dag_runs": list(runs.values())}
            case ["dagRuns", run_id] if run_id in runs:
                return 200, runs[run_id]
            case ["dagRuns", "~", "taskInstances"]:
                task_id = parse_qs(urlsplit(path).query).get("task_id", [None])[0]
                return 200, {
                    "task_instances": [
                        {**ti, "dag_run_id": run_id}
                        for run_id in runs
                        for ti in self.task_instances.get(run_id, [])
                        if task_id is None or ti["task_id"] == task_id
                    ]
                }
            case ["dagRuns", run_id, "taskInstances"] if run_id in runs:
                return 200, {"task_instances": self.task_instances.get(run_id, [])}
        return 404, {"detail": "Not Found"}

    def trigger(self, path: str, body: dict[str, Any]) -> tuple[int, object]:
        """`POST .../dagRuns`: a queued run with `body`'s run id and conf (409 if it exists)."""
        status, dag = self.answer(path.removesuffix("/dagRuns"))
        if status != 200 or not path.endswith("/dagRuns") or not isinstance(dag, dict):
            return status if status != 200 else 404, dag
        runs = self.runs.setdefault(dag["dag_id"], [])
        if any(run["dag_run_id"] == body["dag_run_id"] for run in runs):
            return 409, {"detail": "the run exists"}
        run = {"dag_run_id": body["dag_run_id"], "state": "queued", "conf": body.get("conf")}
        runs.append(run)
        return 200, run

    def patch(self, path: str, body: dict[str, Any]) -> tuple[int, object]:
        """`PATCH .../dagRuns/<run id>`: the run takes `body`'s state."""
        status, run = self.answer(path)
        if status != 200 or not isinstance(run, dict) or "dag_run_id" not in run:
            return status if status != 200 else 404, run
        run["state"] = body["state"]
        return 200, run


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
            data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append(f"POST {self.path}")
            if self.path == "/auth/token":
                self._answer(201, {"access_token": "token"})
            else:
                self._answer(*state.trigger(self.path, json.loads(data or b"{}")))

        def do_PATCH(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            state.requests.append(f"PATCH {self.path}")
            self._answer(*state.patch(self.path, body))

        def do_GET(self) -> None:
            state.requests.append(f"GET {self.path}")
            self._answer(*state.answer(self.path))

        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as state.url:
        yield state
