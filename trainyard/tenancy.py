"""Names of the Airflow objects that hold a tenant's share of the deployment, and its quotas.

One place defines them, so the DAG factory (which uses the pools and roles), the admission
policy (`trainyard/admission.py`, which sizes a run's learner in its pool), `trainyard tenants
sync` (which creates them) and the tests agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trainyard.config import TenantConfig
from trainyard.failures import ResourceError
from trainyard.jobs import RunMode
from trainyard.manifest import Resources

#: The role that sees and runs every tenant's DAGs (FAB's Admin role also does).
PLATFORM_ADMIN_ROLE = "TrainyardPlatformAdmin"
_LEARNER_POOL_RE = re.compile(r"trainyard_(?P<slug>.+)_(?P<kind>gpu|cpu)")


def _slug(tenant: str) -> str:
    return tenant.replace("-", "_")


def tenant_role(tenant: str) -> str:
    """The FAB role of a tenant's users: read and trigger its DAGs, nothing of other tenants."""
    return f"tenant_{_slug(tenant)}"


#: What a tenant's role may do on each of the tenant's DAGs, as a DAG's `access_control` (FAB
#: resource name -> actions). Triggering a run needs `can_edit` on the DAG as well as
#: `can_create` on its runs (FAB checks both); cancelling needs the global "DAG Runs" edit the
#: role holds, combined with `can_edit` on the DAG. Read covers runs, task instances, logs and
#: XComs, whose global read permissions the role also holds (see trainyard.tenant_sync).
TENANT_DAG_ACTIONS: dict[str, set[str]] = {
    "DAGs": {"can_read", "can_edit"},
    "DAG Runs": {"can_read", "can_create"},
}


def dag_access_control(tenant: str) -> dict[str, dict[str, set[str]]]:
    """The `access_control` of every DAG of `tenant`: its role, and no other tenant's."""
    return {
        tenant_role(tenant): {
            resource: set(actions) for resource, actions in TENANT_DAG_ACTIONS.items()
        }
    }


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
    """The pools `trainyard tenants sync` keeps in step with the quotas."""
    return [
        PoolSpec(gpu_pool(tenant.name), tenant.gpu_quota, f"GPUs of tenant {tenant.name}"),
        PoolSpec(
            cpu_pool(tenant.name),
            tenant.cpu_quota,
            f"CPU-only learners of tenant {tenant.name}",
        ),
    ]


@dataclass(frozen=True)
class PoolRequest:
    """What a job's learner task holds while it runs: `slots` of the pool `pool`."""

    pool: str
    slots: int


#: The task of a tenant's DAG that runs the learners of each mode; both hold pool slots while
#: they run, so an evaluation on GPUs counts against the GPU quota as training does.
POOLED_TASKS: dict[RunMode, str] = {RunMode.TRAIN: "learner", RunMode.EVALUATE: "evaluate"}


def learner_pool(tenant: str, resources: Resources, mode: RunMode) -> PoolRequest:
    """The share of a task running `mode`'s learners: `gpus` GPU slots per learner, or one CPU
    slot per learner (training runs `learners` of them, evaluation one)."""
    learners = resources.learners_in(mode)
    if resources.gpus > 0:
        return PoolRequest(gpu_pool(tenant), resources.gpus * learners)
    return PoolRequest(cpu_pool(tenant), learners)


def learner_pool_tenant(pool: str) -> str | None:
    """The tenant (as its pool-name slug) whose learner pool `pool` is, or None.

    The admission policy only knows a task's declared pool; the slug stands for the tenant in
    `learner_pool`, since a slug's pool names are its tenant's.
    """
    match = _LEARNER_POOL_RE.fullmatch(pool)
    return None if match is None else match["slug"]


def check_quota(resources: Resources, tenant: TenantConfig) -> None:
    """Reject a job that could never start: it asks for more than its tenant's whole quota.

    Such a learner task would wait in its pool forever; failing at validation says why.

    Raises:
        ResourceError: naming the manifest field and the quota.
    """
    if resources.gpus > 0:
        wanted = resources.gpus * resources.learners
        if wanted > tenant.gpu_quota:
            raise ResourceError(
                f"resources.gpus: the job needs gpus x learners = {resources.gpus} x "
                f"{resources.learners} = {wanted} GPUs at once, more than tenant "
                f"{tenant.name!r}'s whole GPU quota of {tenant.gpu_quota}",
                f"ask for at most {tenant.gpu_quota} GPUs in all (resources.gpus x "
                "resources.learners), or ask the platform admin to raise the tenant's gpu_quota",
            )
    elif resources.learners > tenant.cpu_quota:
        raise ResourceError(
            f"resources.learners: the job needs {resources.learners} CPU learners at once, more "
            f"than tenant {tenant.name!r}'s whole CPU quota of {tenant.cpu_quota}",
            f"use at most {tenant.cpu_quota} learners, or ask the platform admin to raise the "
            "tenant's cpu_quota",
        )
