"""Local learners' Python environments: one virtual environment per framework version and
accelerator.

The pinned requirements under `images/<framework>/requirements.txt` define both the learner
image and the local environment of that framework, so a job runs the same versions on either
backend. An environment is created with `uv` from those pins plus the runtime's
(`images/runtime/requirements.txt`), then gets a copy of the learner runtime: exactly the core
modules the learner image copies (`RUNTIME_SOURCES`), so a local learner runs what a pod runs
and needs nothing of the deployment's own interpreter.

Environments live under `environments.dir` of the deployment config, in a directory named by a
hash of everything they are built from (interpreter version, requirements), so a changed pin
makes a new one and an unchanged one is reused. A GPU job runs in the framework's CUDA build
(`images/<framework>/requirements-cuda.txt`, the GPU learner image's pins; the machine supplies
only the driver), a CPU job in its CPU build. The runtime's copy is refreshed on every use,
under the same lock, because it changes with Trainyard's code and costs milliseconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from trainyard.failures import PlatformFault, ResourceError
from trainyard.manifest.schema import Framework, FrameworkName
from trainyard.tenancy.config import EnvironmentsConfig

REPO = Path(__file__).resolve().parents[3]
IMAGES_DIR = REPO / "images"
RUNTIME_REQUIREMENTS = IMAGES_DIR / "runtime" / "requirements.txt"

#: What the learner runtime needs of Trainyard, relative to the repository (the learner
#: image's Dockerfile copies the same; tests/images/test_images.py holds the two together).
RUNTIME_SOURCES = (
    "trainyard/__init__.py",
    "trainyard/failures.py",
    "trainyard/limits.py",
    "trainyard/jobs/__init__.py",
    "trainyard/jobs/layout.py",
    "trainyard/jobs/checkpoints.py",
    "trainyard/jobs/fencing.py",
    "trainyard/storage",
    "trainyard/runtime",
)

#: The distribution whose pin names each framework's version, and the Python it runs on
#: (JAX 0.12 needs 3.12 or newer; the others keep the learner image's 3.11).
FRAMEWORK_PACKAGES = {
    FrameworkName.PYTORCH: ("torch", "3.11"),
    FrameworkName.TENSORFLOW: ("tensorflow-cpu", "3.11"),
    FrameworkName.JAX: ("jax", "3.12"),
}


class Accelerator(StrEnum):
    """Which build of a framework an environment holds."""

    CPU = "cpu"
    CUDA = "cuda"  # NVIDIA GPUs


#: Each accelerator's pins beside a framework's image (the learner image's variants).
REQUIREMENTS_FILES = {
    Accelerator.CPU: "requirements.txt",
    Accelerator.CUDA: "requirements-cuda.txt",
}

PREPARE_COMMAND = "trainyard envs prepare"
_READY = ".trainyard-ready"
_RUNTIME_STAMP = ".trainyard-runtime"
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;#]+)")


@dataclass(frozen=True)
class FrameworkEnv:
    """One framework version the deployment provides, and what its environment is built from."""

    name: FrameworkName
    version: str  # as manifests name it: major.minor of the pinned distribution
    python: str  # the interpreter's version, e.g. "3.12"
    requirements: Path
    accelerator: Accelerator = Accelerator.CPU

    @property
    def key(self) -> str:
        return f"{self.name.value}:{self.version}"

    def on(self, accelerator: Accelerator) -> FrameworkEnv:
        """The same framework version built for `accelerator`.

        Raises:
            ResourceError: its requirements file is missing.
        """
        requirements = self.requirements.with_name(REQUIREMENTS_FILES[accelerator])
        if not requirements.is_file():
            raise ResourceError(
                f"resources.gpus: this deployment pins no {accelerator.value} build of "
                f"{self.key} ({requirements} is missing)",
                f"a platform admin pins it in {requirements} and runs '{PREPARE_COMMAND} "
                f"{self.name.value}' on the GPU machine; or set resources.gpus: 0",
            )
        return replace(self, requirements=requirements, accelerator=accelerator)

    def digest(self) -> str:
        """Names the environment: a change of interpreter or of any pin makes a new one."""
        sha = hashlib.sha256(self.python.encode())
        for path in (self.requirements, RUNTIME_REQUIREMENTS):
            sha.update(path.read_bytes())
        return sha.hexdigest()[:12]


def _pinned_version(requirements: Path, distribution: str) -> str:
    for line in requirements.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line.strip())
        if match and match.group(1).lower() == distribution:
            return match.group(3).split("+")[0]
    raise ValueError(f"{requirements} pins no {distribution}==<version>")


def provided_frameworks(images_dir: Path = IMAGES_DIR) -> dict[str, FrameworkEnv]:
    """Every framework version with pinned requirements, keyed `<framework>:<major.minor>`."""
    provided = {}
    for name, (distribution, python) in FRAMEWORK_PACKAGES.items():
        requirements = images_dir / name.value / "requirements.txt"
        if not requirements.is_file():
            continue
        version = ".".join(_pinned_version(requirements, distribution).split(".")[:2])
        framework = FrameworkEnv(name, version, python, requirements)
        provided[framework.key] = framework
    return provided


def resolve_framework(
    framework: Framework, custom_images: dict[str, str], images_dir: Path = IMAGES_DIR
) -> FrameworkEnv:
    """The local environment that runs `framework`, or a ResourceError that says the fix.

    A `custom` image runs locally in the environment the deployment config maps it to
    (`environments.custom`), since a local learner cannot run an image.
    """
    provided = provided_frameworks(images_dir)
    versions = ", ".join(sorted(provided)) or "none"
    if framework.name is FrameworkName.CUSTOM:
        image = framework.image or ""
        mapped = custom_images.get(image)
        if mapped is None:
            raise ResourceError(
                f"framework.image: the local backend cannot run image {image!r} and the "
                "deployment maps no local environment to it",
                f"map it in the deployment config, environments: {{custom: {{{image!r}: "
                f"<framework>:<version>}}}} with one of {versions}, or run the tenant's "
                "learners on Kubernetes",
            )
        key = mapped
    else:
        key = f"{framework.name.value}:{framework.version}"
    found = provided.get(key)
    if found is None:
        raise ResourceError(
            f"framework.version: this deployment provides no {key}; it provides {versions}",
            f"use one of those versions; a platform admin adds a version by pinning it in "
            f"images/<framework>/requirements.txt and running '{PREPARE_COMMAND} <framework>'",
        )
    return found


@dataclass(frozen=True)
class Environments:
    """The cache of framework environments under `root` (the deployment's environments.dir)."""

    root: Path

    def path(self, framework: FrameworkEnv) -> Path:
        build = "" if framework.accelerator is Accelerator.CPU else f"-{framework.accelerator}"
        name = f"{framework.name.value}-{framework.version}{build}-{framework.digest()}"
        return self.root / name

    def python(self, framework: FrameworkEnv) -> Path:
        return self.path(framework) / "bin" / "python"

    def is_ready(self, framework: FrameworkEnv) -> bool:
        return (self.path(framework) / _READY).is_file()

    def prepare(self, framework: FrameworkEnv, on_output: Callable[[str], None] = print) -> Path:
        """Create the environment unless it exists, refresh its runtime; return its Python.

        Concurrent callers (two learners starting at once) wait on one lock per environment,
        so it is built once. A half-built one (a killed build) is started over.

        Raises:
            PlatformFault: uv or the interpreter is missing, or an install failed.
        """
        target = self.path(framework)
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self.root / f"{target.name}.lock"):
            if not self.is_ready(framework):
                on_output(
                    f"trainyard: creating the {framework.key} ({framework.accelerator}) "
                    f"environment in {target}"
                )
                shutil.rmtree(target, ignore_errors=True)
                _build(framework, target, on_output)
                (target / _READY).write_text(framework.digest() + "\n", encoding="utf-8")
            _install_runtime(target)
        return self.python(framework)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def uv_executable() -> str:
    """uv from the deployment's own environment (requirements.txt pins it), else PATH."""
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if found is None:
        raise PlatformFault(
            "uv is not installed: it creates the local frameworks' environments",
            "pip install -r requirements.txt (it pins uv) in Trainyard's environment",
        )
    return found


