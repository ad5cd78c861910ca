"""A job's run-time limits: `max_runtime` (learner time over all attempts) and `max_queued` (the
wait for the tenant's quota before the learners first start), each the manifest's or the
tenant's default, and the `deadline` failure each ends a job with.

`validate` writes the limits in force into the job record's manifest (`with_limits`), so the
learner task, `job_view` and a resume read one value; the learner task enforces both.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from trainyard.failures import Deadline
from trainyard.jobs.progress import format_duration
from trainyard.jobs.records import AttemptInfo
from trainyard.manifest.schema import JobManifest
from trainyard.tenancy.config import TenantConfig


def with_limits(manifest: JobManifest, tenant: TenantConfig) -> JobManifest:
    """The manifest with the tenant's default for each limit it leaves unset."""
    return manifest.model_copy(
        update={
            "max_runtime": manifest.max_runtime or tenant.default_max_runtime,
            "max_queued": manifest.max_queued or tenant.default_max_queued,
        }
    )


def learner_seconds(
    attempts: Iterable[AttemptInfo],
    running_since: datetime | None = None,
    now: datetime | None = None,
) -> float:
    """Learner time used: every recorded attempt's, plus the current one's since
    `running_since` (None: none runs). Paused and queued time lie between attempts."""
    used = sum(max((a.ended_at - a.started_at).total_seconds(), 0.0) for a in attempts)
    if running_since is not None and now is not None:
        used += max((now - running_since).total_seconds(), 0.0)
    return used


def runtime_exceeded(job_id: str, limit: float, used: float) -> Deadline:
    """The failure of a job whose learners used up `max_runtime`."""
    return Deadline(
        f"max_runtime ran out: the learners used {format_duration(used)} of the "
        f"{format_duration(limit)} allowed; training stopped with a final checkpoint",
        "raise max_runtime if the job needs longer (the tenant's maximum applies), or resume it "
        f"with a new limit: trainyard resume {job_id} --max-runtime DURATION",
    )


def queued_too_long(limit: float, waited: float) -> Deadline:
    """The failure of a job that waited longer than `max_queued` for its tenant's quota."""
    return Deadline(
        f"max_queued ran out: the job waited {format_duration(waited)} for the tenant's quota "
        f"(at most {format_duration(limit)}) and never started",
        "submit it when fewer of the tenant's jobs run, ask for fewer resources, raise "
        "max_queued, or ask the platform team for a larger quota (max_running_jobs, gpu_quota, "
        "cpu_quota)",
    )
