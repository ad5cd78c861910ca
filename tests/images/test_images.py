"""The learner image: pinned, non-root, and running the very runtime the local backend runs.

No image is built here (that needs a registry and a Docker engine): the Dockerfile and the
frameworks' requirements are read and checked against the repository, its constraints and its
config.
"""

from __future__ import annotations

import ast
import json
import sys
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import trainyard.runtime
from trainyard.backends.local.environments import FRAMEWORK_PACKAGES, RUNTIME_SOURCES
from trainyard.manifest.schema import FrameworkName
from trainyard.tenancy.config import KubernetesConfig

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
#: One Dockerfile for every framework, chosen by its FRAMEWORK build argument.
DOCKERFILE = IMAGES / "learner" / "Dockerfile"
RUNTIME_REQUIREMENTS = IMAGES / "runtime" / "requirements.txt"
#: The distribution of each framework image whose version the image map names.
FRAMEWORKS = {
    "pytorch": {"torch"},
    "tensorflow": {"tensorflow", "tensorflow-cpu"},
    "jax": {"jax"},
}
VARIANTS = ("requirements.txt", "requirements-cuda.txt")
PIP_OPTIONS = ("--index-url", "--extra-index-url")
RUNTIME_ENTRYPOINT = ["python", "-m", "trainyard.runtime"]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        result.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return result


def arguments_of(dockerfile: Path, keyword: str) -> list[str]:
    return [arguments for name, arguments in instructions(dockerfile) if name == keyword]


def requirements(path: Path) -> list[Requirement]:
    """The requirements of a file; pip options other than index URLs are refused."""
    result = []
    for line in path.read_text().splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            assert line.split()[0] in PIP_OPTIONS, f"{path.name}: unexpected option {line!r}"
            continue
        result.append(Requirement(line))
    return result


def pinned_version(requirement: Requirement) -> Version:
    [specifier] = requirement.specifier
    assert specifier.operator == "==", requirement
    assert "*" not in specifier.version, requirement
    return Version(specifier.version)


def constraints() -> dict[str, Version]:
    return {
        canonicalize_name(req.name): pinned_version(req)
        for req in requirements(REPO / "constraints.txt")
    }


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_framework_has_both_requirement_variants(framework: str) -> None:
    for name in VARIANTS:
        assert (IMAGES / framework / name).is_file(), f"{framework}/{name} is missing"


def base_stages() -> dict[str, str]:
    """The Dockerfile's base stages by name (`FROM <image> AS <stage>`)."""
    stages = {}
    for arguments in arguments_of(DOCKERFILE, "FROM"):
        image, _, stage = arguments.partition(" AS ")
        if stage:
            stages[stage.strip()] = image.strip()
    return stages


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_frameworks_base_is_pinned_with_its_environments_python(framework: str) -> None:
    """A pod runs the Python a local environment of the framework runs (JAX needs 3.12)."""
    image = base_stages()[f"base-{framework}"]
    _, python = FRAMEWORK_PACKAGES[FrameworkName(framework)]

    assert "$" not in image, "a base must not come from a build argument"
    reference, _, digest = image.partition("@")
    name, _, tag = reference.rpartition(":")
    assert name == "python", image
    assert tag.startswith(f"{python}."), f"{image}: {framework} runs on Python {python}"
    assert tag.split("-")[0].count(".") == 2, f"{image}: pin an exact version"
    assert not digest or (digest.startswith("sha256:") and len(digest) == 7 + 64)


def test_the_image_builds_on_its_frameworks_base() -> None:
    *_, final = arguments_of(DOCKERFILE, "FROM")

    assert final == "base-${FRAMEWORK}"
    assert set(base_stages()) == {f"base-{framework}" for framework in FRAMEWORKS}


def test_runs_as_a_numeric_non_root_user() -> None:
    users = arguments_of(DOCKERFILE, "USER")

    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user.isdigit(), "numeric, so that runAsNonRoot can verify it"
    assert int(user) != 0


def test_the_entrypoint_is_the_runtime() -> None:
    [entrypoint] = arguments_of(DOCKERFILE, "ENTRYPOINT")

    assert json.loads(entrypoint) == RUNTIME_ENTRYPOINT


def copied_files() -> set[Path]:
    """The repository's Python files the Dockerfile copies into /opt/trainyard/trainyard."""
    files: set[Path] = set()
    for arguments in arguments_of(DOCKERFILE, "COPY"):
        *sources, destination = arguments.split()
        if not destination.startswith("/opt/trainyard/trainyard"):
            continue
        for source in sources:
            path = REPO / source
            files |= set(path.rglob("*.py")) if path.is_dir() else {path}
    return {path.resolve() for path in files}