def find_python(version: str) -> str:
    """An installed interpreter of `version`: pyenv's newest patch release, else one on PATH
    that runs, else the version itself (for uv to find, or download where allowed)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(
        pyenv.glob(f"{version}.*/bin/python{version}"),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.parent.name)],
    )
    if found:
        return str(found[-1])
    on_path = shutil.which(f"python{version}")
    if on_path is not None:
        runs = subprocess.run([on_path, "--version"], capture_output=True, check=False)
        if runs.returncode == 0:
            return on_path
    return version


def _run(argv: list[str], env: dict[str, str], on_output: Callable[[str], None]) -> None:
    completed = subprocess.run(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    for line in completed.stdout.splitlines()[-40:]:
        on_output(f"  {line}")
    if completed.returncode != 0:
        raise PlatformFault(
            f"creating a framework environment failed: {' '.join(argv[:3])} ... exited "
            f"{completed.returncode}: {completed.stdout.strip().splitlines()[-1:]}",
            "check the network to the package index and that the Python version is installed "
            "(pyenv, the system's, or let uv download one: UV_PYTHON_DOWNLOADS=automatic)",
        )


def _build(framework: FrameworkEnv, target: Path, on_output: Callable[[str], None]) -> None:
    uv = uv_executable()
    env = {**os.environ, "VIRTUAL_ENV": str(target)}
    env.pop("PYTHONPATH", None)
    find_links = [
        arg
        for links in os.environ.get("PIP_FIND_LINKS", "").split()
        for arg in ("--find-links", links)
    ]
    # An installed interpreter first (pyenv's or the system's); uv downloads one only where
    # UV_PYTHON_DOWNLOADS allows it.
    python = find_python(framework.python)
    _run(
        [uv, "venv", "--quiet", "--python-preference", "system", "--python", python, str(target)],
        env,
        on_output,
    )
    requirements = ["-c", str(RUNTIME_REQUIREMENTS)]
    for path in (RUNTIME_REQUIREMENTS, framework.requirements):
        requirements += ["-r", str(_without_indexes(path, target) if find_links else path)]
    installer = [uv, "pip", "install", "--python", str(target / "bin" / "python")]
    _run([*installer, *find_links, *requirements], env, on_output)


def _without_indexes(requirements: Path, target: Path) -> Path:
    """A copy of `requirements` without index options (for a machine that mirrors wheels)."""
    kept = [
        line
        for line in requirements.read_text(encoding="utf-8").splitlines()
        if not line.strip().startswith(("--extra-index-url", "--index-url", "-i "))
    ]
    copy = target / f"requirements-{requirements.parent.name}.txt"
    copy.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return copy


def runtime_digest() -> str:
    """A hash of the runtime's sources: whether an environment's copy is current."""
    sha = hashlib.sha256()
    for path in _runtime_files():
        sha.update(str(path.relative_to(REPO)).encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


def _runtime_files() -> list[Path]:
    files = []
    for source in RUNTIME_SOURCES:
        path = REPO / source
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def _site_packages(target: Path) -> Path:
    [site] = (target / "lib").glob("python*/site-packages")
    return site


def _install_runtime(target: Path) -> None:
    """Copy the runtime's modules into the environment unless the copy there is current."""
    digest = runtime_digest()
    stamp = target / _RUNTIME_STAMP
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == digest:
        return
    site = _site_packages(target)
    staging = site / f".trainyard-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    for path in _runtime_files():
        copy = staging / path.relative_to(REPO)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    installed = site / "trainyard"
    shutil.rmtree(installed, ignore_errors=True)
    (staging / "trainyard").rename(installed)
    staging.rmdir()
    stamp.write_text(digest + "\n", encoding="utf-8")


def check_framework(
    framework: Framework,
    config: EnvironmentsConfig,
    accelerator: Accelerator = Accelerator.CPU,
) -> FrameworkEnv:
    """Validate time: the environment `framework` runs in locally on `accelerator`
    (ResourceError if none)."""
    return resolve_framework(framework, config.custom).on(accelerator)


def learner_python(
    framework: Framework,
    config: EnvironmentsConfig,
    on_output: Callable[[str], None],
    accelerator: Accelerator = Accelerator.CPU,
) -> Path:
    """The Python a local learner of `framework` runs with on `accelerator`, its environment
    made if missing."""
    environment = check_framework(framework, config, accelerator)
    return Environments(config.dir).prepare(environment, on_output)
