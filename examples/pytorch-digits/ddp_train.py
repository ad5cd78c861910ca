"""The digits MLP with PyTorch DDP (gloo) on `resources.learners` CPU learners.

Trainyard gives every learner torch.distributed's `env://` variables (MASTER_ADDR,
MASTER_PORT, WORLD_SIZE, RANK); each rank trains on its share of every batch and DDP averages
the gradients. Every rank resumes from the newest `step-<N>` the runtime restored; rank 0
alone writes checkpoints, metrics and the model (only rank 0's are kept).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from types import FrameType

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from train import (
    BATCH_SIZE,
    SEED,
    STOPPED_EXIT_CODE,
    accuracy,
    build_model,
    env_path,
    latest_checkpoint,
    load_split,
    log_metrics,
    save_checkpoint,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()

    stop_requested = False

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    dist.init_process_group("gloo")  # env://: the variables Trainyard provides
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    checkpoint_dir = env_path("TRAINYARD_CHECKPOINT_DIR")
    interval = float(os.environ.get("TRAINYARD_CHECKPOINT_INTERVAL", "60"))

    x_train, y_train = load_split("train")
    x_test, y_test = load_split("test")
    local = build_model()
    optimizer = torch.optim.Adam(local.parameters(), lr=args.lr)
    batches_per_epoch = (len(x_train) + BATCH_SIZE - 1) // BATCH_SIZE
    total_steps = args.epochs * batches_per_epoch
    step = 0
    resume_from = latest_checkpoint(checkpoint_dir)
    if resume_from is not None:
        state = torch.load(resume_from / "state.pt", weights_only=True)
        local.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        print(f"rank {rank} resumed from {resume_from.name} (step {step})", flush=True)
    model = DistributedDataParallel(local)

    def checkpoint() -> None:
        if rank == 0:
            save_checkpoint(
                checkpoint_dir,
                {"model": local.state_dict(), "optimizer": optimizer.state_dict(), "step": step},
            )

    last_checkpoint = time.monotonic()
    while step < total_steps:
        epoch, offset = divmod(step, batches_per_epoch)
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(SEED + epoch))
        model.train()
        for batch in range(offset, batches_per_epoch):
            index = order[batch * BATCH_SIZE : (batch + 1) * BATCH_SIZE][rank::world]
            loss = nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad()
            loss.backward()  # DDP: the gradients' all-reduce over the ranks
            optimizer.step()
            step += 1
            if rank == 0 and step % 10 == 0:
                log_metrics(
                    step=step,
                    epoch=epoch,
                    loss=round(loss.item(), 5),
                    progress=round(step / total_steps, 4),
                    time=round(time.time(), 3),
                )
            if stop_requested:
                checkpoint()
                print(f"rank {rank}: stop requested at step {step}, exiting", flush=True)
                return STOPPED_EXIT_CODE
            if time.monotonic() - last_checkpoint >= interval:
                checkpoint()
                last_checkpoint = time.monotonic()

    checkpoint()
    if rank == 0:
        result_dir = env_path("TRAINYARD_RESULT_DIR")
        result_dir.mkdir(parents=True, exist_ok=True)
        torch.save(local.state_dict(), result_dir / "model.pt")
        print(f"held-out accuracy {accuracy(local, x_test, y_test):.4f}", flush=True)
    # Every rank leaves the group together: a rank whose peer has already torn down gloo's
    # connections aborts in its own teardown (SIGABRT), which would fail the attempt.
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
