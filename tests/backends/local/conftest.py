"""The local backend's fixtures: a machine with stand-in GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gpus import StandInGpus, stand_in_gpu

#: The stand-in GPU with a hardware XID (79: fallen off the bus) from the start.
XID_GPU = 2


@pytest.fixture
def stand_in_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandInGpus:
    """Four A100s, GPU 2 with a hardware XID, installed as this process's pynvml."""
    gpus = StandInGpus(tmp_path / "gpus")
    gpus.write([stand_in_gpu(i, xids=[79] if i == XID_GPU else []) for i in range(4)])
    gpus.install(monkeypatch)
    return gpus
