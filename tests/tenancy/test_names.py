"""Names derived from a tenant: what the DAG factory, tenants sync, the CLI and the plugin share."""

from __future__ import annotations

import pytest

from trainyard.tenancy.names import (
    cpu_pool,
    dag_id_for_job,
    dag_id_for_tenant,
    dag_tags,
    data_asset_name,
    data_asset_uri,
    gpu_pool,
    is_tenant_dag,
    learner_pool_tenant,
    storage_connection_id,
    tenant_role,
)


@pytest.mark.parametrize(
    ("tenant_name", "dag_id"),
    [
        pytest.param("acme", "trainyard_acme", id="plain"),
        pytest.param("big-co-2", "trainyard_big_co_2", id="dashes-become-underscores"),
    ],
)
def test_dag_id_for_tenant(tenant_name: str, dag_id: str) -> None:
    assert dag_id_for_tenant(tenant_name) == dag_id


def test_a_scheduled_jobs_dag_id_is_under_its_tenants() -> None:
    assert dag_id_for_job("big-co", "nightly-mlp") == "trainyard_big_co__nightly_mlp"


@pytest.mark.parametrize(
    ("dag_id", "expected"),
    [
        pytest.param("trainyard_acme", True, id="its-training-dag"),
        pytest.param("trainyard_acme__nightly", True, id="a-scheduled-jobs-dag"),
        pytest.param("trainyard_acme_two", False, id="another-tenant-with-the-prefix"),
        pytest.param("trainyard_globex__nightly", False, id="another-tenants-job"),
    ],
)
def test_which_dags_are_a_tenants(dag_id: str, expected: bool) -> None:
    assert is_tenant_dag(dag_id, "acme") is expected


def test_a_tenants_dags_are_tagged_with_it() -> None:
    assert dag_tags("acme") == ["trainyard", "tenant:acme"]


def test_every_airflow_object_of_a_tenant_names_its_slug() -> None:
    assert tenant_role("big-co") == "tenant_big_co"
    assert (gpu_pool("big-co"), cpu_pool("big-co")) == (
        "trainyard_big_co_gpu",
        "trainyard_big_co_cpu",
    )
    assert storage_connection_id("big-co") == "trainyard_storage_big_co"
    assert learner_pool_tenant(gpu_pool("big-co")) == "big_co"


def test_a_data_asset_names_the_tenant_and_the_path() -> None:
    assert data_asset_uri("acme", "datasets/digits") == "trainyard://acme/datasets/digits"
    assert data_asset_name("acme", "datasets/digits") == "acme:datasets/digits"
