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
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from trainyard.jobs.checkpoints import CheckpointStore, CommittedCheckpoint
from trainyard.jobs.layout import JobLayout, tenant_of
from trainyard.jobs.progress import estimate, format_duration, metric_names, read_metrics
from trainyard.jobs.records import (
    TERMINAL_STATES,
    AttemptInfo,
    JobRecord,
    JobState,
    list_records,
    load_record,
)
from trainyard.jobs.registry import ModelRegistry, ModelVersion
from trainyard.limits import MAX_STRING_CHARS, shorten
from trainyard.manifest.schema import confine_storage_path
from trainyard.storage import ObjectStore
from trainyard.tenancy.config import TrainyardConfig, UnknownTenantError, load_config
from trainyard.tenancy.names import dag_id_for_tenant, data_asset_uri

app = FastAPI(title="Trainyard", description="Training jobs of Trainyard's tenants.")
#: Where trainyard_plugin.py mounts the app in the API server.
MOUNT = "/trainyard"
#: The pages' scripts, style and vendored libraries (static/vendor, each with its licence):
#: public files, served without a login; nothing is loaded from elsewhere.
STATIC = Path(__file__).resolve().parent / "trainyard_static"
app.mount("/static", StaticFiles(directory=STATIC), name="static")

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
    """A job as the list shows it: state, progress, attempt, failure class, model version."""

    job_id: str
    dag_run_id: str
    name: str
    state: JobState
    created_at: datetime
    updated_at: datetime
    attempt: int
    failure: str | None = None
    failure_class: str | None = None
    evaluation: dict[str, Any] | None = None
    model_version: int | None = None
    step: int | None = None
    total_steps: int | None = None
    progress: float | None = None
    elapsed_s: float
    eta_s: float | None = None

    @classmethod
    def of(cls, record: JobRecord, rows: list[dict[str, Any]] | None = None) -> JobSummary:
        """`rows`: the job's metric rows, read only for jobs still running (progress, attempt);
        a finished job's progress is its record's."""
        failure = record.failure
        finished = record.state in TERMINAL_STATES
        now = record.updated_at if finished else datetime.now(UTC)
        progress = estimate(rows or [], record.created_at, now, finished=finished)
        attempt = record.attempts[-1].attempt if record.attempts else 0
        if not finished and (not record.attempts or record.attempts[-1].failure_class):
            attempt += 1  # the first attempt or a retry runs (or waits): no AttemptInfo yet
        if rows and isinstance(rows[-1].get("attempt"), int):
            attempt = max(attempt, rows[-1]["attempt"])
        fraction = 1.0 if record.state is JobState.SUCCEEDED else progress.fraction
        return cls(
            job_id=record.job_id,
            dag_run_id=record.dag_run_id,
            name=str(record.manifest.get("name", "")),
            state=record.state,
            created_at=record.created_at,
            updated_at=record.updated_at,
            attempt=attempt,
            failure=f"{failure.failure_class}: {failure.message}" if failure else None,
            failure_class=failure.failure_class if failure else None,
            evaluation=record.evaluation,
            model_version=record.model_version,
            step=record.final_step if finished and record.final_step else progress.step,
            total_steps=progress.total_steps,
            progress=fraction,
            elapsed_s=progress.elapsed_s,
            eta_s=progress.eta_s,
        )


class JobList(BaseModel):
    tenant: str
    jobs: list[JobSummary]


def tenant_store(config: TrainyardConfig, tenant: str) -> ObjectStore:
    from trainyard.storage import open_store

    return open_store(config.tenant(tenant).storage)


def tenant_jobs(config: TrainyardConfig, tenant: str, state: JobState | None = None) -> JobList:
    """Every job of `tenant` with a record in its storage (only those in `state`, if given),
    newest first."""
    store = tenant_store(config, tenant)
    records = [record for record in list_records(store) if state is None or record.state is state]
    records.sort(key=lambda record: record.created_at, reverse=True)
    return JobList(
        tenant=tenant,
        jobs=[
            JobSummary.of(
                record,
                None if record.state in TERMINAL_STATES else read_metrics(store, record.job_id),
            )
            for record in records
        ],
    )


class Resume(BaseModel):
    """Where a retry took over: attempt `attempt`'s first metric row, at `step`."""

    attempt: int
    step: float


class Links(BaseModel):
    """Airflow UI pages of the job's run (paths on the API server)."""

    run: str
    learner_logs: str
    trigger: str


