"""A job record with one fault after a checkpoint, whose accounting is known by heart: the
accounting, `trainyard usage`, the plugin's usage API and the metrics endpoint are tested on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trainyard.jobs.records import AttemptInfo, JobRecord, JobState

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
#: Per learner, two learners: 4 GPUs, 8 cores, 16 GiB held in all.
RESOURCES = {"gpus": 2, "cpus": "4000m", "memory": "8Gi", "learners": 2}  # as stored


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def faulted_job(
    job_id: str = "acme.digits.a", tenant: str = "acme", created_at: datetime = T0
) -> JobRecord:
    """Queued 30 s; attempt 1 checkpoints at 100 s and is SIGKILLed at 160 s (a platform
    fault); attempt 2 starts 20 s later and succeeds after 200 s. Learner time 330 s, of it
    270 s productive; 80 s lost (60 s since the checkpoint, 20 s restart)."""

    def t(seconds: float) -> datetime:
        return created_at + timedelta(seconds=seconds)

    return JobRecord(
        job_id=job_id,
        tenant=tenant,
        dag_id=f"trainyard_{tenant}",
        dag_run_id=job_id,
        manifest={"resources": RESOURCES},
        state=JobState.SUCCEEDED,
        created_at=created_at,
        attempts=[
            AttemptInfo(
                attempt=1,
                failure_class="platform_fault",
                started_at=t(30),
                ended_at=t(160),
                checkpoint_step=10,
                progressed=True,
                checkpoint_at=t(100),
            ),
            AttemptInfo(
                attempt=2,
                started_at=t(180),
                ended_at=t(380),
                checkpoint_step=20,
                progressed=True,
                checkpoint_at=t(370),
            ),
        ],
    )
