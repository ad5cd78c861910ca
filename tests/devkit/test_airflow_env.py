"""The API server's environment holds no tenant's storage keys and no platform user's
password; the other components' keep theirs."""

from __future__ import annotations

from pathlib import Path

import yaml

from devkit.airflow_env import api_server_environment, tenant_storage_keys


def test_the_api_server_loses_every_s3_tenants_keys_and_the_platforms_connections(
    tmp_path: Path,
) -> None:
    tenants = [
        {
            "name": "acme-corp",
            "storage": {
                "kind": "s3",
                "endpoint": "127.0.0.1:9000",
                "bucket": "acme",
                "credentials_env": "TRAINYARD_S3_ACME",
            },
        },
        {"name": "globex", "storage": {"kind": "local", "root": str(tmp_path / "globex")}},
    ]
    config = tmp_path / "trainyard.yaml"
    config.write_text(yaml.safe_dump({"work_dir": str(tmp_path), "tenants": tenants}))
    env = {
        "TRAINYARD_CONFIG": str(config),
        "TRAINYARD_S3_ACME_ACCESS_KEY": "AKIA-ACME",
        "TRAINYARD_S3_ACME_SECRET_KEY": "acme-secret",
        "AIRFLOW_CONN_TRAINYARD_STORAGE_ACME_CORP": '{"login": "AKIA-ACME"}',
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW_CONN_TRAINYARD_API": '{"login": "platform", "password": "platform-secret"}',
        "AIRFLOW_CONN_TRAINYARD_SWEEPS": '{"conn_type": "postgres", "password": "db-secret"}',
    }

    served = api_server_environment(env)

    assert served == {
        "TRAINYARD_CONFIG": str(config),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    }
    platform = {"AIRFLOW_CONN_TRAINYARD_API", "AIRFLOW_CONN_TRAINYARD_SWEEPS"}
    assert tenant_storage_keys(env) | platform == env.keys() - served.keys()
    assert len(env) == 7  # the other components' environment is left as it was
