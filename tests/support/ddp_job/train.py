"""Data-parallel digits training with PyTorch DDP over gloo: the multi-learner test job.

It follows only the environment contract (torch.distributed's `env://` variables and
Trainyard's directories): each rank trains on its shard of the data, rank 0 checkpoints and
writes the model, every rank prints its loss (its learner log) and appends it to its metrics
file. A stop request on any rank (SIGTERM: eviction, cancel) stops all ranks at the same step,
after rank 0 has checkpointed it, so the retry resumes the whole group from there.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

STEPS = 600
STEP_SECONDS = 0.02  # slow enough to be interrupted mid-training
STOPPED_EXIT_CODE = 143


def newest_checkpoint(directory: Path) -> Path | None:
    steps = {
        int(m.group(1)): path
        for path in directory.glob("step-*")
        if (m := re.fullmatch(r"step-(\d+)", path.name))
    }
    return steps[max(steps)] if steps else None


def save(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Write into tmp-<N>, then rename: the platform only sees complete step-<N> dirs."""
    tmp, target = directory / f"tmp-{step}", directory / f"step-{step}"
    if target.exists():
        return
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step},
        tmp / "state.pt",
    )
    tmp.rename(target)


def main() -> int:
    stop_requested = False

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    table = np.loadtxt(
        Path(os.environ["TRAINYARD_DATA_DIR"]) / "train.csv", delimiter=",", skiprows=1
    )
    x = torch.tensor(table[rank::world, :-1] / 16.0, dtype=torch.float32)
    y = torch.tensor(table[rank::world, -1], dtype=torch.long)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpoints = Path(os.environ["TRAINYARD_CHECKPOINT_DIR"])
    interval = float(os.environ.get("TRAINYARD_CHECKPOINT_INTERVAL", "60"))
    step = 0
    resume_from = newest_checkpoint(checkpoints)
    if resume_from is not None:
        state = torch.load(resume_from / "state.pt", weights_only=True)
        model.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        print(f"rank {rank} resumed from {resume_from.name}", flush=True)
    last_checkpoint = time.monotonic()
    while step < STEPS:
        batch = torch.randint(len(x), (32,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()  # DDP averages the gradients of all ranks here
        optimizer.step()
        step += 1
        time.sleep(STEP_SECONDS)
        due = rank == 0 and time.monotonic() - last_checkpoint >= interval
        flags = torch.tensor([float(stop_requested), float(due)])
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)  # every rank sees any rank's stop
        if step % 20 == 0:
            print(f"rank {rank} of {world}: step {step} loss {loss.item():.4f}", flush=True)
            with open(os.environ["TRAINYARD_METRICS_FILE"], "a") as metrics:
                metrics.write(json.dumps({"step": step, "loss": round(loss.item(), 5)}) + "\n")
        if rank == 0 and (flags[0] or flags[1]):
            save(checkpoints, model.module, optimizer, step)
            last_checkpoint = time.monotonic()
        if flags[0]:
            print(f"rank {rank}: stop requested at step {step}", flush=True)
            return STOPPED_EXIT_CODE
    if rank == 0:
        save(checkpoints, model.module, optimizer, step)
        results = Path(os.environ["TRAINYARD_RESULT_DIR"])
        results.mkdir(parents=True, exist_ok=True)
        torch.save(model.module.state_dict(), results / "model.pt")
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank} of {world}: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
