"""The fault tests' jobs: each framework's example trained long enough to be interrupted, and
the fault that interrupts it once a checkpoint is committed (tests/e2e/shared/test_faults.py,
and the job page's tests, which need a job with two attempts)."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from typing import Any

from devkit.deployment import EXAMPLES, Deployment
from devkit.learners import learner_processes, wait_until
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.progress import estimate, read_metrics
from trainyard.storage import ObjectStore

INTERVAL = 2.0  # seconds between checkpoints
TRAIN = "python train.py --epochs 300"
#: Each framework's example, trained long enough to be interrupted mid-training: the faults
#: are injected once a checkpoint is committed, and the job must still be training then.
#: About 20-30 s each on an idle core (JAX's 300 epochs took 9 s, and a loaded CI run once
#: signalled it after its last step, so the SIGTERM met a finished loop).
FRAMEWORK_TRAINING = {
    "pytorch": TRAIN,
    "tensorflow": "python keras_train.py --epochs 100",
    "jax": "python jax_train.py --epochs 1000",
}
#: A fault injected later than this share of the training may land after the training loop.
LATEST_PROGRESS_TO_INTERRUPT = 0.8
FRAMEWORKS = list(FRAMEWORK_TRAINING)


def submit(
    deployment: Deployment, tenant: str, name: str, framework: str = "pytorch", **changes: Any
) -> str:
    changes.setdefault("example", EXAMPLES[framework])
    changes.setdefault("command", FRAMEWORK_TRAINING[framework])
    changes.setdefault("checkpoint", {"interval": f"{INTERVAL}s", "keep": 5})
    return deployment.submit(
        deployment.write_manifest(tenant, f"{name}.yaml", name=name, **changes)
    )


def committed(store: ObjectStore, job_id: str) -> list[int]:
    return CheckpointStore(store, JobLayout(job_id)).committed_steps()


def kill_user_code_after_first_checkpoint(
    store: ObjectStore, job_id: str, sig: signal.Signals, *, target: str = "user process"
) -> int:
    """Wait for a committed checkpoint and 1 s more, then signal the learner's `target` (the
    user process, its process group, or the runtime); return the newest committed step then."""
    wait_until(lambda: committed(store, job_id), f"a committed checkpoint of {job_id}")
    time.sleep(1.0)
    [process] = wait_until(
        lambda: learner_processes(job_id, user_code=target != "runtime"),
        f"the learner of {job_id}",
    )
    newest = committed(store, job_id)[-1]
    # The stored rows lag the learner's, so this catches a job that is plainly too short.
    now = datetime.now(UTC)
    progress = estimate(read_metrics(store, job_id), now, now, finished=True).fraction or 0.0
    assert progress < LATEST_PROGRESS_TO_INTERRUPT, (
        f"{job_id} is {progress:.0%} trained when the fault comes: too late to interrupt it "
        "reliably; train it longer in FRAMEWORK_TRAINING"
    )
    if target == "process group":
        os.killpg(os.getpgid(process.pid), sig)
    else:
        process.send_signal(sig)
    return newest
