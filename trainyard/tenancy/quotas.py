"""A tenant's quotas: the pool share a job's learners hold, and jobs too big to ever start.

The pools themselves are named in `trainyard.tenancy.names`; `trainyard tenants sync` sizes them
from the config's quotas.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainyard.failures import ResourceError
from trainyard.jobs.layout import RunMode
from trainyard.jobs.tasks import TaskId
from trainyard.manifest.schema import Resources
from trainyard.tenancy.config import TenantConfig
from trainyard.tenancy.names import cpu_pool, gpu_pool


@dataclass(frozen=True)
class PoolRequest:
    """What a job's learner task holds while it runs: `slots` of the pool `pool`."""

    pool: str
    slots: int


#: The task of a tenant's DAG that runs the learners of each mode; both hold pool slots while
#: they run, so an evaluation on GPUs counts against the GPU quota as training does.
POOLED_TASKS: dict[RunMode, TaskId] = {
    RunMode.TRAIN: TaskId.LEARNER,
    RunMode.EVALUATE: TaskId.EVALUATE,
}


def learner_pool(tenant: str, resources: Resources, mode: RunMode) -> PoolRequest:
    """The share of a task running `mode`'s learners: `gpus` GPU slots per learner, or one CPU
    slot per learner (training runs `learners` of them, evaluation one)."""
    learners = resources.learners_in(mode)
    if resources.gpus > 0:
        return PoolRequest(gpu_pool(tenant), resources.gpus * learners)
    return PoolRequest(cpu_pool(tenant), learners)


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
