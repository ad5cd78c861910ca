"""The framework environments: which versions exist, how a job's is found, the cache.

The cache tests build real environments with uv from a small requirements file (the runtime's
pins only, which uv's cache holds after the first run), so they show what a learner gets: an
interpreter that imports the runtime from its own copy, without the repository on its path.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from trainyard.backends.local import environments
from trainyard.backends.local.environments import (
    Accelerator,
    Environments,
    FrameworkEnv,
    check_framework,
    provided_frameworks,
    resolve_framework,
)
from trainyard.failures import ResourceError
from trainyard.manifest.schema import Framework, FrameworkName
from trainyard.tenancy.config import EnvironmentsConfig


def write_images(root: Path, pins: dict[str, str]) -> Path:
    for framework, text in pins.items():
        (root / framework).mkdir(parents=True)
        (root / framework / "requirements.txt").write_text(text)
    return root


def test_the_repositorys_pins_are_the_versions_provided() -> None:
    provided = provided_frameworks()

    assert sorted(provided) == ["jax:0.12", "pytorch:2.13", "tensorflow:2.21"]
    assert provided["jax:0.12"].python == "3.12"  # JAX 0.12 needs Python 3.12 or newer


def test_the_version_is_major_minor_of_the_pin_without_a_local_label(tmp_path: Path) -> None:
    images = write_images(
        tmp_path,
        {
            "pytorch": "--extra-index-url https://download.pytorch.org/whl/cpu\n"
            "torch==2.14.1+cpu\nnumpy==2.4.6\n",
            "jax": "# comment\njax[cuda12]==0.13.0\n",
        },
    )

    assert sorted(provided_frameworks(images)) == ["jax:0.13", "pytorch:2.14"]


def test_a_version_not_provided_is_a_resource_error_naming_versions_and_the_fix() -> None:
    with pytest.raises(ResourceError) as raised:
        resolve_framework(Framework(name=FrameworkName.TENSORFLOW, version="2.9"), {})

    assert "provides no tensorflow:2.9" in raised.value.cause
    assert "jax:0.12, pytorch:2.13, tensorflow:2.21" in raised.value.cause
    assert "trainyard envs prepare" in raised.value.fix


def test_a_custom_image_runs_in_the_environment_the_config_maps_it_to() -> None:
    image = "registry.example.com/team/learner:1.0"
    framework = Framework(name=FrameworkName.CUSTOM, version="1", image=image)

    assert resolve_framework(framework, {image: "jax:0.12"}).key == "jax:0.12"
    with pytest.raises(ResourceError) as raised:
        resolve_framework(framework, {})
    assert "cannot run image" in raised.value.cause
    assert f"environments: {{custom: {{{image!r}: <framework>:<version>}}}}" in raised.value.fix


def test_the_environment_is_named_by_its_pins(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("tenacity==9.2.1\n")
    framework = FrameworkEnv(FrameworkName.PYTORCH, "2.13", "3.11", requirements)
    cache = Environments(tmp_path / "envs")
    before = cache.path(framework)

    requirements.write_text("tenacity==9.2.1\nminio==7.2.20\n")

    assert cache.path(framework) != before
    assert cache.path(FrameworkEnv(FrameworkName.PYTORCH, "2.13", "3.12", requirements)) != (
        cache.path(framework)
    )


@pytest.mark.parametrize(
    ("framework", "pin"),
    [
        pytest.param(FrameworkName.PYTORCH, "torch==2.13.0", id="pytorch"),
        pytest.param(FrameworkName.TENSORFLOW, "tensorflow[and-cuda]==2.21.0", id="tensorflow"),
        pytest.param(FrameworkName.JAX, "jax[cuda12]==0.12.0.1", id="jax"),
    ],
)
def test_a_gpu_job_gets_the_cuda_build_of_the_same_version_in_its_own_environment(
    tmp_path: Path, framework: FrameworkName, pin: str
) -> None:
    """The choice of pins and of environment only: the CUDA wheels are never installed here."""
    version = {"pytorch": "2.13", "tensorflow": "2.21", "jax": "0.12"}[framework.value]
    job = Framework(name=framework, version=version)
    config = EnvironmentsConfig(dir=tmp_path / "envs")

    cpu = check_framework(job, config)
    cuda = check_framework(job, config, Accelerator.CUDA)

    assert (cpu.requirements.name, cuda.requirements.name) == (
        "requirements.txt",
        "requirements-cuda.txt",
    )
    assert pin in cuda.requirements.read_text().splitlines()
    assert (cpu.key, cuda.key) == (f"{framework.value}:{version}",) * 2
    cache = Environments(config.dir)
    assert cache.path(cpu).name.startswith(f"{framework.value}-{version}-")
    assert cache.path(cuda).name.startswith(f"{framework.value}-{version}-cuda-")
    assert cache.path(cuda).name.removesuffix(cuda.digest()) != cache.path(cpu).name


def test_a_framework_without_cuda_pins_refuses_a_gpu_job(tmp_path: Path) -> None:
    images = write_images(tmp_path, {"pytorch": "torch==2.14.1+cpu\n"})
    (found,) = provided_frameworks(images).values()

    with pytest.raises(ResourceError) as refused:
        found.on(Accelerator.CUDA)

    assert refused.value.cause.startswith("resources.gpus: this deployment pins no cuda build")
    assert "requirements-cuda.txt" in refused.value.fix


@pytest.fixture
def tiny_framework(tmp_path: Path) -> FrameworkEnv:
    """A framework whose own pins add nothing to the runtime's: quick to build."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("tenacity==9.2.1\n")
    return FrameworkEnv(FrameworkName.PYTORCH, "2.13", "3.11", requirements)


