"""(2) Checkpoint cost: training speed with checkpoints every 10 s vs none.

Both runtime variants run the learner runtime exactly as the learner task does (the local
backend, the embedded default's local storage), so the checkpoint variant pays for saving
(inside the training loop) and for the upload beside training (in the runtime's sync thread).
"No checkpoints" sets an interval longer than the run. Bare `python train.py` is shown for
reference: the difference to the runtime is what the runtime's own work costs training.
Speed is steps per second between the first and the last metric row, so start-up is excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.common import Context, Figure, Table, Target, run_bare, steps_per_second
from tests.support.deployment import EXAMPLE
from trainyard.backends.base import LearnerSpec
from trainyard.backends.local import LocalProcessBackend
from trainyard.jobs import JobLayout, RunMode
from trainyard.packaging import upload_directory
from trainyard.status import read_metrics
from trainyard.storage.config import LocalStorageConfig
from trainyard.storage.local import LocalStore

FULL_INTERVAL = 10.0
QUICK_INTERVAL = 0.5
NEVER = 1e9  # an interval no run reaches
TRAIN_SECONDS = 40.0
QUICK_EPOCHS = 30
#: The runtime's log line for each committed checkpoint (trainyard/runtime/sync.py).
COMMITTED = "trainyard INFO committed checkpoint"


@dataclass(frozen=True)
class RuntimeRun:
    speed: float  # steps per second
    committed: int  # checkpoints the runtime committed
    checkpoint_bytes: int  # size of the example's checkpoint file (model + optimizer state)


def run_runtime(ctx: Context, epochs: int, interval: float) -> RuntimeRun:
    """Train through the learner runtime, as the learner task does, on local storage."""
    root = ctx.scratch("runtime")
    storage = LocalStorageConfig(root=root / "storage")
    store = LocalStore(storage.root)
    job_id = f"bench.checkpoint-cost.{root.name}"
    layout = JobLayout(job_id)
    upload_directory(store, EXAMPLE, layout.code, "code.path")
    store.upload_dir(ctx.dataset(), layout.data)
    spec = LearnerSpec(
        job_id=job_id,
        tenant="bench",
        mode=RunMode.TRAIN,
        command=f"python train.py --epochs {epochs}",
        attempt=1,
        num_learners=1,
        checkpoint_interval=interval,
        checkpoint_keep=3,
        watchdog=0,
        storage=storage,
        work_dir=root / "work",
        cpus=1,
        memory_bytes=2 * 2**30,
        gpus=0,
    )
    lines: list[str] = []
    [learner] = LocalProcessBackend().run(spec, on_output=lines.append)
    if learner.exit_code != 0:
        raise RuntimeError(f"the runtime exited {learner.exit_code}:\n" + "\n".join(lines[-20:]))
    return RuntimeRun(
        speed=steps_per_second(read_metrics(store, job_id)),
        committed=sum(line.startswith(COMMITTED) for line in lines),
        checkpoint_bytes=max(
            info.size for info in store.list(layout.checkpoints) if info.key.endswith(".pt")
        ),
    )


def run(ctx: Context) -> list[Table]:
    interval = QUICK_INTERVAL if ctx.quick else FULL_INTERVAL
    epochs = QUICK_EPOCHS if ctx.quick else ctx.epochs_for(TRAIN_SECONDS)
    bare = Figure("bare python train.py, no checkpoints", "steps/s", digits=0)
    plain = Figure("runtime, no checkpoints", "steps/s", digits=0)
    saving = Figure(f"runtime, checkpoint every {interval:g} s", "steps/s", digits=0)
    cost = Figure("checkpoint cost (slowdown vs no checkpoints)", "%", target=Target(2.0))
    runtime_cost = Figure("runtime cost (runtime vs bare, no checkpoints)", "%")
    committed = Figure("checkpoints committed per run", "", digits=0)
    checkpoint_bytes = 0
    for repeat in range(ctx.repeats):
        speeds: dict[str, float] = {}
        variants = ["bare", "plain", "saving"]
        # Rotate the order, so that no variant always runs first (or last) in a round.
        for variant in variants[repeat % 3 :] + variants[: repeat % 3]:
            if variant == "bare":
                speeds[variant] = steps_per_second(run_bare(ctx, epochs, interval=NEVER).rows)
            elif variant == "plain":
                speeds[variant] = run_runtime(ctx, epochs, NEVER).speed
            else:
                measured = run_runtime(ctx, epochs, interval)
                speeds[variant] = measured.speed
                committed.add(measured.committed)
                checkpoint_bytes = measured.checkpoint_bytes
        bare.add(speeds["bare"])
        plain.add(speeds["plain"])
        saving.add(speeds["saving"])
        cost.add(100 * (1 - speeds["saving"] / speeds["plain"]))
        runtime_cost.add(100 * (1 - speeds["plain"] / speeds["bare"]))
    notes = [
        f"{epochs} epochs per run; a digits checkpoint (model + Adam state) is "
        f"{checkpoint_bytes / 1024:.0f} "
        "KiB, uploaded to local storage (the embedded default)",
        "slowdowns are per round (the three variants run back to back, order rotated)",
    ]
    return [
        Table(
            "Checkpoint cost: training speed with and without checkpoints",
            [bare, plain, saving, cost, runtime_cost, committed],
            notes,
        )
    ]
