"""Names of the Airflow objects that hold a tenant's share of the deployment.

One place defines them, so the DAG factory (which uses the pools and roles), `trainyard tenants
sync` (which creates them) and the tests agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainyard.config import TenantConfig

#: The role that sees and runs every tenant's DAGs (FAB's Admin role also does).
PLATFORM_ADMIN_ROLE = "TrainyardPlatformAdmin"


def _slug(tenant: str) -> str:
    return tenant.replace("-", "_")


def tenant_role(tenant: str) -> str:
    """The FAB role of a tenant's users: read and trigger its DAGs, nothing of other tenants."""
    return f"tenant_{_slug(tenant)}"


def gpu_pool(tenant: str) -> str:
    """The pool sized in GPUs: a GPU learner task takes `gpus x learners` of its slots."""
    return f"trainyard_{_slug(tenant)}_gpu"


def cpu_pool(tenant: str) -> str:
    """The pool of CPU-only jobs: a CPU learner task takes `learners` of its slots."""
    return f"trainyard_{_slug(tenant)}_cpu"


def storage_connection_id(tenant: str) -> str:
    """The Airflow connection holding the tenant's storage endpoint and credentials."""
    return f"trainyard_storage_{_slug(tenant)}"


@dataclass(frozen=True)
class PoolSpec:
    name: str
    slots: int
    description: str


def tenant_pools(tenant: TenantConfig) -> list[PoolSpec]:
    """The pools `trainyard tenants sync` keeps in step with the tenant's quotas."""
    return [
        PoolSpec(gpu_pool(tenant.name), tenant.gpu_quota, f"GPUs of tenant {tenant.name}"),
        PoolSpec(
            cpu_pool(tenant.name),
            tenant.cpu_quota,
            f"CPU-only learners of tenant {tenant.name}",
        ),
    ]
