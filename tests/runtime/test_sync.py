"""The learner's uploads: one failing kind of upload does not hold the others back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.runtime import sync
from trainyard.storage.base import StorageError
from trainyard.storage.local import LocalStore

JOB_ID = "acme.sync.20260101-000000-abcd"


class NoDeletes(LocalStore):
    """Storage refusing deletes, as the S3 server did with a policy lacking DeleteObjects."""

    def delete(self, key: str) -> None:
        raise StorageError(f"delete {key!r}: AccessDenied")

    def delete_prefix(self, prefix: str) -> None:
        raise StorageError(f"delete {prefix!r}: AccessDenied")


def test_metrics_and_log_reach_storage_while_checkpoint_pruning_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_retry(call: Callable[..., object]) -> Callable[..., object]:
        return call

    monkeypatch.setattr(sync, "storage_retry", no_retry)
    store = NoDeletes(tmp_path / "storage")
    layout = JobLayout(JOB_ID)
    work = tmp_path / "work"
    for step in (10, 20):  # keep=1: committing the second prunes the first
        (work / "checkpoints" / f"step-{step}").mkdir(parents=True)
        (work / "checkpoints" / f"step-{step}" / "state.pt").write_bytes(b"x" * step)
    metrics, log_file = work / "metrics.jsonl", work / "learner.log"
    metrics.write_text(json.dumps({"step": 20, "loss": 0.5}) + "\n")
    log_file.write_text("training\n")
    syncer = sync.Syncer(
        store,
        log_file,
        layout.learner_log(RunMode.TRAIN, 2, 0),
        checkpoints=CheckpointStore(store, layout, keep=1),
        checkpoint_dir=work / "checkpoints",
        metrics_file=metrics,
        metrics_key=layout.metrics(2),
        annotations={"attempt": 2, "rank": 0},
    )

    with pytest.raises(StorageError, match="AccessDenied"):
        syncer.sync()

    uploaded = store.get_bytes(layout.metrics(2)).decode()
    assert json.loads(uploaded) == {"step": 20, "loss": 0.5, "attempt": 2, "rank": 0}
    assert store.get_bytes(layout.learner_log(RunMode.TRAIN, 2, 0)) == b"training\n"