def imports_runtime_from(python: Path) -> str:
    """Where `python`, without the repository on its path, finds the runtime."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(
        [str(python), "-c", "import trainyard.runtime.runner as r; print(r.__file__)"],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_prepare_creates_once_then_reuses_and_refreshes_the_runtime_copy(
    tmp_path: Path, tiny_framework: FrameworkEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = Environments(tmp_path / "envs")
    lines: list[str] = []

    python = cache.prepare(tiny_framework, lines.append)

    assert cache.is_ready(tiny_framework)
    assert any("creating the pytorch:2.13 (cpu) environment" in line for line in lines)
    site = imports_runtime_from(python)
    assert site.startswith(str(cache.path(tiny_framework)))
    assert "site-packages" in site

    # Reused: no uv run at all, even when the runtime's sources changed (only its copy is).
    def no_build(*_args: object) -> None:
        raise AssertionError("a ready environment was built again")

    monkeypatch.setattr(environments, "_build", no_build)
    monkeypatch.setattr(environments, "runtime_digest", lambda: "changed sources")
    copy = Path(site)
    copy.write_text("# stale\n")

    assert cache.prepare(tiny_framework, lines.append) == python
    assert copy.read_text() == (environments.REPO / "trainyard/runtime/runner.py").read_text()


def test_a_half_built_environment_is_started_over(
    tmp_path: Path, tiny_framework: FrameworkEnv
) -> None:
    cache = Environments(tmp_path / "envs")
    leftover = cache.path(tiny_framework) / "leftover-of-a-killed-build"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("")

    python = cache.prepare(tiny_framework, lambda _line: None)

    assert not leftover.exists()
    assert imports_runtime_from(python)


def test_a_failed_install_is_a_platform_fault_and_leaves_nothing_ready(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("tenacity==0.0.0.404\n")  # no such release
    framework = FrameworkEnv(FrameworkName.JAX, "0.12", "3.11", requirements)
    cache = Environments(tmp_path / "envs")

    with pytest.raises(environments.PlatformFault, match="creating a framework environment"):
        cache.prepare(framework, lambda _line: None)

    assert not cache.is_ready(framework)


def test_the_config_default_directory_is_the_users_cache() -> None:
    assert EnvironmentsConfig().dir == Path.home() / ".cache" / "trainyard" / "envs"
