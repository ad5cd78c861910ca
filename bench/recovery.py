"""(3) Recovery: SIGKILL the learner's training process mid-run; how soon does training resume,
and how many steps are lost?

The kills land at phases spread evenly over one checkpoint interval after the training script
saved a checkpoint, so the steps lost sample the whole range a real crash could hit. Recovery
is measured to the first metric row of attempt 2 (its `time` field), minus the retry delay the
policy imposes on a first platform fault: that delay is a choice, not overhead. Each job is
cancelled once it has resumed.
"""

from __future__ import annotations

import math
import re
import signal
import time
from typing import Any

from bench.common import (
    EXAMPLE_CHECKPOINT_INTERVAL,
    Context,
    Figure,
    Table,
    Target,
    first_event,
    poll_until,
    steps_per_second,
    task_log_events,
    wall,
)
from bench.overhead import COMMAND_STARTED, DAG_ID, TENANT
from devkit.learners import learner_processes
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.jobs.progress import read_metrics
from trainyard.storage import ObjectStore

QUICK_INTERVAL = 2.0
QUICK_EPOCHS = 3000  # far more than the test needs: the job is cancelled after resuming
TRAIN_SECONDS = 240.0


def _attempt_rows(store: ObjectStore, job_id: str, attempt: int) -> list[dict[str, Any]]:
    return [row for row in read_metrics(store, job_id) if row.get("attempt") == attempt]


def _resumed_step(store: ObjectStore, job_id: str) -> int | None:
    """The step attempt 2's training script says it resumed from (train.py prints it)."""
    key = JobLayout(job_id).learner_log(RunMode.TRAIN, 2, 0)
    if not store.exists(key):
        return None
    match = re.search(r"resumed from step-(\d+)", store.get_bytes(key).decode())
    return int(match.group(1)) if match else None


def _try_dates(ctx: Context, job_id: str, try_number: int) -> dict[str, Any]:
    details: dict[str, Any] = ctx.client().request(
        "GET", f"/dags/{DAG_ID}/dagRuns/{job_id}/taskInstances/learner/tries/{try_number}"
    )
    return details


def recover_once(
    ctx: Context, name: str, epochs: int, interval: float, phase: float
) -> dict[str, float]:
    """Kill the learner `phase` (0..1) of an interval after it saved a checkpoint."""
    deployment = ctx.deployment()
    store = deployment.stores[TENANT]
    manifest = deployment.write_manifest(
        TENANT,
        f"{name}.yaml",
        name=name,
        command=f"python train.py --epochs {epochs}",
        checkpoint={"interval": f"{interval:g}s", "keep": 3},
    )
    job_id = deployment.submit(manifest)
    checkpoints = CheckpointStore(store, JobLayout(job_id))
    saved = poll_until(checkpoints.committed_steps, f"a commit of {job_id}", timeout=300)[-1]
    # train.py saves right after the metric row of its step (or within the 9 steps before the
    # next row), and then every `interval` seconds: that row dates the save.
    after_save = poll_until(
        lambda: [row for row in _attempt_rows(store, job_id, 1) if row["step"] >= saved],
        f"the metric row of step {saved}",
        timeout=30,
    )
    [process] = poll_until(
        lambda: learner_processes(job_id, user_code=True), f"the learner of {job_id}", timeout=30
    )
    saved_at = float(after_save[0]["time"])
    periods = math.ceil((time.time() + 0.1 - saved_at) / interval - phase)
    time.sleep(max(0.0, saved_at + (periods + phase) * interval - time.time()))
    killed = time.time()
    process.send_signal(signal.SIGKILL)
    resumed = poll_until(
        lambda: _attempt_rows(store, job_id, 2), f"attempt 2 of {job_id} to train", timeout=300
    )
    restored = poll_until(lambda: _resumed_step(store, job_id), "attempt 2's log", timeout=30)
    before = _attempt_rows(store, job_id, 1)
    first_metric = float(resumed[0]["time"])
    try1_end = wall(_try_dates(ctx, job_id, 1)["end_date"])
    try2_start = wall(_try_dates(ctx, job_id, 2)["start_date"])
    command_started = first_event(
        task_log_events(ctx.client(), DAG_ID, job_id, "learner", 2), COMMAND_STARTED
    )
    deployment.cluster.trainyard("cancel", job_id)
    poll_until(
        lambda: (
            not learner_processes(job_id, user_code=True)
            and not learner_processes(job_id, user_code=False)
        ),
        f"the learners of {job_id} to stop after cancel",
        timeout=120,
    )
    lost = int(before[-1]["step"]) - restored
    return {
        "kill -> first metric": first_metric - killed,
        "lost": lost,
        "lost intervals": lost / (steps_per_second(before) * interval),
        "kill -> Airflow ends try 1": try1_end - killed,
        "try 1 ended -> try 2 started": try2_start - try1_end,
        "try 2 started -> command started": command_started - try2_start,
        "command started -> first metric": first_metric - command_started,
    }


def run(ctx: Context) -> list[Table]:
    from operators.dag_factory import LEARNER_RETRY_POLICY  # imports Airflow: only when needed

    retry_delay = LEARNER_RETRY_POLICY.base_delay.total_seconds()
    interval = QUICK_INTERVAL if ctx.quick else EXAMPLE_CHECKPOINT_INTERVAL
    epochs = QUICK_EPOCHS if ctx.quick else ctx.epochs_for(TRAIN_SECONDS)
    recovery = Figure("resume time: kill -> first metric of attempt 2 - retry delay", "s")
    recovery.target = Target(5.0)
    lost = Figure("steps lost (last metric of attempt 1 - restored step)", "steps", digits=0)
    intervals = Figure("steps lost, in checkpoint intervals", "")
    intervals.target = Target(1.0, every=True)
    phases: dict[str, Figure] = {}
    for repeat in range(ctx.repeats):
        phase = (repeat + 0.5) / ctx.repeats
        measured = recover_once(ctx, f"recovery-{repeat}", epochs, interval, phase)
        recovery.add(measured.pop("kill -> first metric") - retry_delay)
        lost.add(measured.pop("lost"))
        intervals.add(measured.pop("lost intervals"))
        for label, seconds in measured.items():
            phases.setdefault(label, Figure(label, "s")).add(seconds)
    notes = [
        f"retry delay of a first platform fault: {retry_delay:g} s (subtracted above, "
        "included in 'try 1 ended -> try 2 started')",
        f"checkpoint interval {interval:g} s; SIGKILL to the training process at phases spread "
        "evenly over the interval after a checkpoint was saved",
        "metric rows come every 10 steps, so 'steps lost' can be up to 9 steps short",
    ]
    return [
        Table(
            f"Recovery after SIGKILL of the learner (digits, checkpoint every {interval:g} s)",
            [recovery, lost, intervals, *phases.values()],
            notes,
        )
    ]
