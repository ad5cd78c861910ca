"""A tenant's storage with one finished job, as the plugin's tests read it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from trainyard.jobs.checkpoints import CheckpointStore, publish_directory
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.lineage import Lineage
from trainyard.jobs.records import AttemptInfo, JobRecord, JobState, save_record
from trainyard.jobs.registry import ModelRegistry
from trainyard.storage.local import LocalStore

JOB_ID = "acme.digits.20261201-100000-ab12"


def stored_job(root: Path) -> LocalStore:
    """acme's storage with one finished job: two attempts (the first SIGKILLed), metric rows
    of both, a checkpoint, an evaluation and its model version (v1, promoted)."""
    store = LocalStore(root / "storage" / "acme")
    started = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    record = JobRecord(
        job_id=JOB_ID,
        tenant="acme",
        dag_id="trainyard_acme",
        dag_run_id=JOB_ID,
        manifest={"name": "digits"},
        state=JobState.SUCCEEDED,
        created_at=started,
        final_step=40,
        evaluation={"accuracy": 0.97},
        model_version=1,
        attempts=[
            AttemptInfo(
                attempt=1,
                failure_class="platform_fault",
                message="the command was killed by SIGKILL",
                fix="a retry resumes from the newest committed checkpoint",
                started_at=started,
                ended_at=started + timedelta(seconds=30),
            ),
            AttemptInfo(
                attempt=2,
                started_at=started + timedelta(seconds=40),
                ended_at=started + timedelta(seconds=70),
            ),
        ],
    )
    save_record(store, record)
    layout = JobLayout(JOB_ID)
    for attempt, steps in ((1, (10, 20, 30)), (2, (30, 40))):
        rows = [{"step": s, "loss": 1 / s, "total_steps": 40, "attempt": attempt} for s in steps]
        store.put_bytes(
            layout.metrics(attempt), "".join(json.dumps(r) + "\n" for r in rows).encode()
        )
    # What the second attempt's learner used: two samples, on one stand-in GPU.
    samples = [
        {
            "time": 1764583240.0 + 5 * n,
            "interval_s": 5.0,
            "cpu_s": 7.5,
            "rss_bytes": 2**30,
            "gpus": [{"minor": 0, "util": 80.0, "memory_bytes": 2**31}],
            "attempt": 2,
            "rank": 0,
        }
        for n in range(2)
    ]
    store.put_bytes(
        layout.utilisation(2, 0), "".join(json.dumps(r) + "\n" for r in samples).encode()
    )
    checkpoint = root / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "state.pt").write_bytes(b"x" * 100)
    CheckpointStore(store, layout).commit(checkpoint, 20)
    publish_directory(store, checkpoint, layout.results)
    registry = ModelRegistry(store, "digits")
    lineage = Lineage(
        job_id=JOB_ID,
        airflow_run_id=JOB_ID,
        manifest=record.manifest,
        code_digest="sha256:" + "c" * 64,
        framework="pytorch 2.13",
        parent_checkpoint=40,
    )
    version = registry.register(JOB_ID, layout.results, record.evaluation or {}, "", lineage)
    registry.decide(version, None)
    return store
