"""`trainyard tenants sync`: the Airflow objects of every tenant, kept in step with the config.

For each tenant it creates or updates its FAB role (`tenant_role`), its pools (`tenant_pools`)
and, for S3 storage, its storage connection (`storage_connection_id`); for the deployment, the
platform-admin role and the `trainyard_tenants` variable. It reports each object as created,
updated or unchanged, so a second run reports nothing changed, and warns when the GPU pools of
the local backend's tenants promise more GPUs than this machine has.

It runs inside the Airflow environment (where `airflow` runs: same metadata database, same
configuration) and uses Airflow's models and FAB's security manager, not the REST API, because:

- it has to run before the API server does: the DAG processor refuses a DAG whose
  `access_control` names a role that does not exist yet, so the deployment's init step runs
  `airflow db migrate`, creates the admin, then this, and only then starts the components;
- the storage credentials it writes into connections come from the environment of the Airflow
  deployment (the variables each tenant's `credentials_env` names), not from a user's terminal,
  and no secret travels over the network or appears in the report;
- FAB's role API only grants permissions that already exist; the security manager creates them.

The DAG-specific permissions of a tenant role (`DAG:trainyard_<tenant>`...) are not managed
here: the DAG processor grants them from each DAG's `access_control` (trainyard.tenancy.names) and
revokes them from every other role.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf
from airflow.models.connection import Connection
from airflow.models.pool import Pool
from airflow.models.variable import Variable
from airflow.sdk import Connection as StorageConnection
from airflow.utils.session import create_session
from sqlalchemy import select

from operators.deployment.auth_managers import AUTH_MANAGERS
from operators.hooks.storage import storage_connection
from trainyard.backends import backend_for
from trainyard.storage.config import S3StorageConfig, StorageCredentials
from trainyard.tenancy.config import TrainyardConfig
from trainyard.tenancy.names import (
    PLATFORM_ADMIN_ROLE,
    PoolSpec,
    cpu_pool,
    dag_id_for_tenant,
    gpu_pool,
    storage_connection_id,
    tenant_pools,
    tenant_role,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: The variable holding every tenant's non-secret settings, for people looking at the UI.
TENANTS_VARIABLE = "trainyard_tenants"

Permission = tuple[str, str]  # (action, resource), as FAB names them


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    WARNING = "warning"  # nothing changed, but the config promises what cannot be kept


@dataclass(frozen=True)
class Change:
    """What sync did to one object; `detail` names changed fields, never their secret values."""

    kind: str
    name: str
    outcome: Outcome
    detail: str = ""


@dataclass
class SyncReport:
    changes: list[Change] = field(default_factory=list)

    @property
    def changed(self) -> list[Change]:
        return [c for c in self.changes if c.outcome in (Outcome.CREATED, Outcome.UPDATED)]

    def as_dicts(self) -> list[dict[str, str]]:
        return [{**asdict(c), "outcome": c.outcome.value} for c in self.changes]


def _dag_specific(resource: str) -> bool:
    from airflow.providers.fab.www.security import permissions

    return resource.startswith(tuple(permissions.PREFIX_LIST))


def role_permissions() -> dict[str, set[Permission]]:
    """The global permissions of a tenant role and of the platform-admin role.

    A tenant role gets what FAB's Viewer and User roles hold, minus every permission on the
    global "DAGs" resource (which would reach every DAG) and the creation of asset events,
    menu entries aside: the global reads of runs, task instances, logs and XComs only apply to
    DAGs the role can read, and those come from the DAGs' `access_control`. The platform admin
    gets FAB's Op role: every DAG, run, log, pool, connection and variable, but not users and
    roles (FAB's Admin keeps those).
    """
    from airflow.providers.common.compat.security.permissions import RESOURCE_ASSET
    from airflow.providers.fab.auth_manager.security_manager.override import (
        FabAirflowSecurityManagerOverride as Fab,
    )
    from airflow.providers.fab.www.security import permissions

    def for_tenants(action: str, resource: str) -> bool:
        if action == permissions.ACTION_CAN_ACCESS_MENU:
            return True
        if resource == permissions.RESOURCE_DAG:  # every DAG
            return False
        # Assets are global in FAB: an event could start another tenant's data-triggered DAG;
        # the Trainyard plugin records events for the user's own tenant instead.
        return resource != RESOURCE_ASSET or action == permissions.ACTION_CAN_READ

    tenant = {
        (action, resource)
        for action, resource in [*Fab.VIEWER_PERMISSIONS, *Fab.USER_PERMISSIONS]
        if for_tenants(action, resource)
    }
    admin = {*Fab.VIEWER_PERMISSIONS, *Fab.USER_PERMISSIONS, *Fab.OP_PERMISSIONS}
    return {"tenant": tenant, "admin": admin}


def connection_spec(config: TrainyardConfig, tenant: str) -> StorageConnection | None:
    """The storage connection of an S3 tenant (None for local storage), credentials included.

    Raises:
        RuntimeError: the environment variables holding the credentials are not set.
    """
    settings = config.tenant(tenant)
    if not isinstance(settings.storage, S3StorageConfig):
        return None
    return storage_connection(settings, StorageCredentials(*settings.storage.credentials()))


def tenants_variable(config: TrainyardConfig) -> dict[str, Any]:
    """What the deployment gives each tenant, without any secret."""
    return {
        tenant.name: {
            "display_name": tenant.display_name,
            "dag_id": dag_id_for_tenant(tenant.name),
            "role": tenant_role(tenant.name),
            "gpu_pool": gpu_pool(tenant.name),
            "cpu_pool": cpu_pool(tenant.name),
            "gpu_quota": tenant.gpu_quota,
            "cpu_quota": tenant.cpu_quota,
            "priority": tenant.priority,
            "max_running_jobs": tenant.max_running_jobs,
            "kueue_queue": tenant.kueue_queue,
            "storage_connection": (
                storage_connection_id(tenant.name)
                if isinstance(tenant.storage, S3StorageConfig)
                else None
            ),
        }
        for tenant in config.tenants
    }


def _sync_role(
    sm: Any, name: str, wanted: set[Permission], report: SyncReport
) -> None:  # sm: FAB's security manager (untyped)
    role = sm.find_role(name)
    created = role is None
    if created:
        role = sm.add_role(name)
    held = {
        (p.action.name, p.resource.name)
        for p in role.permissions
        if not _dag_specific(p.resource.name)
    }
    for action, resource in sorted(wanted - held):
        sm.add_permission_to_role(role, sm.create_permission(action, resource))
    for action, resource in sorted(held - wanted):
        sm.remove_permission_from_role(role, sm.get_permission(action, resource))
    if created:
        report.changes.append(Change("role", name, Outcome.CREATED, f"{len(wanted)} permissions"))
    elif wanted != held:
        detail = f"+{len(wanted - held)} -{len(held - wanted)} permissions"
        report.changes.append(Change("role", name, Outcome.UPDATED, detail))
    else:
        report.changes.append(Change("role", name, Outcome.UNCHANGED))


def _sync_roles(config: TrainyardConfig, session: Session, report: SyncReport) -> None:
    if conf.get("core", "auth_manager") != AUTH_MANAGERS["fab"]:
        report.changes.append(
            Change("role", "*", Outcome.SKIPPED, "roles need the FAB auth manager")
        )
        return
    from airflow.providers.fab.www.security_appless import ApplessAirflowSecurityManager

    sm = ApplessAirflowSecurityManager(session=session)
    permissions = role_permissions()
    _sync_role(sm, PLATFORM_ADMIN_ROLE, permissions["admin"], report)
    for tenant in config.tenants:
        _sync_role(sm, tenant_role(tenant.name), permissions["tenant"], report)


def _sync_pool(spec: PoolSpec, session: Session, report: SyncReport) -> None:
    """Create or update a quota pool. Deferred tasks count against it: a Kubernetes learner
    defers while it trains and must keep its share of the quota meanwhile."""
    pool = session.scalar(select(Pool).where(Pool.pool == spec.name))
    if pool is None:
        session.add(
            Pool(
                pool=spec.name,
                slots=spec.slots,
                description=spec.description,
                include_deferred=True,
            )
        )
        report.changes.append(Change("pool", spec.name, Outcome.CREATED, f"{spec.slots} slots"))
        return
    changed = []
    if pool.slots != spec.slots:
        changed.append(f"slots {pool.slots} -> {spec.slots}")
        pool.slots = spec.slots
    if pool.description != spec.description:
        changed.append("description")
        pool.description = spec.description
    if not pool.include_deferred:
        changed.append("include_deferred")
        pool.include_deferred = True
    outcome = Outcome.UPDATED if changed else Outcome.UNCHANGED
    report.changes.append(Change("pool", spec.name, outcome, ", ".join(changed)))


def _sync_connection(spec: StorageConnection, session: Session, report: SyncReport) -> None:
    conn = session.scalar(select(Connection).where(Connection.conn_id == spec.conn_id))
    if conn is None:
        session.add(
            Connection(
                conn_id=spec.conn_id,
                conn_type=spec.conn_type,
                description=spec.description,
                login=spec.login,
                password=spec.password,
                extra=spec.extra,
            )
        )
        report.changes.append(Change("connection", spec.conn_id, Outcome.CREATED))
        return
    changed = []
    for name, current, wanted in (
        ("conn_type", conn.conn_type, spec.conn_type),
        ("description", conn.description, spec.description),
        ("login", conn.login, spec.login),
        ("password", conn.password, spec.password),
        ("extra", conn.extra_dejson, spec.extra_dejson),
    ):
        if current != wanted:
            changed.append(name)
    if changed:
        conn.conn_type, conn.description = spec.conn_type, spec.description
        conn.login, conn.password = spec.login, spec.password
        conn.set_extra(spec.extra)
    outcome = Outcome.UPDATED if changed else Outcome.UNCHANGED
    # Field names only: the values may be secrets.
    report.changes.append(Change("connection", spec.conn_id, outcome, ", ".join(changed)))


def _sync_variable(key: str, value: Any, session: Session, report: SyncReport) -> None:
    text = json.dumps(value, indent=2, sort_keys=True)
    variable = session.scalar(select(Variable).where(Variable.key == key))
    description = "Trainyard tenants as `trainyard tenants sync` last applied them"
    if variable is None:
        session.add(Variable(key=key, val=text, description=description))
        report.changes.append(Change("variable", key, Outcome.CREATED))
    elif variable.val != text or variable.description != description:
        variable.val, variable.description = text, description
        report.changes.append(Change("variable", key, Outcome.UPDATED))
    else:
        report.changes.append(Change("variable", key, Outcome.UNCHANGED))


def gpu_pool_warning(config: TrainyardConfig) -> Change | None:
    """A warning when the GPU pools of the tenants whose learners run on this machine (the
    local backend) promise more GPUs at once than it has: their jobs would pass the pools and
    then wait for a GPU, attempt after attempt. Sync runs where Airflow runs, which for the
    local backend is where the learners run."""
    local = [
        tenant
        for tenant in config.tenants
        if tenant.gpu_quota and config.learner_backend_of(tenant.name) == "local"
    ]
    if not local:
        return None
    machine = backend_for(config, local[0].name).machine_gpus()
    promised = sum(tenant.gpu_quota for tenant in local)
    if machine is None or promised <= machine:
        return None
    quotas = ", ".join(f"{tenant.name} {tenant.gpu_quota}" for tenant in local)
    return Change(
        "gpus",
        "this machine",
        Outcome.WARNING,
        f"the local tenants' GPU pools (gpu_quota: {quotas}) promise {promised} GPUs at once, "
        f"but this machine has {machine}: jobs over that wait for a free GPU; lower their "
        "gpu_quota to add up to at most the machine's GPUs",
    )


def sync_tenants(config: TrainyardConfig) -> SyncReport:
    """Create or update every tenant's Airflow objects; return what changed.

    Credentials are read first, so a missing one stops the sync before anything changes.

    Raises:
        RuntimeError: an S3 tenant's credential variables are not set (named in the message).
    """
    connections = [
        spec
        for spec in (connection_spec(config, t.name) for t in config.tenants)
        if spec is not None
    ]
    pools: Iterable[PoolSpec] = [p for t in config.tenants for p in tenant_pools(t)]
    report = SyncReport()
    with create_session() as session:
        _sync_roles(config, session, report)
        for pool in pools:
            _sync_pool(pool, session, report)
        for connection in connections:
            _sync_connection(connection, session, report)
        _sync_variable(TENANTS_VARIABLE, tenants_variable(config), session, report)
    warning = gpu_pool_warning(config)
    if warning is not None:
        report.changes.append(warning)
    return report
