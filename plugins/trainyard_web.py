"""Trainyard's pages and API inside Airflow's API server (mounted by plugins/trainyard_plugin.py).

`GET /trainyard/api/tenants/{tenant}/jobs` lists a tenant's jobs: the runs of its training DAG
(from Airflow's metadata DB: this app runs in the API server) joined with the job records in its
storage, each read by `trainyard.jobs.state.job_view` as the CLI reads it, so a job still queued
before `validate` is listed too; `GET /trainyard/tenants/{tenant}/jobs` shows the same as a
page, and `GET /trainyard/` (trainyard_fleet.py) is the landing page. `POST
/trainyard/api/tenants/{tenant}/data-events` records new data for the tenant's data triggers:
FAB's asset permissions are not per tenant, so tenant roles may not post asset events
themselves, and this route lets them do it for their own tenant's assets only.

Airflow does not protect a plugin's routes: each one here authenticates the caller with the API
server's own JWT check (bearer token, or the UI's session cookie) and asks the auth manager
whether the caller may read the runs of the tenant's training DAG, as the REST API would for
`GET /api/v2/dags/trainyard_<tenant>/dagRuns`. A tenant's storage is opened with the keys of
its Airflow connection, as the tasks open it (`TenantStorageHook`): the API server holds no
tenant's keys in its environment. The deployment config is parsed again only when its file
changes. Airflow is imported inside the functions, so loading the plugin in any Airflow
component stays cheap.
"""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from trainyard.failures import TrainyardFailure
from trainyard.jobs.accounting import read_utilisation
from trainyard.jobs.checkpoints import CheckpointStore, CommittedCheckpoint
from trainyard.jobs.control import job_id_of_run, pause_job, resume_job
from trainyard.jobs.layout import JobLayout, tenant_of, tenant_of_or_none
from trainyard.jobs.progress import format_duration, metric_names, read_metrics
from trainyard.jobs.records import AttemptInfo, JobRecord, JobState, list_records, load_record
from trainyard.jobs.registry import ModelRegistry, ModelVersion
from trainyard.jobs.state import JobView, RunFacts, cancel_job, job_view
from trainyard.jobs.tasks import TaskId
from trainyard.limits import MAX_STRING_CHARS, shorten
from trainyard.manifest.schema import confine_storage_path
from trainyard.manifest.submission import run_job_name
from trainyard.storage import ObjectStore
from trainyard.sweeps.record import SweepState, TrialRow, load_sweep
from trainyard.sweeps.trials import trial_of
from trainyard.tenancy.config import (
    TrainyardConfig,
    UnknownTenantError,
    config_path,
    load_config,
)
from trainyard.tenancy.names import PLUGIN_MOUNT, dag_id_for_tenant, data_asset_uri, job_page_path

app = FastAPI(title="Trainyard", description="Training jobs of Trainyard's tenants.")
#: Where trainyard_plugin.py mounts the app in the API server.
MOUNT = PLUGIN_MOUNT
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


