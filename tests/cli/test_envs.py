"""`trainyard envs`: the CUDA builds are listed and prepared only where GPUs exist."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.support.gpus import FAKE_NVML_ENV, StandInGpus, stand_in_gpu
from trainyard.backends.local.environments import Accelerator, provided_frameworks
from trainyard.cli.app import app
from trainyard.cli.envs import builds
from trainyard.tenancy.config import CONFIG_ENV


@pytest.fixture
def gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandInGpus:
    stand_in = StandInGpus(tmp_path / "gpus")
    stand_in.write([stand_in_gpu(0)])
    stand_in.install(monkeypatch)
    return stand_in


def test_a_gpu_machine_prepares_both_builds_of_each_framework(
    gpus: StandInGpus, tmp_path: Path
) -> None:
    frameworks = list(provided_frameworks().values())

    chosen = builds(frameworks, tmp_path / "work")

    assert [(f.key, f.accelerator) for f in chosen] == [
        (f.key, accelerator) for f in frameworks for accelerator in Accelerator
    ]
    assert {f.requirements.name for f in chosen} == {"requirements.txt", "requirements-cuda.txt"}


def test_a_machine_without_gpus_never_prepares_a_cuda_build(
    gpus: StandInGpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(FAKE_NVML_ENV)  # no driver
    frameworks = list(provided_frameworks().values())

    assert builds(frameworks, tmp_path / "work") == frameworks


def test_envs_list_shows_the_cuda_builds_on_a_gpu_machine(
    gpus: StandInGpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {
        "work_dir": str(tmp_path / "work"),
        "environments": {"dir": str(tmp_path / "envs")},
        "tenants": [{"name": "acme", "storage": {"kind": "local", "root": str(tmp_path / "s")}}],
    }
    (tmp_path / "trainyard.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "trainyard.yaml"))

    result = CliRunner().invoke(app, ["envs", "list"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("pytorch:2.13  cuda  ") and "not prepared" in line for line in lines)
    assert any(line.startswith("pytorch:2.13  cpu  ") for line in lines)
