"""The accounting of a job from its record, and a tenant's usage summed from its jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trainyard.jobs.accounting import account, usage_by_tenant
from trainyard.jobs.records import AttemptInfo, JobRecord, JobState

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RESOURCES = {"gpus": 2, "cpus": 4.0, "memory": 8 * 2**30, "learners": 2}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def faulted_job(job_id: str = "acme.digits.a", tenant: str = "acme") -> JobRecord:
    """Queued 30 s; attempt 1 checkpoints at 100 s and is SIGKILLed at 160 s; attempt 2 starts
    20 s later and succeeds after 200 s."""
    return JobRecord(
        job_id=job_id,
        tenant=tenant,
        dag_id=f"trainyard_{tenant}",
        dag_run_id=job_id,
        manifest={"resources": RESOURCES},
        state=JobState.SUCCEEDED,
        created_at=T0,
        attempts=[
            AttemptInfo(
                attempt=1,
                failure_class="platform_fault",
                started_at=at(30),
                ended_at=at(160),
                checkpoint_step=10,
                progressed=True,
                checkpoint_at=at(100),
            ),
            AttemptInfo(
                attempt=2,
                started_at=at(180),
                ended_at=at(380),
                checkpoint_step=20,
                progressed=True,
                checkpoint_at=at(370),
            ),
        ],
    )


def test_a_fault_after_a_checkpoint_loses_the_time_since_that_checkpoint() -> None:
    job = account(faulted_job())

    assert job.queue_s == 30
    assert [a.learner_s for a in job.attempts] == [130, 200]
    assert job.learner_s == sum(a.learner_s for a in job.attempts) == 330
    # Lost: the checkpoint (100 s) to the kill (160 s), plus the restart (160 s -> 180 s).
    assert job.attempts[0].productive_s == 70
    assert job.attempts[0].lost_s == 60
    assert job.attempts[0].restart_s == 20
    assert job.lost_s == 80
    assert job.lost_by_class == {"platform_fault": 80}
    assert job.restarts_s == [20]
    assert job.goodput == pytest.approx(270 / 330)
    assert job.goodput is not None
    assert 0 < job.goodput < 1
    # Held: requested per learner x learners x learner time.
    assert job.gpu_s == 4 * 330
    assert job.cpu_s == 8 * 330
    assert job.memory_gib_s == 16 * 330


def test_a_failed_attempt_that_committed_nothing_new_is_all_lost() -> None:
    record = faulted_job()
    record.attempts[0].progressed = False
    job = account(record)
    assert job.attempts[0].productive_s == 0
    assert job.lost_s == 130 + 20
    assert job.goodput == pytest.approx(200 / 330)


def test_a_job_without_attempts_has_no_goodput_and_a_rejected_one_requests_nothing() -> None:
    record = faulted_job()
    record.attempts, record.manifest = [], {}
    job = account(record)
    assert (job.learner_s, job.goodput, job.queue_s, job.gpu_s) == (0, None, None, 0)


def test_usage_sums_jobs_per_tenant_since_a_time() -> None:
    old = faulted_job("acme.digits.old")
    old.created_at = T0 - timedelta(days=30)
    failed = faulted_job("acme.digits.b")
    failed.state = JobState.FAILED
    records = [faulted_job(), failed, old, faulted_job("beta.digits.c", tenant="beta")]

    usage = usage_by_tenant(records, since=T0 - timedelta(days=7))

    assert list(usage) == ["acme", "beta"]
    acme = usage["acme"].as_json()
    assert acme["jobs"] == {"failed": 1, "succeeded": 1}
    assert acme["gpu_hours"] == pytest.approx(2 * 4 * 330 / 3600)
    assert acme["cpu_hours"] == pytest.approx(2 * 8 * 330 / 3600)
    assert acme["goodput"] == pytest.approx(270 / 330)
    assert acme["lost_hours_by_class"] == {"platform_fault": pytest.approx(160 / 3600)}
    assert acme["retries_by_class"] == {"platform_fault": 2}
    assert acme["mean_queue_s"] == 30
    assert len(usage_by_tenant(records)["acme"].queue_s) == 3
