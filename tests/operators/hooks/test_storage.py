"""Storage credentials come from each tenant's Airflow connection, and a learner gets only its
own tenant's keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from operators.hooks.storage import TenantStorageHook, storage_connection
from operators.tasks.learner import LearnerOperator
from trainyard.backends.local.backend import LocalProcessBackend
from trainyard.failures import PlatformFault
from trainyard.manifest.schema import parse_manifest
from trainyard.manifest.submission import example_manifest
from trainyard.storage.config import StorageCredentials
from trainyard.tenancy.config import CONFIG_ENV, TrainyardConfig, load_config

KEYS = {
    "acme": StorageCredentials("AKIA-ACME-4f1d", "acme-secret-77c0e1"),
    "globex": StorageCredentials("AKIA-GLOBEX-9a2b", "globex-secret-1d3f5a"),
}


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TrainyardConfig:
    """Two S3 tenants and a local one; Airflow holds both S3 tenants' connections."""
    document = {
        "work_dir": str(tmp_path / "work"),
        "tenants": [
            {
                "name": name,
                "storage": {"kind": "s3", "endpoint": "minio:9000", "bucket": name},
            }
            for name in KEYS
        ]
        + [{"name": "initech", "storage": {"kind": "local", "root": str(tmp_path / "initech")}}],
    }
    path = tmp_path / "trainyard.yaml"
    path.write_text(yaml.safe_dump(document))
    monkeypatch.setenv(CONFIG_ENV, str(path))
    loaded = load_config(path)
    for name, keys in KEYS.items():
        connection = storage_connection(loaded.tenant(name), keys)
        monkeypatch.setenv(f"AIRFLOW_CONN_{connection.conn_id.upper()}", connection.as_json())
    return loaded


def test_the_hook_reads_the_tenants_own_connection(config: TrainyardConfig) -> None:
    assert TenantStorageHook(config.tenant("acme")).get_credentials() == KEYS["acme"]
    assert TenantStorageHook(config.tenant("globex")).get_credentials() == KEYS["globex"]
    assert TenantStorageHook(config.tenant("initech")).get_credentials() is None


def test_the_connection_is_an_aws_connection_with_the_endpoint(config: TrainyardConfig) -> None:
    connection = storage_connection(config.tenant("acme"), KEYS["acme"])

    assert connection.conn_id == "trainyard_storage_acme"
    assert connection.conn_type == "aws"
    assert (connection.login, connection.password) == KEYS["acme"]
    assert json.loads(connection.extra or "{}") == {"endpoint_url": "http://minio:9000"}


def test_a_missing_connection_is_a_platform_fault_naming_it_and_the_fix(
    config: TrainyardConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_TRAINYARD_STORAGE_GLOBEX")
    # Keys in the worker's environment are not a fallback: the connection is the one way.
    monkeypatch.setenv("TRAINYARD_S3_ACCESS_KEY", "env-access")
    monkeypatch.setenv("TRAINYARD_S3_SECRET_KEY", "env-secret")

    with pytest.raises(PlatformFault) as raised:
        TenantStorageHook(config.tenant("globex")).get_credentials()

    assert "'trainyard_storage_globex'" in raised.value.cause
    assert "trainyard tenants sync" in raised.value.fix


def test_the_keys_repr_shows_neither_key() -> None:
    assert "AKIA" not in repr(KEYS["acme"])
    assert "secret" not in repr(KEYS["acme"]).replace("secret_key", "")


def test_a_learner_gets_its_tenants_keys_and_nobody_elses(
    config: TrainyardConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the learner task to the learner process's environment: only acme's keys, under the
    runtime's names; not globex's, not Airflow's connections or settings."""
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "airflow-jwt-secret")
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://a:pw@db/airflow")
    task = LearnerOperator(task_id="learner", tenant="acme", job_id="acme.digits-mlp.x-1")
    spec = task.learner_spec(parse_manifest(example_manifest("acme")), attempt=1)

    env = LocalProcessBackend(config, "acme").learner_environment(spec, rank=0, ports=[29500])

    assert env["TRAINYARD_STORAGE_ACCESS_KEY"] == KEYS["acme"].access_key
    assert env["TRAINYARD_STORAGE_SECRET_KEY"] == KEYS["acme"].secret_key
    values = "\n".join(env.values())
    assert KEYS["globex"].access_key not in values
    assert KEYS["globex"].secret_key not in values
    assert not any(name.startswith("AIRFLOW") for name in env)
    assert "airflow-jwt-secret" not in values
    assert "pw@db" not in values


def test_the_connection_carries_the_region_when_the_config_sets_one(
    config: TrainyardConfig,
) -> None:
    tenant = config.tenant("acme")
    storage = tenant.storage.model_copy(update={"region": "eu-1"})

    connection = storage_connection(tenant.model_copy(update={"storage": storage}), KEYS["acme"])

    assert json.loads(connection.extra or "{}") == {
        "endpoint_url": "http://minio:9000",
        "region_name": "eu-1",
    }
    assert connection.description == "Object storage of tenant acme (bucket acme)"
