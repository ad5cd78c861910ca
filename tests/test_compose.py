"""docker-compose.yaml, checked without Docker: it parses, and every service agrees with the
names the code uses (auth manager, components, config file, credential variables, buckets)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from devkit.airflow_env import LOCAL_SETTINGS, REPO_ROOT
from devkit.cluster import COMPONENTS
from operators.deployment.admission import task_instance_mutation_hook
from operators.deployment.auth_managers import AUTH_MANAGERS
from trainyard.storage.config import S3StorageConfig
from trainyard.tenancy.config import load_config

COMPOSE = REPO_ROOT / "docker-compose.yaml"
IMAGE_ROOT = Path("/opt/trainyard")  # where images/airflow/Dockerfile puts the repository
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolved
    result: dict[str, Any] = document["services"]
    return result


def in_repo(image_path: str) -> Path:
    return REPO_ROOT / Path(image_path).relative_to(IMAGE_ROOT)


def test_every_component_of_the_production_configuration_is_a_service(
    services: dict[str, Any],
) -> None:
    assert {"postgres", "redis", "minio", "minio-init", "airflow-init"} <= set(services)
    for name, command in AIRFLOW_SERVICES.items():
        assert services[name]["command"] == command
    # The same components the end-to-end harness starts, plus the Celery worker.
    assert set(COMPONENTS) <= set(AIRFLOW_SERVICES.values())


@pytest.mark.parametrize("service", ["airflow-init", *AIRFLOW_SERVICES])
def test_airflow_services_share_one_production_environment(
    services: dict[str, Any], service: str
) -> None:
    env = services[service]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == AUTH_MANAGERS["fab"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
    assert in_repo(env["AIRFLOW__CORE__DAGS_FOLDER"]) == REPO_ROOT / "dags"
    assert in_repo(env["AIRFLOW__CORE__PLUGINS_FOLDER"]).joinpath("trainyard_plugin.py").is_file()
    assert in_repo(env["TRAINYARD_CONFIG"]) == REPO_ROOT / "config" / "production.yaml"
    assert services[service]["build"]["dockerfile"] == "images/airflow/Dockerfile"


def test_init_migrates_creates_the_admin_then_syncs_the_tenants(services: dict[str, Any]) -> None:
    script = services["airflow-init"]["command"][-1]
    steps = ["airflow db migrate", "airflow users create --role Admin", "trainyard tenants sync"]
    positions = [script.find(step) for step in steps]
    assert -1 not in positions, script
    assert positions == sorted(positions)
    for name in AIRFLOW_SERVICES:
        condition = services[name]["depends_on"]["airflow-init"]["condition"]
        assert condition == "service_completed_successfully"


def test_the_production_tenants_store_in_minio_with_credentials_from_compose(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = services["airflow-init"]["environment"]
    mc_script = services["minio-init"]["command"][-1]
    config = load_config(REPO_ROOT / "config" / "production.yaml")
    for tenant in config.tenants:
        storage = tenant.storage
        assert isinstance(storage, S3StorageConfig), tenant.name
        assert storage.endpoint.split(":")[0] == "minio"
        # The bucket minio-init creates for the tenant, with a user of the tenant's own keys.
        assert storage.bucket == f"trainyard-{tenant.name}"
        assert re.search(rf"^tenant {tenant.name} ", mc_script, re.MULTILINE), mc_script
        for suffix in ("ACCESS_KEY", "SECRET_KEY"):
            variable = f"{storage.credentials_env}_{suffix}"
            assert variable in env, f"compose does not pass {variable} to tenants sync"
            assert variable in services["minio-init"]["environment"]
            # The tasks and the pages read the tenant's Airflow connection that sync wrote.
            holders = [
                name for name in AIRFLOW_SERVICES if variable in services[name]["environment"]
            ]
            assert holders == [], f"{variable} in the environment of {holders}"
            monkeypatch.setenv(variable, "x")
        assert storage.credentials() == ("x", "x")


def test_the_image_copies_what_exists_and_the_build_context_lets_it_through() -> None:
    dockerfile = (REPO_ROOT / "images" / "airflow" / "Dockerfile").read_text()
    sources = [
        part
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for part in line.split()[1:-1]
    ]
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for source in sources:
        assert (REPO_ROOT / source).exists(), source
        assert any(source == path or source.startswith(f"{path}/") for path in allowed), (
            f"{source} is not in the build context (.dockerignore)"
        )


def test_the_image_installs_the_cluster_policy_where_airflow_loads_it(
    services: dict[str, Any],
) -> None:
    """Airflow imports `airflow_local_settings` from $AIRFLOW_HOME/config: the image copies it
    there, and no Airflow service moves AIRFLOW_HOME or mounts over that folder."""
    dockerfile = (REPO_ROOT / "images" / "airflow" / "Dockerfile").read_text()
    [home] = re.findall(r"\bAIRFLOW_HOME=(\S+)", dockerfile)
    copies = [line.split()[1:] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    target = f"{home}/config/airflow_local_settings.py"
    assert [LOCAL_SETTINGS.relative_to(REPO_ROOT).as_posix(), target] in copies
    for name in AIRFLOW_SERVICES:
        service = services[name]
        assert "AIRFLOW_HOME" not in service.get("environment", {}), name
        mounts = [volume.split(":")[1] for volume in service.get("volumes", [])]
        assert not any(target.startswith(mount) for mount in mounts), (name, mounts)
    spec = importlib.util.spec_from_file_location("airflow_local_settings", LOCAL_SETTINGS)
    assert spec is not None
    assert spec.loader is not None
    policy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(policy)
    assert policy.task_instance_mutation_hook is task_instance_mutation_hook