class ConfigCache:
    """The deployment config, parsed again only when its file's size or modification time
    changed: the jobs page asks every 3 s."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: tuple[Path, int, int] | None = None
        self._config: TrainyardConfig | None = None

    def get(self) -> TrainyardConfig:
        path = config_path()
        try:
            stat = path.stat()
        except OSError:
            return load_config(path)  # which names the problem
        seen = (path, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._config is None or seen != self._seen:
                self._config, self._seen = load_config(path), seen
            return self._config


deployment_config = ConfigCache()


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
    config = deployment_config.get()
    try:
        config.tenant(tenant)
    except UnknownTenantError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error
    if not may_use_runs(user, tenant, method):
        what = "see the jobs" if method == "GET" else "start jobs"
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"you may not {what} of tenant {tenant!r}")
    return config


def tenant_store(config: TrainyardConfig, tenant: str) -> ObjectStore:
    """The tenant's storage, opened with the keys of its Airflow connection as the tasks open
    it; 503 naming the fix when the connection is missing or incomplete."""
    from operators.hooks.storage import TenantStorageHook

    try:
        return TenantStorageHook(config.tenant(tenant)).get_store()
    except TrainyardFailure as failure:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"{failure.cause}; fix: {failure.fix}"
        ) from failure


@dataclass(frozen=True)
class AirflowRun:
    """A run of a tenant's DAG: its job id and name (from its conf), when it was queued, and
    the facts `job_view` reads."""

    run_id: str
    job_id: str
    name: str
    queued_at: datetime
    facts: RunFacts
    conf: dict[str, Any] = field(default_factory=dict)


def airflow_runs(tenant: str, run_id: str | None = None) -> dict[str, AirflowRun]:
    """The runs of the tenant's training DAG (only `run_id`, if given) by run id, with their
    learner's try and failed tasks, from Airflow's metadata DB."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import or_, select

    dag_id = dag_id_for_tenant(tenant)
    runs_query = select(DagRun).where(DagRun.dag_id == dag_id)
    tis_query = select(
        TaskInstance.run_id, TaskInstance.task_id, TaskInstance.try_number, TaskInstance.state
    ).where(
        TaskInstance.dag_id == dag_id,
        or_(TaskInstance.task_id == TaskId.LEARNER, TaskInstance.state == "failed"),
    )
    if run_id is not None:
        runs_query = runs_query.where(DagRun.run_id == run_id)
        tis_query = tis_query.where(TaskInstance.run_id == run_id)
    tries: dict[str, int] = {}
    failed: dict[str, list[str]] = {}
    with create_session() as session:
        for ti_run, task_id, try_number, ti_state in session.execute(tis_query):
            if task_id == TaskId.LEARNER:
                tries[ti_run] = int(try_number or 0)
            if ti_state == "failed":
                failed.setdefault(ti_run, []).append(task_id)
        runs = {}
        for run in session.scalars(runs_query):
            name = run_job_name(run.conf)
            runs[run.run_id] = AirflowRun(
                run_id=run.run_id,
                job_id=job_id_of_run(tenant, run.conf, run.run_id),
                name=name,
                queued_at=run.queued_at or run.run_after,
                facts=RunFacts(
                    state=str(run.state),
                    start_date=run.start_date,
                    end_date=run.end_date,
                    learner_try=tries.get(run.run_id, 0),
                    failed_tasks=tuple(failed.get(run.run_id, ())),
                ),
                conf=dict(run.conf or {}),
            )
    return runs


@dataclass(frozen=True)
class TenantJob:
    """A job of a tenant: its record (None before `validate` wrote it) and its run (None when
    Airflow has none), at least one of them."""

    tenant: str
    job_id: str
    record: JobRecord | None
    run: AirflowRun | None

    @property
    def dag_run_id(self) -> str:
        return self.run.run_id if self.run else self.record.dag_run_id if self.record else ""

    @property
    def created_at(self) -> datetime:
        """When the job was submitted: its run was queued (else its record was written)."""
        if self.run is not None:
            return self.run.queued_at
        assert self.record is not None  # a job has a run or a record
        return self.record.created_at

    @property
    def name(self) -> str:
        if self.record is not None:
            return str(self.record.manifest.get("name", ""))
        return self.run.name if self.run else ""

    def view(self, rows: list[dict[str, Any]]) -> JobView:
        """The job as every reader shows it (`trainyard.jobs.state.job_view`)."""
        return job_view(self.run.facts if self.run else None, self.record, rows)

    def record_or_queued(self) -> JobRecord:
        """The record, or for a run still queued before `validate` the one a cancel or pause
        writes (`JobRecord.of_queued_run`)."""
        if self.record is not None:
            return self.record
        conf = self.run.conf if self.run is not None else {}
        dag_id = dag_id_for_tenant(self.tenant)
        return JobRecord.of_queued_run(self.job_id, self.tenant, dag_id, self.dag_run_id, conf)


