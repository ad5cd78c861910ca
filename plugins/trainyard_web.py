"""Trainyard's pages and API inside Airflow's API server (mounted by plugins/trainyard_plugin.py).

`GET /trainyard/api/tenants/{tenant}/jobs` lists a tenant's jobs from the job records in its
storage; `GET /trainyard/tenants/{tenant}/jobs` shows the same as a page, and `GET /trainyard/`
links the tenants the caller may see. `POST /trainyard/api/tenants/{tenant}/data-events`
records new data for the tenant's data triggers: FAB's asset permissions are not per tenant, so
tenant roles may not post asset events themselves, and this route lets them do it for their own
tenant's assets only.

Airflow does not protect a plugin's routes: each one here authenticates the caller with the API
server's own JWT check (bearer token, or the UI's session cookie) and asks the auth manager
whether the caller may read the runs of the tenant's training DAG, as the REST API would for
`GET /api/v2/dags/trainyard_<tenant>/dagRuns`. Airflow is imported inside the functions, so
loading the plugin in any Airflow component stays cheap.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from trainyard.jobs.records import JobRecord, JobState, list_records
from trainyard.limits import MAX_STRING_CHARS, shorten
from trainyard.manifest.schema import confine_storage_path
from trainyard.tenancy.config import TrainyardConfig, UnknownTenantError, load_config
from trainyard.tenancy.names import dag_id_for_tenant, data_asset_uri

app = FastAPI(title="Trainyard", description="Training jobs of Trainyard's tenants.")

#: Files one data event may announce (a count for the record, not a limit on uploads).
MAX_EVENT_FILES = 10**9


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 naming each invalid field of the body or path, with the value echoed cut short."""
    detail = [
        {
            "loc": list(problem.get("loc", ())),
            "msg": problem.get("msg", ""),
            "input": shorten(problem.get("input")),
        }
        for problem in error.errors()
    ]
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": detail}
    )


async def authenticated_user(request: Request) -> Any:
    """The caller, as the API server's own `get_user` dependency resolves it; 401 without one."""
    from airflow.api_fastapi.core_api.security import get_user

    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    credentials = HTTPAuthorizationCredentials(scheme=scheme, credentials=token) if token else None
    return await get_user(request, None, credentials)


User = Annotated[Any, Depends(authenticated_user)]


def may_use_runs(user: Any, tenant: str, method: Literal["GET", "POST"] = "GET") -> bool:
    """The auth manager's answer: may `user` read (GET) or start (POST) runs of the tenant's
    training DAG?"""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )

    return get_auth_manager().is_authorized_dag(
        method=method,
        access_entity=DagAccessEntity.RUN,
        details=DagDetails(id=dag_id_for_tenant(tenant)),
        user=user,
    )


def authorized_config(
    user: Any, tenant: str, method: Literal["GET", "POST"] = "GET"
) -> TrainyardConfig:
    """The deployment config, once `user` may use `tenant`: else 403 (404 for no such tenant)."""
    config = load_config()
    try:
        config.tenant(tenant)
    except UnknownTenantError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error
    if not may_use_runs(user, tenant, method):
        what = "see the jobs" if method == "GET" else "start jobs"
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"you may not {what} of tenant {tenant!r}")
    return config


class JobSummary(BaseModel):
    job_id: str
    dag_run_id: str
    name: str
    state: JobState
    created_at: datetime
    updated_at: datetime
    failure: str | None = None
    evaluation: dict[str, Any] | None = None
    model_version: int | None = None

    @classmethod
    def of(cls, record: JobRecord) -> JobSummary:
        failure = record.failure
        return cls(
            job_id=record.job_id,
            dag_run_id=record.dag_run_id,
            name=str(record.manifest.get("name", "")),
            state=record.state,
            created_at=record.created_at,
            updated_at=record.updated_at,
            failure=f"{failure.failure_class}: {failure.message}" if failure else None,
            evaluation=record.evaluation,
            model_version=record.model_version,
        )


