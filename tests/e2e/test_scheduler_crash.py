"""A scheduler killed with SIGKILL mid-run and started again: the job still finishes.

It has its own Airflow: killing the scheduler's process group takes the LocalExecutor's
workers (and the learner task) down with it, as a crashed scheduler container would.
"""

from __future__ import annotations

import signal
import time

import pytest

from devkit.deployment import Deployment
from devkit.learners import wait_for_end, wait_until
from trainyard.cli.client import AirflowClient
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.jobs.records import JobState

pytestmark = pytest.mark.e2e


def test_job_finishes_after_the_scheduler_is_killed_and_restarted(
    deployment: Deployment, client: AirflowClient
) -> None:
    store = deployment.stores["globex"]
    manifest = deployment.write_manifest(
        "globex",
        "crash.yaml",
        name="crash",
        command="python train.py --epochs 300",
        checkpoint={"interval": "2s"},
    )
    job_id = deployment.submit(manifest)
    checkpoints = CheckpointStore(store, JobLayout(job_id))
    wait_until(checkpoints.committed_steps, "a committed checkpoint")

    deployment.cluster.kill("scheduler", signal.SIGKILL)
    time.sleep(3)
    deployment.cluster.start("scheduler")

    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final.failure
    assert final.attempt >= 2  # the crashed attempt was retried, not lost
    retry_log = store.get_bytes(JobLayout(job_id).learner_log(RunMode.TRAIN, final.attempt, 0))
    assert b"resumed from step-" in retry_log  # from a checkpoint, not from scratch
