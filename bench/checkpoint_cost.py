"""(2) Checkpoint cost: training speed with checkpoints every 10 s vs none.

Both runtime variants run the learner runtime exactly as the learner task does (the local
backend, the embedded default's local storage), so the checkpoint variant pays for saving
(inside the training loop) and for the upload beside training (in the runtime's sync thread).
"No checkpoints" sets an interval longer than the run. Bare `python train.py` is shown for
reference: the difference to the runtime is what the runtime's own work costs training.
Speed is steps per second between the first and the last metric row, so start-up is excluded.
Where load from other processes swamps a 2 % difference, two steadier figures bound the cost:
the time one save takes on the training thread, and the CPU the runtime uses beside training.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.common import (
    Context,
    Figure,
    Table,
    Target,
    children_cpu,
    run_bare,
    steps_per_second,
)
from devkit.deployment import EXAMPLE
from trainyard.backends.base import LearnerSpec
from trainyard.backends.local.backend import LocalProcessBackend
from trainyard.data.packaging import upload_directory
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.jobs.progress import read_metrics
from trainyard.storage.config import LocalStorageConfig
from trainyard.storage.local import LocalStore
from trainyard.tenancy.config import TenantConfig, TrainyardConfig

FULL_INTERVAL = 10.0
QUICK_INTERVAL = 0.5
NEVER = 1e9  # an interval no run reaches
TRAIN_SECONDS = 30.0
QUICK_EPOCHS = 30
FULL_ROUNDS = 5
FULL_SAVES, QUICK_SAVES = 50, 5
#: The runtime's log line for each committed checkpoint (trainyard/runtime/sync.py).
COMMITTED = "trainyard INFO committed checkpoint"


@dataclass(frozen=True)
class RuntimeRun:
    speed: float  # steps per second
    committed: int  # checkpoints the runtime committed
    checkpoint_bytes: int  # size of the example's checkpoint file (model + optimizer state)
    seconds: float  # wall time of the whole run
    cpu: float  # CPU seconds of the runtime and the training command together


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
        watchdog_startup=0,
        storage=storage,
        work_dir=root / "work",
        cpus=1,
        memory_bytes=2 * 2**30,
        gpus=0,
    )
    lines: list[str] = []
    backend = LocalProcessBackend(
        TrainyardConfig(
            work_dir=root / "work", tenants=[TenantConfig(name="bench", storage=storage)]
        ),
        "bench",
    )
    cpu, started = children_cpu(), time.perf_counter()
    [learner] = backend.run(spec, on_output=lines.append)
    seconds, cpu = time.perf_counter() - started, children_cpu() - cpu
    if learner.exit_code != 0:
        raise RuntimeError(f"the runtime exited {learner.exit_code}:\n" + "\n".join(lines[-20:]))
    return RuntimeRun(
        speed=steps_per_second(read_metrics(store, job_id)),
        committed=sum(line.startswith(COMMITTED) for line in lines),
        checkpoint_bytes=max(
            info.size for info in store.list(layout.checkpoints) if info.key.endswith(".pt")
        ),
        seconds=seconds,
        cpu=cpu,
    )


#: Times the example's own `save_checkpoint` (torch.save into tmp-*, then rename) on a model and
#: Adam state like train.py's; run in the example's directory, prints seconds per save as JSON.
SAVE_TIMER = """
import json, statistics, sys, tempfile, time
from pathlib import Path
import torch
from train import build_model, save_checkpoint
torch.set_num_threads(1)
model = build_model()
optimizer = torch.optim.Adam(model.parameters())
model(torch.rand(16, 64)).sum().backward()
optimizer.step()
times = []
with tempfile.TemporaryDirectory() as folder:
    for step in range(int(sys.argv[1])):
        started = time.perf_counter()
        save_checkpoint(Path(folder), {"model": model.state_dict(),
                        "optimizer": optimizer.state_dict(), "step": step, "epoch": 0})
        times.append(time.perf_counter() - started)
print(json.dumps(times))
"""


def save_times(saves: int) -> list[float]:
    result = subprocess.run(
        [sys.executable, "-c", SAVE_TIMER, str(saves)],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        check=True,
    )
    times: list[float] = json.loads(result.stdout.strip().splitlines()[-1])
    return times


def run(ctx: Context) -> list[Table]:
    interval = QUICK_INTERVAL if ctx.quick else FULL_INTERVAL
    epochs = QUICK_EPOCHS if ctx.quick else ctx.epochs_for(TRAIN_SECONDS)
    bare = Figure("bare python train.py, no checkpoints", "steps/s", digits=0)
    plain = Figure("runtime, no checkpoints", "steps/s", digits=0)
    saving = Figure(f"runtime, checkpoint every {interval:g} s", "steps/s", digits=0)
    cost = Figure("checkpoint cost (slowdown vs no checkpoints)", "%", target=Target(2.0))
    runtime_cost = Figure("runtime cost (runtime vs bare, no checkpoints)", "%")
    runtime_cpu = Figure("CPU the runtime uses beside training", "% of a core", digits=1)
    committed = Figure("checkpoints committed per run", "", digits=0)
    save = Figure("one save inside the training loop (torch.save, rename)", "ms")
    save_share = Figure(f"saving, as a share of a {FULL_INTERVAL:g} s interval", "%", digits=3)
    checkpoint_bytes = 0
    ctx.dataset()  # made once, outside the CPU accounting of the first run
    # Each round is short next to the load swings of a shared machine: more rounds than usual.
    for repeat in range(ctx.repeats if ctx.quick else max(ctx.repeats, FULL_ROUNDS)):
        speeds: dict[str, float] = {}
        cpu: dict[str, float] = {}
        plain_seconds = 0.0
        variants = ["bare", "plain", "saving"]
        # Rotate the order, so that no variant always runs first (or last) in a round.
        for variant in variants[repeat % 3 :] + variants[: repeat % 3]:
            if variant == "bare":
                before = children_cpu()
                speeds[variant] = steps_per_second(run_bare(ctx, epochs, interval=NEVER).rows)
                cpu[variant] = children_cpu() - before
            elif variant == "plain":
                measured = run_runtime(ctx, epochs, NEVER)
                speeds[variant], cpu[variant] = measured.speed, measured.cpu
                plain_seconds = measured.seconds
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
        runtime_cpu.add(100 * (cpu["plain"] - cpu["bare"]) / plain_seconds)
    for seconds in save_times(QUICK_SAVES if ctx.quick else FULL_SAVES):
        save.add(1000 * seconds)
        save_share.add(100 * seconds / FULL_INTERVAL)
    notes = [
        f"{epochs} epochs per run; a digits checkpoint (model + Adam state) is "
        f"{checkpoint_bytes / 1024:.0f} KiB, uploaded to local storage (the embedded default)",
        "slowdowns are per round (the three variants run back to back, order rotated)",
        "runtime CPU: CPU seconds of runtime + training minus those of the bare run of the same "
        "round, per second of the run",
        "the save is the only checkpoint work on the training thread; the upload runs in the "
        "runtime's process, so it costs training only where cores are short",
    ]
    return [
        Table(
            "Checkpoint cost: training speed with and without checkpoints",
            [bare, plain, saving, cost, runtime_cost, runtime_cpu, committed, save, save_share],
            notes,
        )
    ]