class JobDetail(BaseModel):
    """Everything the job page shows."""

    tenant: str
    job: JobSummary
    failure_task: str | None
    failure_fix: str | None
    attempts: list[AttemptInfo]
    metrics: list[str]
    rows: list[dict[str, Any]]
    resumes: list[Resume]
    checkpoints: list[CommittedCheckpoint]
    evaluation: dict[str, Any] | None
    gate: ModelVersion | None
    versions: list[ModelVersion]
    production_version: int | None
    links: Links


def airflow_links(request: Request, record: JobRecord) -> Links:
    """Links into Airflow's UI, relative to where Airflow serves it (above this app's mount)."""
    root = request.scope.get("root_path", "").removesuffix(MOUNT)
    run = f"{root}/dags/{quote(record.dag_id)}/runs/{quote(record.dag_run_id, safe='')}"
    return Links(
        run=run, learner_logs=f"{run}/tasks/learner", trigger=f"{root}/dags/{quote(record.dag_id)}"
    )


def job_record(config: TrainyardConfig, tenant: str, job_id: str) -> tuple[ObjectStore, JobRecord]:
    """The tenant's storage and the job's record; 404 for a job that is not the tenant's or
    has no record."""
    try:
        owner = tenant_of(job_id)
    except ValueError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job id: {error}") from error
    store = tenant_store(config, tenant)
    record = load_record(store, job_id) if owner == tenant else None
    if record is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"tenant {tenant!r} has no job {shorten(job_id)}"
        )
    return store, record


def job_detail(config: TrainyardConfig, tenant: str, job_id: str, request: Request) -> JobDetail:
    """The job page's data (404 as `job_record` says)."""
    store, record = job_record(config, tenant, job_id)
    rows = read_metrics(store, job_id)
    first_steps: dict[int, float] = {}
    for row in rows:
        if isinstance(row.get("attempt"), int) and isinstance(row.get("step"), int | float):
            first_steps.setdefault(row["attempt"], float(row["step"]))
    registry = ModelRegistry(store, str(record.manifest.get("name", "")))
    versions = registry.versions() if record.manifest.get("name") else []
    production = registry.production_pointer() if versions else None
    return JobDetail(
        tenant=tenant,
        job=JobSummary.of(record, rows),
        failure_task=record.failure.task if record.failure else None,
        failure_fix=record.failure.fix if record.failure else None,
        attempts=record.attempts,
        metrics=metric_names(rows),
        rows=rows,
        resumes=[
            Resume(attempt=attempt, step=step)
            for attempt, step in sorted(first_steps.items())
            if attempt > min(first_steps)
        ],
        checkpoints=CheckpointStore(store, JobLayout(job_id)).committed(),
        evaluation=record.evaluation,
        gate=next((v for v in versions if v.job_id == job_id), None),
        versions=versions,
        production_version=production.version if production else None,
        links=airflow_links(request, record),
    )


@app.get("/api/tenants/{tenant}/jobs/{job_id}")
def get_job(tenant: str, job_id: str, user: User, request: Request) -> JobDetail:
    """One job: metric rows of every attempt, attempts, checkpoints, evaluation, versions."""
    return job_detail(authorized_config(user, tenant), tenant, job_id, request)


@app.get("/api/tenants/{tenant}/jobs")
def list_jobs(tenant: str, user: User, state: JobState | None = None) -> JobList:
    """The tenant's jobs (those in `state`, if given) from the job records in its storage."""
    return tenant_jobs(authorized_config(user, tenant), tenant, state)


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


UPLOT = "vendor/uplot-1.6.32"
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="{static}/trainyard.css">{head}</head>
<body data-api="{root}/api" data-pages="{root}/tenants/{tenant}" data-tenant="{tenant}"
 data-job="{job}">{body}
<script src="{static}/common.js"></script>{scripts}</body></html>"""


def page(
    request: Request,
    title: str,
    body: str,
    *,
    tenant: str = "",
    job: str = "",
    scripts: tuple[str, ...] = (),
    styles: tuple[str, ...] = (),
) -> str:
    """A page in Airflow's look; `scripts` and `styles` are files of static/ (no other host)."""
    root = request.scope.get("root_path", "")
    static = f"{root}/static"
    return PAGE.format(
        title=html.escape(title),
        root=html.escape(root),
        static=html.escape(static),
        tenant=html.escape(tenant),
        job=html.escape(job),
        head="".join(f'<link rel="stylesheet" href="{static}/{name}">' for name in styles),
        body=body,
        scripts="".join(f'<script src="{static}/{name}"></script>' for name in scripts),
    )


