"""Names derived from a tenant: its DAGs, role, pools, storage connection, data assets and job
pages.

One place defines them, so the DAG factory (which uses the DAG ids, pools and roles), the
admission policy (`operators/deployment/admission.py`, which sizes a run's learner in its pool),
`trainyard tenants sync` (which creates them), the CLI, the web plugin and the tests agree. The
quotas those pools enforce are in `trainyard.tenancy.quotas`. Names derived from a job (its id, its
storage keys) are in `trainyard.jobs.layout`, which the learner runtime may import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from trainyard.tenancy.config import TenantConfig

#: Where the web plugin (plugins/trainyard_plugin.py) serves its app in Airflow's API server.
PLUGIN_MOUNT = "/trainyard"
#: The role that sees and runs every tenant's DAGs (FAB's Admin role also does).
PLATFORM_ADMIN_ROLE = "TrainyardPlatformAdmin"
_LEARNER_POOL_RE = re.compile(r"trainyard_(?P<slug>.+)_(?P<kind>gpu|cpu)")


def _slug(tenant: str) -> str:
    return tenant.replace("-", "_")


def dag_id_for_tenant(tenant: str) -> str:
    """The id of a tenant's training DAG: `trainyard_<tenant>`, with '-' written as '_'."""
    return f"trainyard_{_slug(tenant)}"


def dag_id_for_job(tenant: str, job_name: str) -> str:
    """The id of a scheduled job's own DAG: `trainyard_<tenant>__<job>`."""
    return f"{dag_id_for_tenant(tenant)}__{_slug(job_name)}"


def dag_id_for_sweeps(tenant: str) -> str:
    """The id of the DAG that runs a tenant's sweeps: `trainyard_<tenant>.sweeps` (no tenant's
    slug and no job's DAG id has a '.')."""
    return f"{dag_id_for_tenant(tenant)}.sweeps"


def is_tenant_dag(dag_id: str, tenant: str) -> bool:
    """Whether `dag_id` is the tenant's DAG, its sweeps' or one of its scheduled jobs' DAGs."""
    own = dag_id_for_tenant(tenant)
    return dag_id in (own, dag_id_for_sweeps(tenant)) or dag_id.startswith(f"{own}__")


def dag_tags(tenant: str) -> list[str]:
    """The tags every DAG of the tenant carries (the UI filters by them)."""
    return ["trainyard", f"tenant:{tenant}"]


def data_asset_uri(tenant: str, path: str) -> str:
    """The Airflow asset that stands for new data under `path` of a tenant's storage."""
    return f"trainyard://{tenant}/{path}"


def data_asset_name(tenant: str, path: str) -> str:
    """The name of the asset `data_asset_uri(tenant, path)`, as the UI shows it."""
    return f"{tenant}:{path}"


def job_page_path(tenant: str, job_id: str, mount: str = PLUGIN_MOUNT) -> str:
    """The path of a job's page: where the plugin's app is served (`mount`; the plugin passes
    the path it was reached at) + `/tenants/<tenant>/jobs/<job id>`. Notifications put
    Airflow's `[api] base_url` before it; the plugin's pages link to it."""
    return f"{mount}/tenants/{quote(tenant)}/jobs/{quote(job_id)}"


def tenant_role(tenant: str) -> str:
    """The FAB role of a tenant's users: read and trigger its DAGs, nothing of other tenants."""
    return f"tenant_{_slug(tenant)}"


#: What a tenant's role may do on each of the tenant's DAGs, as a DAG's `access_control` (FAB
#: resource name -> actions). Triggering a run needs `can_edit` on the DAG as well as
#: `can_create` on its runs (FAB checks both); cancelling needs the global "DAG Runs" edit the
#: role holds, combined with `can_edit` on the DAG. Read covers runs, task instances, logs and
#: XComs, whose global read permissions the role also holds (see operators.deployment.tenant_sync).
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


def learner_pool_tenant(pool: str) -> str | None:
    """The tenant (as its pool-name slug) whose learner pool `pool` is, or None.

    The admission policy only knows a task's declared pool; the slug stands for the tenant in
    `learner_pool`, since a slug's pool names are its tenant's.
    """
    match = _LEARNER_POOL_RE.fullmatch(pool)
    return None if match is None else match["slug"]
