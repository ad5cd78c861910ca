"""Train a small MLP with JAX and optax on the digits CSVs, by the environment contract.

Resumable: it continues from the highest `step-<N>` checkpoint in TRAINYARD_CHECKPOINT_DIR,
down to the batch (parameters and optimizer state as one NumPy archive), so a preempted job
loses at most one checkpoint interval. It imports nothing from Trainyard and runs in any
environment with JAX, optax and NumPy.
"""

from __future__ import annotations

import os

# One CPU thread, like the other examples: the job asks for one core.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import argparse
import json
import re
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

SEED = 0
BATCH_SIZE = 16
HIDDEN = 256
STOPPED_EXIT_CODE = 143  # 128 + SIGTERM: tells the platform the run was stopped, not done
STATE_FILE = "state.npz"
MODEL_FILE = "params.npz"

Params = dict[str, jax.Array]


def env_path(name: str) -> Path:
    return Path(os.environ[name])


def load_split(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixels scaled to [0, 1] and labels from `<TRAINYARD_DATA_DIR>/<name>.csv`."""
    table = np.loadtxt(env_path("TRAINYARD_DATA_DIR") / f"{name}.csv", delimiter=",", skiprows=1)
    return (table[:, :-1] / 16.0).astype("float32"), table[:, -1].astype("int32")


def init_params(key: jax.Array) -> Params:
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (64, HIDDEN)) * (2.0 / 64) ** 0.5,
        "b1": jnp.zeros(HIDDEN),
        "w2": jax.random.normal(k2, (HIDDEN, 10)) * (1.0 / HIDDEN) ** 0.5,
        "b2": jnp.zeros(10),
    }


def predict(params: Params, x: jax.Array) -> jax.Array:
    hidden = jax.nn.relu(x @ params["w1"] + params["b1"])
    return hidden @ params["w2"] + params["b2"]


def accuracy(params: Params, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(params, jnp.asarray(x)).argmax(axis=1) == y).mean())


def load_params(path: Path) -> Params:
    with np.load(path) as archive:
        return {name: jnp.asarray(archive[name]) for name in archive.files}


def latest_checkpoint(directory: Path) -> Path | None:
    steps = {
        int(m.group(1)): p
        for p in directory.glob("step-*")
        if (m := re.fullmatch(r"step-(\d+)", p.name)) and p.is_dir()
    }
    return steps[max(steps)] if steps else None


def save_checkpoint(directory: Path, state: Any, step: int) -> None:
    """Write into tmp-*, then rename: the platform only ever sees complete `step-<N>` dirs."""
    target = directory / f"step-{step}"
    if target.exists():
        return
    tmp = directory / f"tmp-{step}"
    tmp.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree_util.tree_leaves(state)
    arrays: dict[str, Any] = {f"leaf{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    np.savez(tmp / STATE_FILE, step=np.asarray(step), **arrays)
    tmp.rename(target)
    print(f"checkpoint saved: {target.name}", flush=True)


def restore(path: Path, like: Any) -> tuple[Any, int]:
    """The (params, optimizer state) saved in checkpoint `path`, shaped like `like`."""
    with np.load(path / STATE_FILE) as archive:
        leaves = [jnp.asarray(archive[f"leaf{i}"]) for i in range(len(archive.files) - 1)]
        step = int(archive["step"])
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), leaves), step


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
    checkpoint_dir = env_path("TRAINYARD_CHECKPOINT_DIR")
    interval = float(os.environ.get("TRAINYARD_CHECKPOINT_INTERVAL", "60"))

    x_train, y_train = load_split("train")
    x_test, y_test = load_split("test")
    batches_per_epoch = (len(x_train) + BATCH_SIZE - 1) // BATCH_SIZE
    total_steps = args.epochs * batches_per_epoch
    optimizer = optax.adam(args.lr)
    params = init_params(jax.random.key(SEED))
    state = (params, optimizer.init(params))
    step = 0

    resume_from = latest_checkpoint(checkpoint_dir)
    if resume_from is not None:
        state, step = restore(resume_from, state)
        print(f"resumed from {resume_from.name} (step {step})", flush=True)

    @jax.jit
    def train_step(state: Any, x: jax.Array, y: jax.Array) -> tuple[Any, jax.Array]:
        params, opt_state = state

        def loss_fn(params: Params) -> jax.Array:
            return optax.softmax_cross_entropy_with_integer_labels(predict(params, x), y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    last_checkpoint = time.monotonic()
    loss = jnp.nan
    while step < total_steps:
        epoch, offset = divmod(step, batches_per_epoch)
        # The batch order depends only on the epoch, so a resumed run continues exactly.
        order = np.random.default_rng(SEED + epoch).permutation(len(x_train))
        for batch in range(offset, batches_per_epoch):
            index = order[batch * BATCH_SIZE : (batch + 1) * BATCH_SIZE]
            state, loss = train_step(state, x_train[index], y_train[index])
            step += 1
            if step % 10 == 0 or step == total_steps:
                log_metrics(
                    step=step,
                    epoch=epoch,
                    loss=round(float(loss), 5),
                    progress=round(step / total_steps, 4),
                    time=round(time.time(), 3),
                )
            if stop_requested:
                save_checkpoint(checkpoint_dir, state, step)
                print(f"stop requested: checkpointed step {step}, exiting", flush=True)
                return STOPPED_EXIT_CODE
            if time.monotonic() - last_checkpoint >= interval:
                save_checkpoint(checkpoint_dir, state, step)
                last_checkpoint = time.monotonic()
        print(f"epoch {epoch} done: loss {float(loss):.4f}", flush=True)

    save_checkpoint(checkpoint_dir, state, step)
    result_dir = env_path("TRAINYARD_RESULT_DIR")
    result_dir.mkdir(parents=True, exist_ok=True)
    params = state[0]
    weights: dict[str, Any] = {name: np.asarray(value) for name, value in params.items()}
    np.savez(result_dir / MODEL_FILE, **weights)
    print(f"held-out accuracy {accuracy(params, x_test, y_test):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