def crumbs(root: str, tenant: str = "", job: str = "") -> str:
    parts = [f'<a href="{root}/">Trainyard</a>']
    if tenant:
        parts.append(f'<a href="{root}/tenants/{quote(tenant)}/jobs">{html.escape(tenant)}</a>')
    if job:
        parts.append(html.escape(job))
    return f'<nav class="crumbs">{" / ".join(parts)}</nav>'


@app.get("/tenants/{tenant}/jobs", response_class=HTMLResponse)
def jobs_page(tenant: str, user: User, request: Request, state: JobState | None = None) -> str:
    """The tenant's jobs as a page: rendered here, then kept up to date by jobs.js."""
    listing = tenant_jobs(authorized_config(user, tenant), tenant, state)
    root = request.scope.get("root_path", "")
    rows = "".join(
        f'<tr data-job="{html.escape(job.job_id)}" data-state="{job.state.value}">'
        + "".join(
            f"<td>{cell}</td>"
            for cell in (
                f'<a href="{root}/tenants/{quote(tenant)}/jobs/{quote(job.job_id)}">'
                f"{html.escape(job.job_id)}</a>",
                f'<span class="state {job.state.value}">{job.state.value}</span>',
                html.escape(progress_text(job)),
                format_duration(job.elapsed_s),
                format_duration(job.eta_s) if job.eta_s is not None else "",
                str(job.attempt or ""),
                html.escape(job.failure_class or ""),
                f"v{job.model_version}" if job.model_version is not None else "",
                job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
        )
        + "</tr>"
        for job in listing.jobs
    )
    header = "".join(
        f"<th>{h}</th>"
        for h in (
            "job id",
            "state",
            "progress",
            "elapsed",
            "time left",
            "attempt",
            "failure class",
            "model",
            "created (UTC)",
        )
    )
    options = "".join(
        f'<option value="{value}"{" selected" if state and state.value == value else ""}>'
        f"{label}</option>"
        for value, label in [("", "all states"), *((s.value, s.value) for s in JobState)]
    )
    empty = "" if rows else '<tr><td colspan="9" class="empty">No jobs yet.</td></tr>'
    body = (
        f"{crumbs(root, tenant)}<h1>Trainyard jobs of {html.escape(tenant)}</h1>"
        f'<div class="toolbar"><label>State <select id="state-filter">{options}</select>'
        f'</label><span id="updated"></span></div>'
        f'<table><thead><tr>{header}</tr></thead><tbody id="jobs">{rows}{empty}</tbody></table>'
    )
    return page(request, f"Trainyard jobs of {tenant}", body, tenant=tenant, scripts=("jobs.js",))


def progress_text(job: JobSummary) -> str:
    """'34% step 340 of 1000' (what is known)."""
    parts = [f"{job.progress:.0%}"] if job.progress is not None else []
    if job.step is not None:
        parts.append(f"step {job.step}" + (f" of {job.total_steps}" if job.total_steps else ""))
    return " ".join(parts)


@app.get("/tenants/{tenant}/jobs/{job_id}", response_class=HTMLResponse)
def job_page(tenant: str, job_id: str, user: User, request: Request) -> str:
    """One job's page; job.js draws it from the job API (and refreshes it while it runs)."""
    job_record(authorized_config(user, tenant), tenant, job_id)  # 403/404 up front
    root = request.scope.get("root_path", "")
    body = f'{crumbs(root, tenant, job_id)}<main id="job"><p class="empty">Loading…</p></main>'
    return page(
        request,
        f"Trainyard job {job_id}",
        body,
        tenant=tenant,
        job=job_id,
        scripts=(f"{UPLOT}/uPlot.iife.min.js", "job.js"),
        styles=(f"{UPLOT}/uPlot.min.css",),
    )


@app.get("/", response_class=HTMLResponse)
def index(user: User, request: Request) -> str:
    """Links to the job lists of the tenants the caller may see."""
    names = [name for name in load_config().tenant_names if may_use_runs(user, name)]
    root = request.scope.get("root_path", "")
    items = "".join(
        f'<li><a href="{root}/tenants/{quote(n)}/jobs">{html.escape(n)}</a></li>' for n in names
    )
    body = f"<ul>{items}</ul>" if items else "<p>You may not see any tenant's jobs.</p>"
    return page(request, "Trainyard jobs", f"<h1>Trainyard jobs</h1>{body}")
