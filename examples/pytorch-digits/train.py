"""Train a small MLP on the digits CSVs, following only Trainyard's environment contract.

Resumable: it continues from the highest `step-<N>` checkpoint in TRAINYARD_CHECKPOINT_DIR,
down to the batch, so a preempted job loses at most one checkpoint interval. It imports
nothing from Trainyard and runs in any image with PyTorch and NumPy.
"""

from __future__ import annotations

import argparse
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
from torch import nn

SEED = 0
BATCH_SIZE = 16
STOPPED_EXIT_CODE = 143  # 128 + SIGTERM: tells the platform the run was stopped, not done
#: The learner's GPU where it has one (resources.gpus: job-gpu.yaml), else the CPU.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def env_path(name: str) -> Path:
    return Path(os.environ[name])


def load_split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels scaled to [0, 1] and labels from `<TRAINYARD_DATA_DIR>/<name>.csv`."""
    table = np.loadtxt(env_path("TRAINYARD_DATA_DIR") / f"{name}.csv", delimiter=",", skiprows=1)
    return torch.tensor(table[:, :-1] / 16.0, dtype=torch.float32, device=DEVICE), torch.tensor(
        table[:, -1], dtype=torch.long, device=DEVICE
    )


def build_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)).to(DEVICE)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def latest_checkpoint(directory: Path) -> Path | None:
    steps = {
        int(m.group(1)): p
        for p in directory.glob("step-*")
        if (m := re.fullmatch(r"step-(\d+)", p.name)) and p.is_dir()
    }
    return steps[max(steps)] if steps else None


def save_checkpoint(directory: Path, state: dict[str, object]) -> None:
    """Write into tmp-*, then rename: the platform only ever sees complete `step-<N>` dirs."""
    target = directory / f"step-{state['step']}"
    if target.exists():
        return
    tmp = directory / f"tmp-{state['step']}"
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save(state, tmp / "state.pt")
    tmp.rename(target)
    print(f"checkpoint saved: {target.name}", flush=True)


def log_metrics(**row: object) -> None:
    with open(os.environ["TRAINYARD_METRICS_FILE"], "a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--min-step-seconds",
        type=float,
        default=0.0,
        help="hold each training step to at least this long: a stand-in for a bigger model, so "
        "that a sweep's early stopping or a pause can be seen on a fast machine",
    )
    args = parser.parse_args()

    stop_requested = False

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    checkpoint_dir = env_path("TRAINYARD_CHECKPOINT_DIR")
    interval = float(os.environ.get("TRAINYARD_CHECKPOINT_INTERVAL", "60"))

    print(f"device {DEVICE} (torch.cuda.is_available() = {torch.cuda.is_available()})", flush=True)
    x_train, y_train = load_split("train")
    x_test, y_test = load_split("test")
    model = build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    batches_per_epoch = (len(x_train) + BATCH_SIZE - 1) // BATCH_SIZE
    total_steps = args.epochs * batches_per_epoch
    step = 0

    resume_from = latest_checkpoint(checkpoint_dir)
    if resume_from is not None:
        state = torch.load(resume_from / "state.pt", weights_only=True, map_location=DEVICE)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        print(f"resumed from {resume_from.name} (step {step})", flush=True)

    def checkpoint() -> None:
        save_checkpoint(
            checkpoint_dir,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "epoch": step // batches_per_epoch,
            },
        )

    last_checkpoint = time.monotonic()
    while step < total_steps:
        epoch, offset = divmod(step, batches_per_epoch)
        # The batch order depends only on the epoch, so a resumed run continues exactly.
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(SEED + epoch))
        model.train()
        for batch in range(offset, batches_per_epoch):
            step_started = time.monotonic()
            index = order[batch * BATCH_SIZE : (batch + 1) * BATCH_SIZE]
            loss = nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            time.sleep(max(0.0, args.min_step_seconds - (time.monotonic() - step_started)))
            step += 1
            if step % 10 == 0 or step == total_steps:
                log_metrics(
                    step=step,
                    epoch=epoch,
                    loss=round(loss.item(), 5),
                    progress=round(step / total_steps, 4),
                    total_steps=total_steps,
                    time=round(time.time(), 3),
                )
            if stop_requested:
                checkpoint()
                print(f"stop requested: checkpointed step {step}, exiting", flush=True)
                return STOPPED_EXIT_CODE
            if time.monotonic() - last_checkpoint >= interval:
                checkpoint()
                last_checkpoint = time.monotonic()
        # The held-out accuracy at each epoch's end: what a sweep can rank and stop trials by.
        log_metrics(
            step=step,
            epoch=epoch,
            val_accuracy=round(accuracy(model, x_test, y_test), 5),
            progress=round(step / total_steps, 4),
            total_steps=total_steps,
            time=round(time.time(), 3),
        )
        print(f"epoch {epoch} done: loss {loss.item():.4f}", flush=True)

    checkpoint()
    result_dir = env_path("TRAINYARD_RESULT_DIR")
    result_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), result_dir / "model.pt")
    print(f"held-out accuracy {accuracy(model, x_test, y_test):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