class JobSummary(BaseModel):
    """A job as the list shows it, read by `job_view`: state (and whether it is final),
    progress, attempt, failure class, model version; `page` is the job page's path."""

    job_id: str
    dag_run_id: str
    name: str
    page: str
    state: JobState
    terminal: bool
    created_at: datetime
    started_at: datetime | None = None
    attempt: int
    failure: str | None = None
    failure_class: str | None = None
    evaluation: dict[str, Any] | None = None
    model_version: int | None = None
    step: int | None = None
    total_steps: int | None = None
    progress: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    runtime_s: float | None = None
    max_runtime_s: float | None = None

    @classmethod
    def of(cls, job: TenantJob, view: JobView, mount: str) -> JobSummary:
        """`view`: `job.view(...)`; `mount`: where the pages are served."""
        record = job.record
        failure = view.failure
        return cls(
            job_id=job.job_id,
            dag_run_id=job.dag_run_id,
            name=job.name,
            page=job_page_path(job.tenant, job.job_id, mount),
            state=view.state,
            terminal=view.terminal,
            created_at=job.created_at,
            started_at=view.started_at,
            attempt=view.attempt,
            failure=f"{failure.failure_class}: {failure.message}" if failure else None,
            failure_class=failure.failure_class if failure else None,
            evaluation=record.evaluation if record else None,
            model_version=record.model_version if record else None,
            step=view.step,
            total_steps=view.total_steps,
            progress=view.progress,
            elapsed_s=view.elapsed_s,
            eta_s=view.eta_s,
            runtime_s=view.runtime_s,
            max_runtime_s=view.max_runtime_s,
        )


class JobList(BaseModel):
    tenant: str
    jobs: list[JobSummary]


def tenant_jobs(
    config: TrainyardConfig, tenant: str, mount: str, state: JobState | None = None
) -> JobList:
    """Every job of `tenant`, with a run or a record (only those in `state`, if given), newest
    first."""
    store = tenant_store(config, tenant)
    runs = airflow_runs(tenant)
    jobs = [
        TenantJob(tenant, record.job_id, record, runs.pop(record.dag_run_id, None))
        for record in list_records(store)
    ]
    known = {job.job_id for job in jobs}  # the earlier runs of a resumed job are its own
    jobs.extend(
        TenantJob(tenant, run.job_id, None, run) for run in runs.values() if run.job_id not in known
    )
    summaries = [
        JobSummary.of(job, job.view(read_metrics(store, job.job_id)), mount) for job in jobs
    ]
    summaries.sort(key=lambda summary: summary.created_at, reverse=True)
    return JobList(tenant=tenant, jobs=[s for s in summaries if state is None or s.state is state])


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
    """Everything the job page shows; `job_pages`: the page of each version's job."""

    tenant: str
    job: JobSummary
    failure_task: str | None
    failure_fix: str | None
    attempts: list[AttemptInfo]
    metrics: list[str]
    rows: list[dict[str, Any]]
    #: What the learners used, sampled by the runtime (`trainyard.runtime.utilisation`): a row
    #: per sample with `time`, `attempt`, `rank`, `interval_s`, `cpu_s`, `rss_bytes`, `gpus`.
    utilisation: list[dict[str, Any]]
    resumes: list[Resume]
    checkpoints: list[CommittedCheckpoint]
    evaluation: dict[str, Any] | None
    gate: ModelVersion | None
    versions: list[ModelVersion]
    job_pages: dict[str, str]
    production_version: int | None
    links: Links
    #: Whether the caller may pause, resume or cancel the job (the page shows its buttons).
    may_act: bool = False
    #: The page of the sweep the job is a trial of (None: no trial).
    sweep_page: str | None = None


