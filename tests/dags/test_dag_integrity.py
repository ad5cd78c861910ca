"""Every DAG file loads without errors, defines DAGs, and stays cheap to parse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.airflow_env import REPO_ROOT

DAG_FILES = sorted((REPO_ROOT / "dags").glob("*.py"))
#: Modules that must never load while the DAG processor parses a file.
HEAVY_MODULES = (
    "torch",
    "great_expectations",
    "kubernetes",
    "minio",
    "pandas",
    "sklearn",
    "optuna",
)

PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from airflow.sdk import DAG
dags = sorted(v.dag_id for v in vars(module).values() if isinstance(v, DAG))
heavy = sorted(m for m in sys.argv[2].split(",") if m in sys.modules)
print(json.dumps({"dags": dags, "heavy": heavy}))
"""


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda path: path.name)
def test_dag_file_imports_in_a_fresh_interpreter_without_heavy_modules(dag_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(dag_file), ",".join(HEAVY_MODULES)],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["dags"], f"{dag_file.name} defines no DAG"
    assert loaded["heavy"] == [], f"{dag_file.name} imports {loaded['heavy']} at parse time"


def test_dagbag_has_one_training_dag_per_tenant_and_no_import_errors() -> None:
    from airflow.dag_processing.dagbag import DagBag

    from trainyard.tenancy.config import load_config

    bag = DagBag(dag_folder=REPO_ROOT / "dags")
    assert bag.import_errors == {}
    expected = {f"trainyard_{tenant.name}" for tenant in load_config().tenants}
    assert expected <= set(bag.dag_ids)
    for dag_id in expected:
        dag = bag.dags[dag_id]
        assert [t.task_id for t in dag.topological_sort()] == [
            "validate",
            "stage_data",
            "learner",
            "commit",
            "evaluate",
            "register_model",
        ]
        assert set(dag.params.keys()) >= {"manifest", "command", "gpus", "memory"}
