"""What `trainyard tenants sync` would grant and write, without Airflow running: the tenant
role's reach, the storage connection (credentials from the environment only), the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from operators.dag_factory import build_tenant_dag
from operators.deployment.tenant_sync import (
    Outcome,
    connection_spec,
    gpu_pool_warning,
    role_permissions,
    tenants_variable,
)
from tests.support.gpus import FAKE_NVML_ENV, StandInGpus, stand_in_gpu
from trainyard.backends import backend_for
from trainyard.tenancy.config import TrainyardConfig, load_config
from trainyard.tenancy.names import dag_access_control, storage_connection_id, tenant_role


@pytest.fixture
def config(tmp_path: Path) -> TrainyardConfig:
    path = tmp_path / "trainyard.yaml"
    s3 = {"kind": "s3", "endpoint": "minio:9000", "bucket": "b-acme", "region": "eu-1"}
    path.write_text(
        yaml.safe_dump(
            {
                "work_dir": "work",
                "tenants": [
                    {"name": "acme", "storage": {**s3, "credentials_env": "ACME_S3"}},
                    {"name": "globex", "storage": {"kind": "local", "root": "globex"}},
                ],
            }
        )
    )
    return load_config(path)


def test_a_tenant_role_reaches_no_dag_through_global_permissions() -> None:
    tenant = role_permissions()["tenant"]
    dag_wide = {(action, resource) for action, resource in tenant if resource == "DAGs"}
    assert dag_wide == {("menu_access", "DAGs")}
    # What FAB checks besides the DAG itself for runs, task instances, logs and XComs.
    for needed in ("DAG Runs", "Task Instances", "Task Logs", "XComs"):
        assert ("can_read", needed) in tenant
    assert ("can_create", "DAG Runs") in tenant
    assert ("can_edit", "DAG Runs") in tenant  # cancel
    assert not any(resource in {"Connections", "Variables", "Roles"} for _, resource in tenant)
    # Asset events are global: tenants record them through the Trainyard plugin instead.
    assert {action for action, resource in tenant if resource == "Assets"} == {
        "can_read",
        "menu_access",
    }


def test_the_platform_admin_reaches_every_dag_but_not_users_and_roles() -> None:
    admin = role_permissions()["admin"]
    assert {("can_read", "DAGs"), ("can_edit", "DAGs")} <= admin
    assert ("can_read", "Task Logs") in admin
    assert not any(resource in {"Roles", "Passwords"} for _, resource in admin)


def test_every_tenant_dag_names_its_own_role_only(config: TrainyardConfig) -> None:
    for tenant in config.tenants:
        dag = build_tenant_dag(tenant, backend_for(config, tenant.name))
        assert dag.access_control == {
            tenant_role(tenant.name): {
                "DAGs": {"can_read", "can_edit"},
                "DAG Runs": {"can_read", "can_create"},
            }
        }
        assert dag.access_control == dag_access_control(tenant.name)


def test_an_s3_tenants_connection_takes_its_credentials_from_the_environment(
    config: TrainyardConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_S3_ACCESS_KEY", raising=False)
    with pytest.raises(RuntimeError, match="export ACME_S3_ACCESS_KEY and ACME_S3_SECRET_KEY"):
        connection_spec(config, "acme")

    monkeypatch.setenv("ACME_S3_ACCESS_KEY", "key")
    monkeypatch.setenv("ACME_S3_SECRET_KEY", "secret")
    spec = connection_spec(config, "acme")
    assert spec is not None
    assert (spec.conn_id, spec.conn_type) == (storage_connection_id("acme"), "aws")
    assert (spec.login, spec.password) == ("key", "secret")
    assert spec.extra_dejson == {"endpoint_url": "http://minio:9000", "region_name": "eu-1"}
    assert spec.description == "Object storage of tenant acme (bucket b-acme)"
    assert connection_spec(config, "globex") is None  # local storage: nothing to connect to


def test_the_tenants_variable_holds_no_secret(
    config: TrainyardConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_S3_SECRET_KEY", "secret")
    variable = tenants_variable(config)
    assert variable["acme"]["role"] == "tenant_acme"
    assert variable["acme"]["storage_connection"] == "trainyard_storage_acme"
    assert variable["globex"]["storage_connection"] is None
    assert "secret" not in str(variable)


def gpu_config(tmp_path: Path, quotas: dict[str, int], backend: str = "local") -> TrainyardConfig:
    tenants = [
        {"name": name, "gpu_quota": quota, "storage": {"kind": "local", "root": name}}
        for name, quota in quotas.items()
    ]
    path = tmp_path / "gpus.yaml"
    path.write_text(
        yaml.safe_dump({"work_dir": "work", "learner_backend": backend, "tenants": tenants})
    )
    return load_config(path)


def test_sync_warns_when_the_gpu_pools_promise_more_than_this_machine_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpus = StandInGpus(tmp_path / "gpus")
    gpus.write([stand_in_gpu(index) for index in range(4)])
    gpus.install(monkeypatch)

    warning = gpu_pool_warning(gpu_config(tmp_path, {"acme": 2, "globex": 3}))

    assert warning is not None
    assert warning.outcome is Outcome.WARNING
    assert "(gpu_quota: acme 2, globex 3) promise 5 GPUs at once" in warning.detail
    assert "this machine has 4" in warning.detail
    assert gpu_pool_warning(gpu_config(tmp_path, {"acme": 2, "globex": 2})) is None
    # Another backend's learners (Kubernetes nodes, here the test-only bare one) run elsewhere.
    assert gpu_pool_warning(gpu_config(tmp_path, {"acme": 8}, backend="bare")) is None


def test_sync_warns_of_gpu_pools_on_a_machine_without_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    StandInGpus(tmp_path / "gpus").install(monkeypatch)
    monkeypatch.delenv(FAKE_NVML_ENV)  # no driver

    warning = gpu_pool_warning(gpu_config(tmp_path, {"acme": 1, "globex": 0}))

    assert warning is not None
    assert "promise 1 GPUs at once, but this machine has 0" in warning.detail
