"""Stand-in GPUs for a machine without any: the fake `pynvml` (tests/support/fake_nvml) and
fake device nodes (regular files) in a temporary /dev."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trainyard.backends.local.environments import Accelerator, Environments, provided_frameworks
from trainyard.tenancy.config import EnvironmentsConfig

FAKE_NVML_DIR = Path(__file__).with_name("fake_nvml")
FAKE_NVML_ENV = "TRAINYARD_FAKE_NVML"
SHARED_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
GIB = 2**30


def stand_in_gpu(index: int, name: str = "NVIDIA A100-SXM4-80GB", **fields: Any) -> dict[str, Any]:
    """One GPU as the stand-in reports it; its minor number is its index unless given."""
    return {
        "uuid": f"GPU-{index:08d}-fake-0000-0000-{index:012d}",
        "name": name,
        "memory": 80 * GIB,
        "minor": index,
        **fields,
    }


@dataclass
class StandInGpus:
    """A machine's stand-in GPUs: the NVML state file and a /dev holding their device nodes."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "nvml.json"

    @property
    def dev(self) -> Path:
        return self.root / "dev"

    def write(self, gpus: list[dict[str, Any]]) -> None:
        """Set what NVML reports (read on every call); make each GPU's and the shared nodes."""
        self.dev.mkdir(parents=True, exist_ok=True)
        for node in [*SHARED_NODES, *(f"nvidia{gpu['minor']}" for gpu in gpus)]:
            (self.dev / node).touch()
        self.state.write_text(json.dumps({"gpus": gpus}), encoding="utf-8")

    def fail(self, index: int, xid: int) -> None:
        """GPU `index` reports XID `xid` from now on (as a GPU failing mid-run)."""
        state = json.loads(self.state.read_text(encoding="utf-8"))
        state["gpus"][index].setdefault("xids", []).append(xid)
        self.state.write_text(json.dumps(state), encoding="utf-8")

    def environment(self) -> dict[str, str]:
        """What a process (an Airflow worker) needs to see these GPUs through the stand-in."""
        path = os.environ.get("PYTHONPATH", "")
        return {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(FAKE_NVML_DIR), path])),
            FAKE_NVML_ENV: str(self.state),
        }

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """This process imports the stand-in as pynvml, for the rest of the test."""
        monkeypatch.syspath_prepend(str(FAKE_NVML_DIR))
        monkeypatch.delitem(sys.modules, "pynvml", raising=False)
        monkeypatch.setenv(FAKE_NVML_ENV, str(self.state))


def cuda_builds_as_cpu(into: Path, cache: Path | None = None) -> Path:
    """An `environments.dir` for a deployment on stand-in GPUs: each CPU environment prepared in
    `cache` (default: the config's default directory), also under its CUDA build's name.

    Stand-in GPUs could not run CUDA anyway, and the CUDA wheels (several GB) are never
    installed on a machine without GPUs; the choice of the CUDA build is tested on its own
    (tests/backends/local/test_environments.py).
    """
    source = Environments(cache or EnvironmentsConfig().dir)
    target = Environments(into)
    into.mkdir(parents=True, exist_ok=True)
    for framework in provided_frameworks().values():
        if source.is_ready(framework):
            built = source.path(framework)
            target.path(framework).symlink_to(built)
            target.path(framework.on(Accelerator.CUDA)).symlink_to(built)
    return into
