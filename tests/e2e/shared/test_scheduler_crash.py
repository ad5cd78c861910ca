"""A scheduler killed with its process group mid-training: no split brain, and the job finishes.

It has its own Airflow: killing the scheduler's process group takes the LocalExecutor's
workers and the task supervisors down with it, as a crashed scheduler container would. The
task process runs in its own process group and outlives them; it must stop its learner (with
a final checkpoint) rather than train beside the retry (`trainyard.jobs.fencing`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import pytest

from devkit.deployment import Deployment
from devkit.learners import learner_processes, live_attempts, wait_for_end, wait_until
from trainyard.cli.client import AirflowClient
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import MANIFEST, JobLayout, RunMode
from trainyard.jobs.records import JobState, load_record

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def attempts_alive(job_id: str) -> Iterator[list[set[int]]]:
    """Sample, all along, which attempts of `job_id` have a live learner runtime at once."""
    samples: list[set[int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            samples.append(live_attempts().get(job_id, set()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        done.set()
        sampler.join()


def test_a_killed_scheduler_leaves_no_second_attempt_beside_the_first(
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
    layout = JobLayout(job_id)
    checkpoints = CheckpointStore(store, layout)

    with attempts_alive(job_id) as samples:
        wait_until(checkpoints.committed_steps, "a committed checkpoint")
        deployment.cluster.kill("scheduler", signal.SIGKILL)
        # The task process lost its supervisor: it stops its learner, which saves and exits.
        wait_until(
            lambda: not learner_processes(job_id, user_code=False),
            "the orphaned attempt's learner to stop",
            timeout=120,
        )
        deployment.cluster.start("scheduler")
        final = wait_for_end(client, store, job_id)

    assert final.state is JobState.SUCCEEDED, final.failure
    assert final.attempt >= 2  # the crashed attempt was retried, not lost
    assert max(len(alive) for alive in samples) == 1, "two attempts trained at once"
    retry_log = store.get_bytes(layout.learner_log(RunMode.TRAIN, final.attempt, 0))
    assert b"resumed from step-" in retry_log  # from a checkpoint, not from scratch
    # One history: later steps were committed by the same or later attempts, and the job's
    # current attempt owns the pointer.
    record = load_record(store, job_id)
    assert record is not None
    committers = [
        store.get_json(f"{layout.checkpoint(step)}/{MANIFEST}")["attempt"]
        for step in checkpoints.committed_steps()
    ]
    assert committers == sorted(committers)
    assert committers[-1] == record.current_attempt == final.attempt
    assert store.get_json(layout.checkpoint_pointer)["attempt"] == final.attempt
    assert store.get_json(layout.results_manifest)["attempt"] == final.attempt
