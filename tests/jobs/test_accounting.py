"""The accounting of a job from its record, and a tenant's usage summed from its jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.accounting import T0, faulted_job
from trainyard.jobs.accounting import account, usage_by_tenant, window_start
from trainyard.jobs.control import PAUSED
from trainyard.jobs.records import JobState


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

    since = T0 - timedelta(days=7)
    usage = usage_by_tenant(account(r) for r in records if r.created_at >= since)

    assert list(usage) == ["acme", "beta"]
    acme = usage["acme"].as_json()
    assert acme["jobs"] == {"failed": 1, "succeeded": 1}
    assert acme["gpu_hours"] == pytest.approx(2 * 4 * 330 / 3600)
    assert acme["cpu_hours"] == pytest.approx(2 * 8 * 330 / 3600)
    assert acme["goodput"] == pytest.approx(270 / 330)
    assert acme["lost_hours_by_class"] == {"platform_fault": pytest.approx(160 / 3600)}
    assert acme["retries_by_class"] == {"platform_fault": 2}
    assert acme["mean_queue_s"] == 30
    assert len(usage_by_tenant(map(account, records))["acme"].queue_s) == 3


def test_a_window_counts_back_from_now_and_a_bad_one_names_since() -> None:
    now = datetime(2026, 12, 8, tzinfo=UTC)
    assert window_start("7d", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert window_start(None, now) is None
    with pytest.raises(ValueError, match="since: invalid duration"):
        window_start("a week", now)


def test_a_pause_is_no_fault_and_the_time_until_the_resume_is_not_held() -> None:
    record = faulted_job()
    paused = record.attempts[0]
    paused.failure_class, paused.progressed, paused.checkpoint_at = PAUSED, True, None
    record.attempts[1].started_at = paused.ended_at + timedelta(hours=5)  # resumed 5 h later
    record.attempts[1].ended_at = record.attempts[1].started_at + timedelta(seconds=200)
    job = account(record)
    assert job.learner_s == 330
    assert job.lost_s == 0
    assert job.lost_by_class == {}
    assert job.restarts_s == []
    assert job.goodput == 1
    assert usage_by_tenant([job])["acme"].retries_by_class == {}
