"""The deployment config and the scheduled-job files: a broken config is a ConfigError naming
the file and the field; a broken job file is its own DAG that names the field, never a crash
of the DAG factory."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.strategies import as_yaml, mutated, record, yaml_texts
from trainyard.tenancy.config import ConfigError, load_config, scheduled_jobs

CONFIG: dict[str, Any] = {
    "learner_backend": "local",
    "work_dir": "work",
    "jobs_dir": "jobs",
    "tenants": [
        {
            "name": "acme",
            "display_name": "Acme",
            "storage": {"kind": "local", "root": "storage/acme"},
            "allowed_frameworks": ["pytorch", "custom"],
            "max_running_jobs": 4,
            "gpu_quota": 2,
            "default_watchdog": "30m",
        },
        {
            "name": "globex",
            "storage": {
                "kind": "s3",
                "endpoint": "minio:9000",
                "bucket": "globex",
                "credentials_env": "TRAINYARD_S3_GLOBEX",
            },
            "learner_backend": "kubernetes",
            "kueue_queue": "globex-training",
        },
    ],
    "kubernetes": {
        "images": {"pytorch:2.13": "registry.example.com/pytorch:2.13"},
        "gpu_node_selectors": {"a100": {"accelerator": "a100"}},
        "startup_timeout_seconds": 600,
    },
}
JOB: dict[str, Any] = {
    "name": "nightly",
    "tenant": "acme",
    "framework": {"name": "pytorch", "version": "2.13"},
    "code": {"uri": "examples/pytorch-digits"},
    "command": "python train.py",
    "schedule": "0 3 * * *",
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config-fuzz")


@given(mutated(CONFIG, max_mutations=4).map(as_yaml) | yaml_texts(CONFIG))
def test_mutated_deployment_configs(root: Path, text: str) -> None:
    path = root / "trainyard.yaml"
    path.write_text(text)
    error = record("load_config", lambda: load_config(path), (ConfigError,))
    if error is not None:
        assert str(path) in str(error), str(error)[:300]
        assert len(str(error)) < 3000, str(error)[:300]


STEMS = st.sampled_from(["nightly", "my job!", "Ünïcode", "a" * 200, "-x", "x.y", "__"])


@settings(max_examples=max(settings().max_examples // 6, 30))
@given(
    st.lists(
        st.tuples(
            STEMS, st.sampled_from([".yaml", ".yml", ".json"]), mutated(JOB) | yaml_texts(JOB)
        ),
        max_size=3,
    )
)
def test_mutated_scheduled_job_files(root: Path, files: list[tuple[str, str, Any]]) -> None:
    from operators.dag_factory import tenant_dags

    (root / "trainyard.yaml").write_text(
        yaml.safe_dump(CONFIG | {"kubernetes": None, "tenants": CONFIG["tenants"][:1]})
    )
    config = load_config(root / "trainyard.yaml")
    jobs_dir = root / "jobs" / "acme"
    shutil.rmtree(jobs_dir, ignore_errors=True)
    jobs_dir.mkdir(parents=True)
    for stem, suffix, content in files:
        (jobs_dir / f"{stem}{suffix}").write_text(
            content if isinstance(content, str) else as_yaml(content)
        )

    jobs = scheduled_jobs(config)
    for job in jobs:
        if job.error is not None:
            assert job.error.startswith(job.path.name), job.error[:300]
            assert len(job.error) < 3000
    record("tenant_dags", lambda: tenant_dags(config), ())