class JobList(BaseModel):
    tenant: str
    jobs: list[JobSummary]


def tenant_jobs(config: TrainyardConfig, tenant: str) -> JobList:
    """Every job of `tenant` with a record in its storage, newest first."""
    from trainyard.storage import open_store

    records = list_records(open_store(config.tenant(tenant).storage))
    records.sort(key=lambda record: record.created_at, reverse=True)
    return JobList(tenant=tenant, jobs=[JobSummary.of(record) for record in records])


@app.get("/api/tenants/{tenant}/jobs")
def list_jobs(tenant: str, user: User) -> JobList:
    """The tenant's jobs with their state, from the job records in its storage."""
    return tenant_jobs(authorized_config(user, tenant), tenant)


class DataEvent(BaseModel):
    path: str = Field(max_length=MAX_STRING_CHARS)
    files: int = Field(default=0, ge=0, le=MAX_EVENT_FILES)


class DataEventResult(BaseModel):
    assets: list[str]


@app.post("/api/tenants/{tenant}/data-events")
def record_data_event(tenant: str, event: DataEvent, user: User) -> DataEventResult:
    """New data landed under `path` of the tenant's storage: every data trigger of the tenant
    watching that path (or a folder above it) gets an asset event, and its DAG starts.

    Allowed to whoever may start runs of the tenant's training DAG.
    """
    authorized_config(user, tenant, "POST")
    try:
        prefix = confine_storage_path(event.path)
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"path: {error}") from error
    return DataEventResult(assets=register_data_event(tenant, prefix, event.files))


def register_data_event(tenant: str, prefix: str, files: int) -> list[str]:
    """Record an asset event on every data trigger of `tenant` watching `prefix` (or a folder
    above it); return their URIs."""
    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    uploaded = data_asset_uri(tenant, prefix)
    triggered = []
    with create_session() as session:
        watched = session.scalars(
            select(AssetModel).where(AssetModel.uri.startswith(data_asset_uri(tenant, "")))
        )
        for asset in watched:
            if f"{uploaded}/".startswith(f"{asset.uri.rstrip('/')}/"):
                asset_manager.register_asset_change(
                    asset=asset,
                    extra={"path": prefix, "files": files},
                    source_is_api=True,
                    session=session,
                )
                triggered.append(asset.uri)
    return triggered


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}
td,th{{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


@app.get("/tenants/{tenant}/jobs", response_class=HTMLResponse)
def jobs_page(tenant: str, user: User) -> str:
    """The tenant's jobs as a page."""
    listing = tenant_jobs(authorized_config(user, tenant), tenant)
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(cell))}</td>"
            for cell in (
                job.job_id,
                job.state.value,
                job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                ", ".join(f"{k} = {v}" for k, v in sorted((job.evaluation or {}).items())),
                f"v{job.model_version}" if job.model_version is not None else "",
                job.failure or "",
            )
        )
        + "</tr>"
        for job in listing.jobs
    )
    header = "".join(
        f"<th>{h}</th>"
        for h in ("job id", "state", "created (UTC)", "evaluation", "model", "failure")
    )
    body = f"<table><tr>{header}</tr>{rows}</table>" if rows else "<p>No jobs yet.</p>"
    return PAGE.format(title=f"Trainyard jobs of {html.escape(tenant)}", body=body)


@app.get("/", response_class=HTMLResponse)
def index(user: User) -> str:
    """Links to the job lists of the tenants the caller may see."""
    names = [name for name in load_config().tenant_names if may_use_runs(user, name)]
    items = "".join(
        f'<li><a href="tenants/{html.escape(n)}/jobs">{html.escape(n)}</a></li>' for n in names
    )
    body = f"<ul>{items}</ul>" if items else "<p>You may not see any tenant's jobs.</p>"
    return PAGE.format(title="Trainyard jobs", body=body)
