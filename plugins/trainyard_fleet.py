"""The fleet view of the Trainyard app (included by trainyard_web.py): what each tenant used and
what faults cost (`trainyard.jobs.accounting`, from the job records in each tenant's storage).

`GET /trainyard/api/usage[?tenant=&since=7d]`: the usage of one tenant (403 unless the caller
may see its jobs) or of every tenant the caller may see (an admin: all). Authorization is the
jobs API's (`trainyard_web.may_use_runs`); storage is opened as the jobs API opens it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import trainyard_web as web
from fastapi import APIRouter, HTTPException, status

from trainyard.jobs.accounting import JobAccount, store_accounts, usage_by_tenant, window_start
from trainyard.tenancy.config import TrainyardConfig

router = APIRouter()


def tenant_accounts(
    config: TrainyardConfig, tenants: list[str], since: datetime | None = None
) -> list[JobAccount]:
    """The accounting of the jobs of `tenants` created since `since`, from each one's storage."""
    return [
        job for tenant in tenants for job in store_accounts(web.tenant_store(config, tenant), since)
    ]


@router.get("/api/usage")
def get_usage(user: web.User, tenant: str | None = None, since: str | None = None) -> list[Any]:
    """Each tenant's usage over the window `since` (all time without): one object a tenant."""
    if tenant is not None:
        config = web.authorized_config(user, tenant)
        tenants = [tenant]
    else:
        config = web.deployment_config.get()
        tenants = [name for name in config.tenant_names if web.may_use_runs(user, name)]
    try:
        start = window_start(since, datetime.now(UTC))
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from error
    found = usage_by_tenant(tenant_accounts(config, tenants, start))
    return [summary.as_json() for summary in found.values()]
