"""The fleet view of the Trainyard app (included by trainyard_web.py): what each tenant used and
what faults cost (`trainyard.jobs.accounting`, from the job records in each tenant's storage).

`GET /trainyard/api/usage[?tenant=&since=7d]`: the usage of one tenant (403 unless the caller
may see its jobs) or of every tenant the caller may see (an admin: all). Authorization is the
jobs API's (`trainyard_web.may_use_runs`); storage is opened as the jobs API opens it.

`GET /trainyard/metrics`: the fleet in Prometheus' text format, for the operator's monitoring
(docs/architecture.md says which metrics and why). A scrape needs no tenant's credentials: the
app reads every tenant's storage with the keys of its Airflow connection, as the pages do; the
labels hold tenants, states and failure classes only, never a job's name or user text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import trainyard_web as web
from fastapi import APIRouter, HTTPException, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from trainyard.jobs.accounting import JobAccount, store_accounts, usage_by_tenant, window_start
from trainyard.jobs.records import JobState
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
