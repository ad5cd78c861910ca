"""The fleet view of the Trainyard app (included by trainyard_web.py): what each tenant used and
what faults cost (`trainyard.jobs.accounting`, from the job records in each tenant's storage).

`GET /trainyard/api/usage[?tenant=&since=7d]`: the usage of one tenant (403 unless the caller
may see its jobs) or of every tenant the caller may see (an admin: all). Authorization is the
jobs API's (`trainyard_web.may_use_runs`); storage is opened as the jobs API opens it.

`GET /trainyard/` is the landing page of Airflow's "Trainyard jobs" entry: a user of one tenant
goes to its job list; a user of several, or an admin, sees each tenant's running, queued and
failed jobs, its quota use and goodput, and admins a link to `GET /trainyard/admin`, the fleet
page (admins only, 403 else; its data: `GET /trainyard/api/fleet?since=`): running and queued
jobs against the quotas (pool slots in use), goodput and lost time per tenant over a window,
the top failure causes with links to their jobs, drawn as charts by admin.js.

`GET /trainyard/metrics`: the fleet in Prometheus' text format, for the operator's monitoring
(docs/architecture.md says which metrics and why). A scrape needs no tenant's credentials: the
app reads every tenant's storage with the keys of its Airflow connection, as the pages do; the
labels hold tenants, states and failure classes only, never a job's name or user text.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import trainyard_web as web
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from pydantic import BaseModel

from trainyard.jobs.accounting import JobAccount, store_accounts, usage_by_tenant, window_start
from trainyard.jobs.progress import format_duration
from trainyard.jobs.records import JobState
from trainyard.tenancy.config import TrainyardConfig
from trainyard.tenancy.names import cpu_pool, gpu_pool, job_page_path

router = APIRouter()


def tenant_accounts(
    config: TrainyardConfig, tenants: list[str], since: datetime | None = None
) -> list[JobAccount]:
    """The accounting of the jobs of `tenants` created since `since`, from each one's storage."""
    return [
        job for tenant in tenants for job in store_accounts(web.tenant_store(config, tenant), since)
    ]


def window(since: str | None) -> datetime | None:
    """The start of the window `since` names; 422 naming `since` for a bad one."""
    try:
        return window_start(since, datetime.now(UTC))
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from error


@router.get("/api/usage")
def get_usage(user: web.User, tenant: str | None = None, since: str | None = None) -> list[Any]:
    """Each tenant's usage over the window `since` (all time without): one object a tenant."""
    if tenant is not None:
        config = web.authorized_config(user, tenant)
        tenants = [tenant]
    else:
        config = web.deployment_config.get()
        tenants = [name for name in config.tenant_names if web.may_use_runs(user, name)]
    start = window(since)
    found = usage_by_tenant(tenant_accounts(config, tenants, start))
    return [summary.as_json() for summary in found.values()]


