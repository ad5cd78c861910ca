"""Metrics as users see them: every attempt's rows, attempt by attempt in numeric order."""

from __future__ import annotations

import json

from trainyard.cli.status import JobStatus
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.jobs.progress import read_metrics
from trainyard.jobs.records import FailureInfo, JobState
from trainyard.storage.local import LocalStore

JOB_ID = "acme.digits-mlp.20261124-215908-abcd"
LAYOUT = JobLayout(JOB_ID)


def write_rows(store: LocalStore, attempt: int, steps: list[int], blank: bool = False) -> None:
    lines = [json.dumps({"step": step, "attempt": attempt, "loss": 1 / step}) for step in steps]
    if blank:
        lines.insert(1, "")
    store.put_bytes(LAYOUT.metrics(attempt), ("\n".join(lines) + "\n").encode())


def test_rows_come_attempt_by_attempt_in_numeric_order(local_store: LocalStore) -> None:
    # Written out of order; attempt 10 sorts before 2 as text.
    write_rows(local_store, 10, [7, 8])
    write_rows(local_store, 2, [3, 4, 5], blank=True)
    write_rows(local_store, 1, [1, 2])

    rows = read_metrics(local_store, JOB_ID)

    assert [(row["attempt"], row["step"]) for row in rows] == [
        (1, 1),
        (1, 2),
        (2, 3),
        (2, 4),
        (2, 5),
        (10, 7),
        (10, 8),
    ]


def test_other_logs_and_other_jobs_are_not_metrics(local_store: LocalStore) -> None:
    write_rows(local_store, 1, [1])
    local_store.put_bytes(LAYOUT.learner_log(RunMode.TRAIN, 1, 0), b'{"step": 99}\n')
    local_store.put_json(LAYOUT.outcome(RunMode.TRAIN, 1, 0), {"step": 98})
    other = JobLayout(JOB_ID + "0")
    local_store.put_bytes(other.metrics(1), b'{"step": 97}\n')

    assert read_metrics(local_store, JOB_ID) == [{"step": 1, "attempt": 1, "loss": 1.0}]


def test_job_without_metrics_has_no_rows(local_store: LocalStore) -> None:
    assert read_metrics(local_store, JOB_ID) == []


def test_status_as_json_keeps_the_failure_fields() -> None:
    failure = FailureInfo(failure_class="user_error", task="validate", message="resources: is 1")
    status = JobStatus(
        job_id=JOB_ID,
        tenant="acme",
        dag_id="trainyard_acme",
        dag_run_id="run",
        state=JobState.FAILED,
        attempt=0,
        progress=None,
        step=None,
        total_steps=None,
        elapsed_s=None,
        eta_s=None,
        failure=failure,
        evaluation=None,
        model=None,
        model_version=None,
    )

    data = json.loads(json.dumps(status.as_dict(), default=str))

    assert data["state"] == "failed"
    assert data["failure"] == {
        "failure_class": "user_error",
        "task": "validate",
        "message": "resources: is 1",
        "fix": "",
    }
