"""Train a small Keras MLP (TensorFlow backend) on the digits CSVs, by the environment contract.

Resumable: it continues from the highest `step-<N>` checkpoint in TRAINYARD_CHECKPOINT_DIR,
down to the batch (model and optimizer state in one `.keras` file), so a preempted job loses
at most one checkpoint interval. It imports nothing from Trainyard and runs in any
environment with TensorFlow, Keras 3 and NumPy.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import re
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import keras
import numpy as np
import tensorflow as tf

SEED = 0
BATCH_SIZE = 16
STOPPED_EXIT_CODE = 143  # 128 + SIGTERM: tells the platform the run was stopped, not done
MODEL_FILE = "model.keras"


def env_path(name: str) -> Path:
    return Path(os.environ[name])


def load_split(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixels scaled to [0, 1] and labels from `<TRAINYARD_DATA_DIR>/<name>.csv`."""
    table = np.loadtxt(env_path("TRAINYARD_DATA_DIR") / f"{name}.csv", delimiter=",", skiprows=1)
    return (table[:, :-1] / 16.0).astype("float32"), table[:, -1].astype("int32")


def build_model(lr: float) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float((model.predict(x, verbose=0).argmax(axis=1) == y).mean())


def latest_checkpoint(directory: Path) -> Path | None:
    steps = {
        int(m.group(1)): p
        for p in directory.glob("step-*")
        if (m := re.fullmatch(r"step-(\d+)", p.name)) and p.is_dir()
    }
    return steps[max(steps)] if steps else None


def save_checkpoint(directory: Path, model: keras.Model, step: int) -> None:
    """Write into tmp-*, then rename: the platform only ever sees complete `step-<N>` dirs."""
    target = directory / f"step-{step}"
    if target.exists():
        return
    tmp = directory / f"tmp-{step}"
    tmp.mkdir(parents=True, exist_ok=True)
    model.save(tmp / MODEL_FILE)
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    tmp.rename(target)
    print(f"checkpoint saved: {target.name}", flush=True)


def log_metrics(**row: object) -> None:
    with open(os.environ["TRAINYARD_METRICS_FILE"], "a") as f:
        f.write(json.dumps(row) + "\n")


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
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(SEED)
    checkpoint_dir = env_path("TRAINYARD_CHECKPOINT_DIR")
    interval = float(os.environ.get("TRAINYARD_CHECKPOINT_INTERVAL", "60"))

    x_train, y_train = load_split("train")
    x_test, y_test = load_split("test")
    batches_per_epoch = (len(x_train) + BATCH_SIZE - 1) // BATCH_SIZE
    total_steps = args.epochs * batches_per_epoch
    step = 0

    resume_from = latest_checkpoint(checkpoint_dir)
    if resume_from is not None:
        model = keras.models.load_model(resume_from / MODEL_FILE)
        step = json.loads((resume_from / "state.json").read_text())["step"]
        print(f"resumed from {resume_from.name} (step {step})", flush=True)
    else:
        model = build_model(args.lr)

    last_checkpoint = time.monotonic()
    loss = float("nan")
    while step < total_steps:
        epoch, offset = divmod(step, batches_per_epoch)
        # The batch order depends only on the epoch, so a resumed run continues exactly.
        order = np.random.default_rng(SEED + epoch).permutation(len(x_train))
        for batch in range(offset, batches_per_epoch):
            index = order[batch * BATCH_SIZE : (batch + 1) * BATCH_SIZE]
            loss = float(
                model.train_on_batch(x_train[index], y_train[index], return_dict=True)["loss"]
            )
            step += 1
            if step % 10 == 0 or step == total_steps:
                log_metrics(
                    step=step,
                    epoch=epoch,
                    loss=round(loss, 5),
                    progress=round(step / total_steps, 4),
                    time=round(time.time(), 3),
                )
            if stop_requested:
                save_checkpoint(checkpoint_dir, model, step)
                print(f"stop requested: checkpointed step {step}, exiting", flush=True)
                return STOPPED_EXIT_CODE
            if time.monotonic() - last_checkpoint >= interval:
                save_checkpoint(checkpoint_dir, model, step)
                last_checkpoint = time.monotonic()
        print(f"epoch {epoch} done: loss {loss:.4f}", flush=True)

    save_checkpoint(checkpoint_dir, model, step)
    result_dir = env_path("TRAINYARD_RESULT_DIR")
    result_dir.mkdir(parents=True, exist_ok=True)
    model.save(result_dir / MODEL_FILE)
    print(f"held-out accuracy {accuracy(model, x_test, y_test):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
