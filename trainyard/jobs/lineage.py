"""What a model was made from: enough to reproduce it or explain why it differs."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, Field

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