def test_the_image_copies_the_runtime_and_only_the_core_it_imports() -> None:
    """The image carries exactly what `python -m trainyard.runtime` imports: no CLI, no DAG
    factory, no data checks; on the path, so that it runs as the local backend runs it."""
    _, needed = runtime_imports()

    assert copied_files() == needed
    env = " ".join(arguments_of(DOCKERFILE, "ENV"))
    assert "PYTHONPATH=/opt/trainyard" in env.split()


def test_local_environments_get_the_same_runtime_files_as_the_image() -> None:
    """A local learner's environment runs exactly the code a learner pod runs."""
    local = {
        path.resolve()
        for source in RUNTIME_SOURCES
        for path in ((REPO / source).rglob("*.py") if (REPO / source).is_dir() else [REPO / source])
    }

    assert local == copied_files()


def test_the_image_installs_the_runtime_and_its_frameworks_requirements() -> None:
    copied = {arguments.split()[0] for arguments in arguments_of(DOCKERFILE, "COPY")}

    assert "images/runtime/requirements.txt" in copied
    assert "images/${FRAMEWORK}/${REQUIREMENTS}" in copied
    assert {"FRAMEWORK", "REQUIREMENTS=requirements.txt"} <= set(arguments_of(DOCKERFILE, "ARG"))


REQUIREMENT_FILES = [RUNTIME_REQUIREMENTS] + [
    IMAGES / framework / variant for framework in FRAMEWORKS for variant in VARIANTS
]


@pytest.mark.parametrize("path", REQUIREMENT_FILES, ids=lambda p: str(p.relative_to(IMAGES)))
def test_every_requirement_is_pinned(path: Path) -> None:
    found = requirements(path)

    assert found
    for requirement in found:
        pinned_version(requirement)


def runtime_imports() -> tuple[set[str], set[Path]]:
    """What the runtime imports, following its imports within trainyard: the top-level names
    of the distributions, and trainyard's files (with their packages' `__init__.py`)."""
    package_root = Path(trainyard.runtime.__file__).resolve().parents[1]
    queue = [path.resolve() for path in Path(trainyard.runtime.__file__).parent.glob("*.py")]
    seen: set[Path] = set()
    imported: set[str] = set()
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                if name.split(".")[0] != "trainyard":
                    imported.add(name.split(".")[0])
                    continue
                module = package_root.parent / Path(*name.split("."))
                for candidate in (module.with_suffix(".py"), module / "__init__.py"):
                    if candidate.is_file():
                        queue.append(candidate)
                for package in module.parents:
                    if package == package_root.parent:
                        break
                    if (package / "__init__.py").is_file():
                        queue.append(package / "__init__.py")
    return imported - set(sys.stdlib_module_names) - {"__future__"}, seen


def test_every_module_the_runtime_imports_comes_from_the_runtime_requirements() -> None:
    provided = {canonicalize_name(req.name) for req in requirements(RUNTIME_REQUIREMENTS)}
    distributions = packages_distributions()

    modules, _ = runtime_imports()

    assert {"pydantic", "minio", "tenacity"} <= modules
    for module in modules:
        names = {canonicalize_name(name) for name in distributions.get(module, [])}
        assert names & provided, f"the runtime imports {module}, which no runtime pin provides"


def test_runtime_requirements_are_closed_and_pinned_as_the_local_backend_runs() -> None:
    """Every dependency of a runtime pin is pinned too, at the version of constraints.txt."""
    pins = {
        canonicalize_name(req.name): pinned_version(req)
        for req in requirements(RUNTIME_REQUIREMENTS)
    }
    pinned_for_local = constraints()

    for name, version in pins.items():
        assert pinned_for_local.get(name) == version, f"{name}: {version} here, not in constraints"
        for needed in distribution(name).requires or []:
            requirement = Requirement(needed)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                assert canonicalize_name(requirement.name) in pins, f"{name} needs {requirement}"


def image_map_example() -> KubernetesConfig:
    """The commented `kubernetes:` example of config/trainyard.yaml, which must stay valid."""
    lines = (REPO / "config" / "trainyard.yaml").read_text().splitlines()
    start = lines.index("# kubernetes:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line.removeprefix("# ").removeprefix("#"))
    return KubernetesConfig.model_validate(yaml.safe_load("\n".join(block))["kubernetes"])


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_framework_versions_match_the_image_map(framework: str, variant: str) -> None:
    images = image_map_example().images
    [pin] = [
        req
        for req in requirements(IMAGES / framework / variant)
        if req.name in FRAMEWORKS[framework]
    ]

    version = pinned_version(pin)

    key = f"{framework}:{version.major}.{version.minor}"
    assert key in images, f"the image map has no {key}"
    assert images[key].rpartition(":")[2].startswith(version.public)