#: Upper bounds (seconds) of the recovery time histogram's buckets: a restart within seconds
#: (a process on the same machine) to an hour (a pod waiting for a node).
RECOVERY_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class FleetCollector:
    """The fleet's metrics, read from Airflow's runs and every tenant's storage at each scrape
    (nothing is kept between scrapes: the records are the truth, across restarts)."""

    def __init__(self, config: TrainyardConfig) -> None:
        self.config = config

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "trainyard_jobs", "Jobs by state (job_view's reading)", labels=["tenant", "state"]
        )
        queued = GaugeMetricFamily(
            "trainyard_queue_length", "Jobs waiting to start", labels=["tenant"]
        )
        retries = CounterMetricFamily(
            "trainyard_retries",
            "Learner attempts that ended in a failure, by failure class",
            labels=["tenant", "failure_class"],
        )
        lost = CounterMetricFamily(
            "trainyard_lost_seconds",
            "Learner time lost to faults (since the last checkpoint, plus restarts)",
            labels=["tenant", "failure_class"],
        )
        recovery = HistogramMetricFamily(
            "trainyard_recovery_seconds",
            "Time from a failed attempt's end to the next attempt's start",
            labels=["tenant"],
        )
        goodput = GaugeMetricFamily(
            "trainyard_goodput_ratio",
            "Learner time that advanced the newest checkpoint / learner time held",
            labels=["tenant"],
        )
        held = CounterMetricFamily(
            "trainyard_gpu_seconds_held", "GPU-seconds requested x learner time", labels=["tenant"]
        )
        for tenant in self.config.tenant_names:
            states = Counter(job.state for job in web.tenant_jobs(self.config, tenant, "").jobs)
            for state in JobState:
                jobs.add_metric([tenant, state.value], states[state])
            queued.add_metric([tenant], states[JobState.QUEUED])
            accounts = tenant_accounts(self.config, [tenant])
            summary = usage_by_tenant(accounts).get(tenant)
            if summary is None:
                continue
            for failure_class, count in sorted(summary.retries_by_class.items()):
                retries.add_metric([tenant, failure_class], count)
            for failure_class, seconds in sorted(summary.lost_s_by_class.items()):
                lost.add_metric([tenant, failure_class], seconds)
            times = [seconds for job in accounts for seconds in job.restarts_s]
            buckets = [(str(le), sum(t <= le for t in times)) for le in RECOVERY_BUCKETS]
            recovery.add_metric([tenant], [*buckets, ("+Inf", len(times))], sum(times))
            if summary.goodput is not None:
                goodput.add_metric([tenant], summary.goodput)
            held.add_metric([tenant], sum(job.gpu_s for job in accounts))
        yield from (jobs, queued, retries, lost, recovery, goodput, held)


