"""What a model was made from: enough to reproduce it or explain why it differs."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from trainyard.jobs.records import JobRecord
from trainyard.manifest.schema import JobManifest
from trainyard.storage import ObjectStore


class Lineage(BaseModel):
    """The lineage record stored with every model version."""

    job_id: str
    airflow_run_id: str
    manifest: dict[str, Any]
    code_digest: str
    data_digest: str | None = None
    data_validation: dict[str, Any] | None = None
    framework: str
    image: str | None = None
    parent_checkpoint: int | None = None
    timings: dict[str, float] = Field(default_factory=dict)  # seconds per task


def digest_prefix(store: ObjectStore, prefix: str) -> str:
    """A content digest of every object under `prefix` (names and bytes), as 'sha256:<hex>'.

    Two snapshots with the same files have the same digest wherever they are stored.
    """
    base = prefix.rstrip("/") + "/"
    total = hashlib.sha256()
    for info in store.list(prefix):
        total.update(info.key.removeprefix(base).encode() + b"\0")
        total.update(hashlib.sha256(store.get_bytes(info.key)).digest())
    return f"sha256:{total.hexdigest()}"


def lineage_of(record: JobRecord, manifest: JobManifest) -> Lineage:
    """What the model was made from, as the job's earlier tasks recorded it."""
    training = sum((a.ended_at - a.started_at).total_seconds() for a in record.attempts)
    return Lineage(
        job_id=record.job_id,
        airflow_run_id=record.dag_run_id,
        manifest=record.manifest,
        code_digest=record.code_digest or "",
        data_digest=record.data_digest,
        data_validation=record.data_validation,
        framework=f"{manifest.framework.name.value} {manifest.framework.version}",
        image=manifest.framework.image,
        parent_checkpoint=record.final_step,
        timings={
            "training": round(training, 3),
            "total": round((datetime.now(UTC) - record.created_at).total_seconds(), 3),
        },
    )
