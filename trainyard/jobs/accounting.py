"""What a job used and what its faults cost, from its record alone; summed per tenant.

Everything is computed from the job record's attempts (`records.AttemptInfo`: start, end,
failure class, the newest committed checkpoint and when it was committed), so the accounting
survives every restart of Airflow and reads the same in `trainyard usage`, the plugin's API and
pages, and the metrics endpoint. The rules:

- learner time: the sum of the attempts' durations (start to end);
- held: the manifest's request times learner time (`gpus x learners`, `cpus x learners`,
  `memory x learners` seconds);
- productive time of an attempt: a successful attempt's whole duration; a failed attempt's
  time up to the checkpoint it committed (only when it advanced the newest checkpoint and that
  commit falls inside it), the rest of it is lost;
- lost to faults: each failed attempt's lost time plus its restart time (from its end to the
  next attempt's start), by failure class; a paused attempt is no fault (its learners commit a
  final checkpoint), and the time from a pause to the resume is held by nobody;
- queue time: from the record's creation (the job was accepted) to its first attempt's start;
- goodput: productive time / learner time (None before any attempt ended);
- used: the learners' utilisation rows (`runtime.utilisation`) summed: CPU seconds, memory
  GiB-seconds (resident bytes x interval), GPU-seconds (utilisation x interval).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from trainyard.jobs.control import PAUSED
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.limits import learner_seconds
from trainyard.jobs.records import AttemptInfo, JobRecord, JobState, list_records
from trainyard.manifest.schema import Resources
from trainyard.manifest.units import parse_duration
from trainyard.storage.base import ObjectStore


@dataclass(frozen=True)
class AttemptAccount:
    """One attempt's share: its learner time, split into productive and lost seconds, and the
    restart time after it (0 unless it failed and another attempt followed)."""

    attempt: int
    failure_class: str | None
    learner_s: float
    productive_s: float
    lost_s: float
    restart_s: float

    @property
    def fault(self) -> bool:
        """Whether the attempt ended in a failure (a pause is none: its time is its own)."""
        return _faulted(self.failure_class)


@dataclass(frozen=True)
class Requested:
    """What each learner asked for (the manifest's `resources`), times the learners."""

    gpus: float
    cpus: float
    memory_bytes: float

    @classmethod
    def of(cls, manifest: dict[str, object]) -> Requested:
        """The request of a stored manifest, its quantities as written ('2Gi', '500m') read by
        the manifest's own schema (a rejected job's empty manifest asks nothing)."""
        stored = manifest.get("resources")
        if not isinstance(stored, dict):
            return cls(0.0, 0.0, 0.0)
        resources = Resources.model_validate(stored)
        return cls(
            gpus=float(resources.gpus * resources.learners),
            cpus=resources.cpus * resources.learners,
            memory_bytes=float(resources.memory * resources.learners),
        )


@dataclass(frozen=True)
class Used:
    """What the learners used, summed from their utilisation rows (resource-seconds)."""

    cpu_s: float = 0.0
    memory_gib_s: float = 0.0
    gpu_s: float = 0.0

    @classmethod
    def of(cls, rows: Iterable[dict[str, Any]]) -> Used:
        cpu = memory = gpu = 0.0
        for row in rows:
            interval = float(row.get("interval_s") or 0.0)
            cpu += float(row.get("cpu_s") or 0.0)
            memory += float(row.get("rss_bytes") or 0) / 2**30 * interval
            gpu += sum(float(g.get("util") or 0.0) / 100 * interval for g in row.get("gpus", []))
        return cls(cpu_s=cpu, memory_gib_s=memory, gpu_s=gpu)


def read_utilisation(store: ObjectStore, job_id: str) -> list[dict[str, Any]]:
    """Every utilisation row of a job's learners (all attempts and ranks)."""
    layout = JobLayout(job_id)
    rows: list[dict[str, Any]] = []
    for info in store.list(layout.logs):
        if layout.is_utilisation(info.key):
            text = store.get_bytes(info.key).decode()
            rows.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return rows


@dataclass(frozen=True)
class JobAccount:
    """A job's accounting (seconds throughout; `gpu_s` etc. are resource-seconds held)."""

    job_id: str
    tenant: str
    state: JobState
    created_at: datetime
    queue_s: float | None
    attempts: tuple[AttemptAccount, ...]
    learner_s: float
    productive_s: float
    lost_s: float
    gpu_s: float
    cpu_s: float
    memory_gib_s: float
    lost_by_class: dict[str, float]
    used: Used = Used()

    @property
    def goodput(self) -> float | None:
        """The share of learner time held that advanced the newest checkpoint."""
        return self.productive_s / self.learner_s if self.learner_s > 0 else None

    @property
    def restarts_s(self) -> list[float]:
        """Each fault's restart time (fault -> next attempt's start): the recovery times."""
        return [a.restart_s for a in self.attempts if a.fault and a.restart_s > 0]


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


def _faulted(failure_class: str | None) -> bool:
    return failure_class is not None and failure_class != PAUSED


def _productive(attempt: AttemptInfo) -> float:
    """The seconds of `attempt` that advanced the newest checkpoint: all of one that succeeded
    or was paused (its learners committed a final checkpoint)."""
    if not _faulted(attempt.failure_class):
        return _seconds(attempt.started_at, attempt.ended_at)
    at = attempt.checkpoint_at
    if not attempt.progressed or at is None or not attempt.started_at <= at <= attempt.ended_at:
        return 0.0
    return _seconds(attempt.started_at, at)


def account(record: JobRecord, utilisation: Iterable[dict[str, Any]] = ()) -> JobAccount:
    """The accounting of one job, from its record and its learners' utilisation rows."""
    attempts = sorted(record.attempts, key=lambda a: a.attempt)
    accounts = []
    for index, attempt in enumerate(attempts):
        learner = _seconds(attempt.started_at, attempt.ended_at)
        productive = min(learner, _productive(attempt))
        following = attempts[index + 1] if index + 1 < len(attempts) else None
        restart = (
            _seconds(attempt.ended_at, following.started_at)
            if _faulted(attempt.failure_class) and following is not None
            else 0.0
        )
        accounts.append(
            AttemptAccount(
                attempt=attempt.attempt,
                failure_class=attempt.failure_class,
                learner_s=learner,
                productive_s=productive,
                lost_s=learner - productive,
                restart_s=restart,
            )
        )
    lost_by_class: dict[str, float] = defaultdict(float)
    for entry in accounts:
        if entry.fault and entry.failure_class:
            lost_by_class[entry.failure_class] += entry.lost_s + entry.restart_s
    learner_s = learner_seconds(attempts)
    requested = Requested.of(record.manifest)
    return JobAccount(
        job_id=record.job_id,
        tenant=record.tenant,
        state=record.state,
        created_at=record.created_at,
        queue_s=_seconds(record.created_at, attempts[0].started_at) if attempts else None,
        attempts=tuple(accounts),
        learner_s=learner_s,
        productive_s=sum(a.productive_s for a in accounts),
        lost_s=sum(lost_by_class.values()),
        gpu_s=requested.gpus * learner_s,
        cpu_s=requested.cpus * learner_s,
        memory_gib_s=requested.memory_bytes / 2**30 * learner_s,
        lost_by_class=dict(lost_by_class),
        used=Used.of(utilisation),
    )


@dataclass
class TenantUsage:
    """One tenant's jobs summed: by state, resource hours held, goodput, lost time by failure
    class, mean queue time. Goodput is the productive share of all its learner time."""

    tenant: str
    jobs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    learner_s: float = 0.0
    productive_s: float = 0.0
    gpu_hours: float = 0.0
    cpu_hours: float = 0.0
    gpu_hours_used: float = 0.0
    cpu_hours_used: float = 0.0
    lost_s_by_class: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    retries_by_class: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    queue_s: list[float] = field(default_factory=list)

    def add(self, job: JobAccount) -> None:
        self.jobs[job.state.value] += 1
        self.learner_s += job.learner_s
        self.productive_s += job.productive_s
        self.gpu_hours += job.gpu_s / 3600
        self.cpu_hours += job.cpu_s / 3600
        self.gpu_hours_used += job.used.gpu_s / 3600
        self.cpu_hours_used += job.used.cpu_s / 3600
        for failure_class, lost in job.lost_by_class.items():
            self.lost_s_by_class[failure_class] += lost
        for attempt in job.attempts:
            if attempt.fault and attempt.failure_class:
                self.retries_by_class[attempt.failure_class] += 1
        if job.queue_s is not None:
            self.queue_s.append(job.queue_s)

    @property
    def goodput(self) -> float | None:
        return self.productive_s / self.learner_s if self.learner_s > 0 else None

    @property
    def mean_queue_s(self) -> float | None:
        return sum(self.queue_s) / len(self.queue_s) if self.queue_s else None

    def as_json(self) -> dict[str, object]:
        """The summary as the API and `trainyard usage --json` give it."""
        return {
            "tenant": self.tenant,
            "jobs": dict(sorted(self.jobs.items())),
            "learner_hours": self.learner_s / 3600,
            "gpu_hours": self.gpu_hours,
            "cpu_hours": self.cpu_hours,
            "gpu_hours_used": self.gpu_hours_used,
            "cpu_hours_used": self.cpu_hours_used,
            "goodput": self.goodput,
            "lost_hours_by_class": {k: v / 3600 for k, v in sorted(self.lost_s_by_class.items())},
            "retries_by_class": dict(sorted(self.retries_by_class.items())),
            "mean_queue_s": self.mean_queue_s,
        }


def store_accounts(store: ObjectStore, since: datetime | None = None) -> list[JobAccount]:
    """The accounting of each job in `store` created at or after `since` (all with None)."""
    return [
        account(record, read_utilisation(store, record.job_id))
        for record in list_records(store)
        if since is None or record.created_at >= since
    ]


def usage_by_tenant(jobs: Iterable[JobAccount]) -> dict[str, TenantUsage]:
    """Each tenant's usage summed over `jobs`, by tenant name."""
    usage: dict[str, TenantUsage] = {}
    for job in jobs:
        usage.setdefault(job.tenant, TenantUsage(job.tenant)).add(job)
    return dict(sorted(usage.items()))


def window_start(since: str | None, now: datetime) -> datetime | None:
    """The start of the window `since` ('7d', '12h'; None: all time) names, ending `now`.

    Raises:
        ValueError: `since` is no duration (the message names `since` and the units).
    """
    if since is None:
        return None
    try:
        return now - timedelta(seconds=parse_duration(since))
    except ValueError as error:
        raise ValueError(f"since: {error}") from None