def airflow_links(root: str, dag_id: str, run_id: str) -> Links:
    """Links into Airflow's UI, relative to where Airflow serves it (above this app's mount)."""
    root = root.removesuffix(MOUNT)
    run = f"{root}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"
    return Links(
        run=run, learner_logs=f"{run}/tasks/learner", trigger=f"{root}/dags/{quote(dag_id)}"
    )


def find_job(config: TrainyardConfig, tenant: str, job_id: str) -> tuple[ObjectStore, TenantJob]:
    """The tenant's storage and the job (its record, its run); 404 for a job that is not the
    tenant's or that neither Airflow nor the storage knows."""
    try:
        owner = tenant_of(job_id)
    except ValueError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job id: {error}") from error
    missing = HTTPException(
        status.HTTP_404_NOT_FOUND, f"tenant {tenant!r} has no job {shorten(job_id)}"
    )
    if owner != tenant:
        raise missing
    store = tenant_store(config, tenant)
    record = load_record(store, job_id)
    if record is not None:
        run = airflow_runs(tenant, record.dag_run_id).get(record.dag_run_id)
    else:  # queued before validate: find its run by the job id
        run = next((r for r in airflow_runs(tenant).values() if r.job_id == job_id), None)
        if run is None:
            raise missing
    return store, TenantJob(tenant, job_id, record, run)


def job_detail(config: TrainyardConfig, tenant: str, job_id: str, request: Request) -> JobDetail:
    """The job page's data (404 as `find_job` says)."""
    store, job = find_job(config, tenant, job_id)
    record = job.record
    root = request.scope.get("root_path", "")
    rows = read_metrics(store, job_id)
    view = job.view(rows)
    summary = JobSummary.of(job, view, root)
    first_steps: dict[int, float] = {}
    for row in rows:
        if isinstance(row.get("attempt"), int) and isinstance(row.get("step"), int | float):
            first_steps.setdefault(row["attempt"], float(row["step"]))
    registry = ModelRegistry(store, summary.name)
    versions = registry.versions() if record and summary.name else []
    production = registry.production_pointer() if versions else None
    dag_id = record.dag_id if record else dag_id_for_tenant(tenant)
    return JobDetail(
        tenant=tenant,
        job=summary,
        failure_task=view.failure.task if view.failure else None,
        failure_fix=view.failure.fix if view.failure else None,
        attempts=record.attempts if record else [],
        metrics=metric_names(rows),
        rows=rows,
        utilisation=read_utilisation(store, job_id),
        resumes=[
            Resume(attempt=attempt, step=step)
            for attempt, step in sorted(first_steps.items())
            if attempt > min(first_steps)
        ],
        checkpoints=CheckpointStore(store, JobLayout(job_id)).committed(),
        evaluation=record.evaluation if record else None,
        gate=next((v for v in versions if v.job_id == job_id), None),
        versions=versions,
        job_pages={v.job_id: job_page_path(tenant, v.job_id, root) for v in versions},
        production_version=production.version if production else None,
        links=airflow_links(root, dag_id, job.dag_run_id),
        sweep_page=sweep_page_path(tenant, trial[0], root) if (trial := trial_of(job_id)) else None,
    )


def sweep_page_path(tenant: str, sweep_id: str, root: str) -> str:
    return f"{root}/tenants/{quote(tenant)}/sweeps/{quote(sweep_id)}"


@app.get("/api/tenants/{tenant}/jobs/{job_id}")
def get_job(tenant: str, job_id: str, user: User, request: Request) -> JobDetail:
    """One job: metric rows of every attempt, attempts, checkpoints, evaluation, versions."""
    detail = job_detail(authorized_config(user, tenant), tenant, job_id, request)
    detail.may_act = may_use_runs(user, tenant, "POST")
    return detail


