"""A job's status as JSON keeps the failure's fields and its start."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from trainyard.cli.status import JobStatus
from trainyard.jobs.records import FailureInfo, JobState

JOB_ID = "acme.digits-mlp.20261124-215908-abcd"


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
        started_at=datetime(2026, 11, 24, 21, 59, 8, tzinfo=UTC),
        elapsed_s=None,
        eta_s=None,
        failure=failure,
        runtime_s=None,
        max_runtime_s=None,
        evaluation=None,
        model=None,
        model_version=None,
    )

    data = json.loads(json.dumps(status.as_dict(), default=str))

    assert data["state"] == "failed"
    assert data["started_at"] == "2026-11-24T21:59:08+00:00"
    assert data["failure"] == {
        "failure_class": "user_error",
        "task": "validate",
        "message": "resources: is 1",
        "fix": "",
    }
