"""Optional helpers for user code; code that reads the environment contract directly needs none.

Checkpoints are directories `step-<N>` in TRAINYARD_CHECKPOINT_DIR. The runtime uploads a
directory as soon as it appears under that name, so it must appear complete: write into
`tmp-*` and rename, which is atomic on one filesystem.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

_STEP_DIR = re.compile(r"step-(\d+)")


def checkpoint_steps(directory: Path) -> dict[int, Path]:
    """The complete `step-<N>` directories in `directory` by step (in-progress `tmp-*` skipped)."""
    if not directory.is_dir():
        return {}
    steps = {}
    for path in directory.iterdir():
        match = _STEP_DIR.fullmatch(path.name)
        if match and path.is_dir():
            steps[int(match.group(1))] = path
    return steps


def _checkpoint_dir() -> Path:
    return Path(os.environ["TRAINYARD_CHECKPOINT_DIR"])


def latest_checkpoint() -> Path | None:
    """The highest `step-<N>` directory (restored by the runtime or saved by this run)."""
    steps = checkpoint_steps(_checkpoint_dir())
    return steps[max(steps)] if steps else None


def save_checkpoint(step: int, write_fn: Callable[[Path], Any]) -> Path:
    """Call `write_fn(tmp_dir)` to fill a fresh directory, then publish it as `step-<step>`."""
    root = _checkpoint_dir()
    target = root / f"step-{step}"
    if target.exists():
        raise FileExistsError(f"checkpoint {target} already exists: a step is saved once")
    tmp = root / f"tmp-{step}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    write_fn(tmp)
    tmp.rename(target)
    return target


def log_metrics(**values: Any) -> None:
    """Append one metrics row (e.g. step=, loss=, progress=) to TRAINYARD_METRICS_FILE."""
    with open(os.environ["TRAINYARD_METRICS_FILE"], "a", encoding="utf-8") as f:
        f.write(json.dumps(values) + "\n")