@app.get("/api/tenants/{tenant}/jobs")
def list_jobs(tenant: str, user: User, request: Request, state: JobState | None = None) -> JobList:
    """The tenant's jobs (those in `state`, if given): its runs and its job records."""
    root = request.scope.get("root_path", "")
    return tenant_jobs(authorized_config(user, tenant), tenant, root, state)


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


# --- Job control: pause, resume, cancel (trainyard.jobs.control, trainyard.jobs.state) --------


class JobAction(BaseModel):
    """What an action did: the job's state now."""

    job_id: str
    state: JobState


def controlled_job(job_id: str, user: Any) -> tuple[ObjectStore, TenantJob]:
    """The job a control action names, once `user` may start runs of its tenant (403 else;
    404 for no such job)."""
    try:
        tenant = tenant_of(job_id)
    except ValueError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job id: {error}") from error
    return find_job(authorized_config(user, tenant, "POST"), tenant, job_id)


def fail_airflow_run(record: JobRecord) -> None:
    """End the job's run as the REST API's PATCH does: its running tasks are killed (the
    learner's on_kill stops the learners gracefully) and the rest never start."""
    from airflow.api.common.mark_tasks import set_dag_run_state_to_failed
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session

    with create_session() as session:
        dag = DBDagBag().get_latest_version_of_dag(record.dag_id, session=session)
        if dag is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no DAG {record.dag_id}")
        set_dag_run_state_to_failed(dag=dag, run_id=record.dag_run_id, commit=True, session=session)


def trigger_airflow_run(dag_id: str, user: Any) -> Any:
    """A `trigger(run_id, conf)` that starts a run of `dag_id` in `user`'s name."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    def trigger(run_id: str, conf: dict[str, object]) -> None:
        with create_session() as session:
            trigger_dag(
                dag_id,
                triggered_by=DagRunTriggeredByType.UI,
                triggering_user_name=user.get_name(),
                run_id=run_id,
                conf=dict(conf),
                session=session,
            )

    return trigger


def conflict(error: ValueError) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, str(error))


@app.post("/api/jobs/{job_id}/pause")
def pause(job_id: str, user: User) -> JobAction:
    """Pause the job (`control.pause_job`); 409 with the reason when it is not queued or
    running. Allowed to whoever may start runs of the tenant's training DAG."""
    store, job = controlled_job(job_id, user)
    view = job.view(read_metrics(store, job_id))
    facts = job.run.facts if job.run else None
    try:
        record = pause_job(store, job.record_or_queued(), facts, view.attempt, fail_airflow_run)
    except ValueError as error:
        raise conflict(error) from error
    return JobAction(job_id=job_id, state=record.state)


@app.post("/api/jobs/{job_id}/resume")
def resume(job_id: str, user: User) -> JobAction:
    """Resume the job in a new run of its tenant's DAG (`control.resume_job`); 409 with the
    reason when it cannot be resumed."""
    store, job = controlled_job(job_id, user)
    if job.record is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"{job_id} has nothing to resume")
    facts = job.run.facts if job.run else None
    trigger = trigger_airflow_run(job.record.dag_id, user)
    try:
        record = resume_job(store, job.record, facts, trigger)
    except ValueError as error:
        raise conflict(error) from error
    return JobAction(job_id=job_id, state=record.state)


@app.post("/api/jobs/{job_id}/cancel")
def cancel(job_id: str, user: User) -> JobAction:
    """Cancel the job (`state.cancel_job`); 409 when it already ended."""
    store, job = controlled_job(job_id, user)
    facts = job.run.facts if job.run else None
    try:
        ended = cancel_job(store, job.record_or_queued(), facts, fail_airflow_run)
    except ValueError as error:
        raise conflict(error) from error
    return JobAction(job_id=job_id, state=ended.state)


class SweepTrial(BaseModel):
    """A trial on the sweep page: its row, its page, and its metric over steps."""

    trial: TrialRow
    page: str
    #: (step, value) of the sweep's metric, the first value reported at each step.
    series: list[tuple[float, float]]


