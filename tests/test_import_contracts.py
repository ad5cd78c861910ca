"""The layers' import contracts (pyproject.toml, `lint-imports` in `make lint`) hold on the real
tree, and a core module that imports Airflow breaks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
#: What the contracts name as root packages, and the config that holds them.
TREE = ("trainyard", "operators", "devkit", "bench", "tests", "pyproject.toml")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages the contracts cover, to break without touching the checkout."""
    for name in TREE:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    return tmp_path


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        pytest.param(
            "trainyard/failures.py",
            "import airflow",
            "The core never imports Airflow",
            id="core-imports-airflow",
        ),
        pytest.param(
            "trainyard/jobs/records.py",
            "import operators.tasks.retry",
            "The core never imports Airflow",
            id="core-imports-operators",
        ),
        pytest.param(
            "trainyard/runtime/runner.py",
            "import trainyard.data.staging",
            "The learner runtime imports only what a learner needs",
            id="runtime-imports-data",
        ),
        pytest.param(
            "operators/tasks/learner.py",
            "import trainyard.backends.local.environments",
            "The Airflow layer asks backend_for",
            id="operator-reaches-into-a-backend",
        ),
        pytest.param(
            "operators/dag_factory.py",
            "import trainyard.backends.kubernetes.pods",
            "The Airflow layer asks backend_for",
            id="operator-other-than-the-adapter-reaches-into-kubernetes",
        ),
        pytest.param(
            "operators/tasks/kubernetes_learner.py",
            "import trainyard.runtime.outcome",
            "The Airflow layer reads no outcome",
            id="operator-reads-outcomes",
        ),
        pytest.param(
            "bench/common.py",
            "import tests.support.processes",
            "The dev package and the benchmarks never import the tests",
            id="bench-imports-tests",
        ),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tree: Path, module: str, line: str, contract: str
) -> None:
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # noqa: E402\n")
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    # A contract with ignored imports says so after its verdict: "BROKEN (1 ignored import)".
    broken = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert len(broken) == 1, result.stdout
    assert broken[0].startswith(contract)