@router.get("/metrics")
def metrics() -> Response:
    """The fleet in Prometheus' text format; no credentials (see the module's docstring)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(web.deployment_config.get()))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def is_admin(user: Any) -> bool:
    """Whether the auth manager lets `user` change every DAG: the platform admin (a tenant's
    role holds nothing on the global DAGs resource, only its own tenant's DAGs). Not a GET
    without a DAG: FAB answers that for anyone who may list some DAG."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().is_authorized_dag(method="PUT", details=None, user=user)


def pool_slots(pools: list[str]) -> dict[str, tuple[int, int]]:
    """Slots in use (running and queued tasks) and in all of each of `pools` that exists."""
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    with create_session() as session:
        stats = Pool.slots_stats(session=session)
    return {
        name: (int(stats[name]["running"]) + int(stats[name]["queued"]), int(stats[name]["total"]))
        for name in pools
        if name in stats
    }


class PoolUse(BaseModel):
    pool: str
    used: int
    total: int


class FailureCause(BaseModel):
    """A failure class of the window's failed attempts, how often, and the jobs (their pages)."""

    failure_class: str
    attempts: int
    jobs: dict[str, str]


class TenantOverview(BaseModel):
    """One tenant at a glance: jobs now (all time) and its usage over the window."""

    tenant: str
    running: int
    queued: int
    failed: int
    max_running_jobs: int
    pools: list[PoolUse]
    goodput: float | None
    learner_hours: float
    gpu_hours: float
    lost_hours_by_class: dict[str, float]
    causes: list[FailureCause]


def overview(
    config: TrainyardConfig, tenant: str, since: datetime | None, mount: str
) -> TenantOverview:
    states = Counter(job.state for job in web.tenant_jobs(config, tenant, mount).jobs)
    accounts = tenant_accounts(config, [tenant], since)
    usage = usage_by_tenant(accounts).get(tenant)
    causes: dict[str, FailureCause] = {}
    for job in accounts:
        for attempt in job.attempts:
            if attempt.fault and attempt.failure_class:
                cause = causes.setdefault(
                    attempt.failure_class,
                    FailureCause(failure_class=attempt.failure_class, attempts=0, jobs={}),
                )
                cause.attempts += 1
                cause.jobs[job.job_id] = job_page_path(tenant, job.job_id, mount)
    pools = pool_slots([gpu_pool(tenant), cpu_pool(tenant)])
    return TenantOverview(
        tenant=tenant,
        running=states[JobState.RUNNING],
        queued=states[JobState.QUEUED],
        failed=states[JobState.FAILED],
        max_running_jobs=config.tenant(tenant).max_running_jobs,
        pools=[PoolUse(pool=name, used=used, total=total) for name, (used, total) in pools.items()],
        goodput=usage.goodput if usage else None,
        learner_hours=usage.learner_s / 3600 if usage else 0.0,
        gpu_hours=usage.gpu_hours if usage else 0.0,
        lost_hours_by_class={k: v / 3600 for k, v in sorted(usage.lost_s_by_class.items())}
        if usage
        else {},
        causes=sorted(causes.values(), key=lambda c: -c.attempts),
    )


def admin_config(user: Any) -> TrainyardConfig:
    """The deployment config, once `user` is an admin: else 403."""
    if not is_admin(user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the fleet page is for platform admins")
    return web.deployment_config.get()


@router.get("/api/fleet")
def get_fleet(user: web.User, request: Request, since: str | None = None) -> list[TenantOverview]:
    """Every tenant at a glance over the window `since` (all time without; admins only)."""
    config = admin_config(user)
    start, root = window(since), request.scope.get("root_path", "")
    return [overview(config, tenant, start, root) for tenant in config.tenant_names]


#: The admin page's windows: the `since` values its selector offers.
WINDOWS = ("1h", "1d", "7d", "30d")


@router.get("/admin", response_class=HTMLResponse)
def admin_page(user: web.User, request: Request) -> str:
    """The fleet page: charts and tables drawn by admin.js from `/api/fleet`."""
    admin_config(user)
    root = request.scope.get("root_path", "")
    options = "".join(
        f'<option value="{w}"{" selected" if w == "7d" else ""}>last {w}</option>' for w in WINDOWS
    )
    options += '<option value="">all time</option>'
    body = (
        f"{web.crumbs(root)}<h1>Trainyard fleet</h1>"
        f'<div class="toolbar"><label>Window <select id="window">{options}</select></label>'
        '<span id="updated"></span></div>'
        '<div class="cards" id="charts"></div>'
        '<h2>Tenants</h2><div id="tenants"></div>'
        '<h2>Top failure causes</h2><div id="causes"></div>'
    )
    return web.page(
        request,
        "Trainyard fleet",
        body,
        scripts=(f"{web.UPLOT}/uPlot.iife.min.js", "admin.js"),
        styles=(f"{web.UPLOT}/uPlot.min.css",),
    )


def _percent(value: float | None) -> str:
    return f"{value:.0%}" if value is not None else ""


@router.get("/", response_class=HTMLResponse, response_model=None)
def index(user: web.User, request: Request) -> str | RedirectResponse:
    """The landing page: a user of one tenant goes to its job list; a user of several, or an
    admin, sees each tenant's running, queued and failed jobs, quota use and goodput."""
    config = web.deployment_config.get()
    root = request.scope.get("root_path", "")
    names = [name for name in config.tenant_names if web.may_use_runs(user, name)]
    admin = is_admin(user)
    if len(names) == 1 and not admin:
        return RedirectResponse(f"{root}/tenants/{quote(names[0])}/jobs", status.HTTP_303_SEE_OTHER)
    start = window("7d")
    rows = []
    for name in names:
        seen = overview(config, name, start, root)
        quota = f"{seen.running} of {seen.max_running_jobs} jobs" + "".join(
            f", {p.used} of {p.total} {html.escape(p.pool)}" for p in seen.pools
        )
        cells = (
            f'<a href="{root}/tenants/{quote(name)}/jobs">{html.escape(name)}</a>',
            str(seen.running),
            str(seen.queued),
            str(seen.failed),
            quota,
            _percent(seen.goodput),
            format_duration(sum(seen.lost_hours_by_class.values()) * 3600),
        )
        rows.append(
            f'<tr data-tenant="{html.escape(name)}">'
            + "".join(f"<td>{cell}</td>" for cell in cells)
            + "</tr>"
        )
    header = "".join(
        f"<th>{h}</th>"
        for h in ("tenant", "running", "queued", "failed", "quota use", "goodput (7d)", "lost (7d)")
    )
    table = (
        f'<table id="tenants"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else "<p>You may not see any tenant's jobs.</p>"
    )
    link = f'<p><a id="fleet" href="{root}/admin">The fleet page</a></p>' if admin else ""
    return web.page(request, "Trainyard jobs", f"<h1>Trainyard jobs</h1>{link}{table}")