class SweepDetail(BaseModel):
    """Everything the sweep page shows; the trials best first."""

    tenant: str
    sweep_id: str
    state: SweepState
    metric: str
    goal: str
    algorithm: str
    early_stopping: str
    trials_to_run: int
    parameters: list[str]
    best_job_id: str | None
    trials: list[SweepTrial]
    updated_at: datetime


def metric_series(rows: list[dict[str, Any]], metric: str) -> list[tuple[float, float]]:
    """The first value of `metric` at each step, in step order."""
    series: dict[float, float] = {}
    for row in rows:
        step, value = row.get("step"), row.get(metric)
        if isinstance(step, int | float) and isinstance(value, int | float):
            series.setdefault(float(step), float(value))
    return sorted(series.items())


@app.get("/api/tenants/{tenant}/sweeps/{sweep_id}")
def get_sweep(tenant: str, sweep_id: str, user: User, request: Request) -> SweepDetail:
    """One sweep: its trials best first, each with its metric over steps."""
    store = tenant_store(authorized_config(user, tenant), tenant)
    record = load_sweep(store, sweep_id) if tenant_of_or_none(sweep_id) == tenant else None
    if record is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"tenant {tenant!r} has no sweep {shorten(sweep_id)}"
        )
    root = request.scope.get("root_path", "")
    spec = record.spec
    return SweepDetail(
        tenant=tenant,
        sweep_id=sweep_id,
        state=record.state,
        metric=spec.metric,
        goal=spec.goal.value,
        algorithm=spec.algorithm.value,
        early_stopping=spec.early_stopping.rule.value,
        trials_to_run=spec.trials_to_run,
        parameters=list(spec.parameters),
        best_job_id=record.best_job_id,
        trials=[
            SweepTrial(
                trial=trial,
                page=job_page_path(tenant, trial.job_id, root),
                series=metric_series(read_metrics(store, trial.job_id), spec.metric),
            )
            for trial in record.ranked()
        ],
        updated_at=record.updated_at,
    )


# --- end of job control ------------------------------------------------------------------------


UPLOT = "vendor/uplot-1.6.32"
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="{static}/trainyard.css">{head}</head>
<body data-api="{root}/api" data-tenant="{tenant}"
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
    root = request.scope.get("root_path", "")
    listing = tenant_jobs(authorized_config(user, tenant), tenant, root, state)
    rows = "".join(
        f'<tr data-job="{html.escape(job.job_id)}" data-state="{job.state.value}">'
        + "".join(
            f"<td>{cell}</td>"
            for cell in (
                f'<a href="{html.escape(job.page)}">{html.escape(job.job_id)}</a>',
                f'<span class="state {job.state.value}">{job.state.value}</span>',
                html.escape(progress_text(job)),
                format_duration(job.elapsed_s) if job.elapsed_s is not None else "",
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
    find_job(authorized_config(user, tenant), tenant, job_id)  # 403/404 up front
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


@app.get("/tenants/{tenant}/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(tenant: str, sweep_id: str, user: User, request: Request) -> str:
    """One sweep's page; sweep.js draws it from the sweep API (and refreshes it while it
    runs): the trials table and the metric of every trial over steps."""
    authorized_config(user, tenant)  # 403/404 up front
    root = request.scope.get("root_path", "")
    body = f'{crumbs(root, tenant, sweep_id)}<main id="sweep"><p class="empty">Loading…</p></main>'
    return page(
        request,
        f"Trainyard sweep {sweep_id}",
        body,
        tenant=tenant,
        job=sweep_id,
        scripts=(f"{UPLOT}/uPlot.iife.min.js", "sweep.js"),
        styles=(f"{UPLOT}/uPlot.min.css",),
    )


# The fleet view (usage, metrics, admin page) lives in its own module, which uses this one.
from trainyard_fleet import router as fleet_router  # noqa: E402 (it imports this module)

app.include_router(fleet_router)
