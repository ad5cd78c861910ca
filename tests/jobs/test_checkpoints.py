"""The checkpoint commit protocol on a real LocalStore directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from trainyard.jobs.checkpoints import CheckpointStore, file_digest
from trainyard.jobs.fencing import Superseded
from trainyard.jobs.layout import MANIFEST, JobLayout
from trainyard.storage.base import Rewindable, StorageError
from trainyard.storage.local import LocalStore

LAYOUT = JobLayout("acme.demo.1")
CKPTS = "jobs/acme.demo.1/checkpoints"


class RecordingStore(LocalStore):
    """A LocalStore that remembers the order of its writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: list[str] = []

    def put_bytes(self, key: str, data: bytes) -> None:
        self.writes.append(key)
        super().put_bytes(key, data)

    def put_stream(self, key: str, stream: Rewindable, size: int) -> None:
        self.writes.append(key)
        super().put_stream(key, stream, size)

    def write_if(self, key: str, data: bytes, expected_token: str | None) -> bool:
        self.writes.append(key)
        return super().write_if(key, data, expected_token)


def make_step(root: Path, step: int) -> Path:
    directory = root / f"step-{step}"
    (directory / "nested").mkdir(parents=True)
    (directory / "model.bin").write_bytes(bytes([step % 256]) * (1000 + step))
    (directory / "nested" / "state.json").write_text(json.dumps({"step": step}))
    return directory


@pytest.fixture
def store(tmp_path: Path) -> RecordingStore:
    return RecordingStore(tmp_path / "storage")


@pytest.fixture
def local(tmp_path: Path) -> Path:
    return tmp_path / "local"


def test_commit_restore_round_trip(store: RecordingStore, local: Path, tmp_path: Path) -> None:
    checkpoints = CheckpointStore(store, LAYOUT)
    checkpoints.commit(make_step(local, 7), 7)

    assert checkpoints.committed_steps() == [7]
    assert checkpoints.latest_step() == 7
    manifest = store.get_json(f"{CKPTS}/step-000000007/{MANIFEST}")
    assert manifest["step"] == 7
    assert set(manifest["files"]) == {"model.bin", "nested/state.json"}
    assert manifest["files"]["model.bin"]["size"] == 1007

    into = tmp_path / "restored"
    assert checkpoints.restore(into) == 7
    assert (into / "step-7" / "model.bin").read_bytes() == (local / "step-7/model.bin").read_bytes()
    assert json.loads((into / "step-7/nested/state.json").read_text()) == {"step": 7}
    assert sorted(p.name for p in into.iterdir()) == ["step-7"]


def test_pointer_is_written_after_files_and_manifest(store: RecordingStore, local: Path) -> None:
    CheckpointStore(store, LAYOUT).commit(make_step(local, 3), 3)

    prefix = f"{CKPTS}/step-000000003"
    files = {f"{prefix}/model.bin", f"{prefix}/nested/state.json"}
    assert set(store.writes[:2]) == files  # uploaded in parallel: in any order
    assert store.writes[2:] == [f"{prefix}/{MANIFEST}", f"{CKPTS}/latest"]
    assert store.get_json(f"{CKPTS}/latest") == {"step": 3, "attempt": 0}


def test_corrupt_newest_falls_back_and_logs(
    store: RecordingStore, local: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoints = CheckpointStore(store, LAYOUT)
    for step in (1, 2):
        checkpoints.commit(make_step(local, step), step)
    store.put_bytes(f"{CKPTS}/step-000000002/model.bin", b"bit rot")

    into = tmp_path / "restored"
    with caplog.at_level(logging.WARNING, logger="trainyard.jobs.checkpoints"):
        assert checkpoints.restore(into) == 1
    assert "step 2" in caplog.text
    assert "model.bin" in caplog.text
    assert sorted(p.name for p in into.iterdir()) == ["step-1"]


def test_missing_file_falls_back(store: RecordingStore, local: Path, tmp_path: Path) -> None:
    checkpoints = CheckpointStore(store, LAYOUT)
    for step in (1, 2):
        checkpoints.commit(make_step(local, step), step)
    store.delete(f"{CKPTS}/step-000000002/nested/state.json")

    assert checkpoints.restore(tmp_path / "restored") == 1


def test_checkpoint_without_manifest_is_ignored(
    store: RecordingStore, local: Path, tmp_path: Path
) -> None:
    checkpoints = CheckpointStore(store, LAYOUT)
    checkpoints.commit(make_step(local, 1), 1)
    # A crash after uploading step 5's files but before its manifest.
    store.upload_dir(make_step(local, 5), f"{CKPTS}/step-000000005")

    assert checkpoints.committed_steps() == [1]
    assert checkpoints.latest_step() == 1
    assert checkpoints.restore(tmp_path / "restored") == 1

    # The next commit cleans the leftover up.
    checkpoints.commit(make_step(local, 6), 6)
    assert not list(store.list(f"{CKPTS}/step-000000005"))


def test_manifest_without_pointer_counts_as_committed(store: RecordingStore, local: Path) -> None:
    checkpoints = CheckpointStore(store, LAYOUT)
    checkpoints.commit(make_step(local, 4), 4)
    store.delete(f"{CKPTS}/latest")

    assert checkpoints.latest_step() == 4


def test_retention_keeps_the_newest(store: RecordingStore, local: Path) -> None:
    checkpoints = CheckpointStore(store, LAYOUT, keep=2)
    for step in (10, 20, 30, 40):
        checkpoints.commit(make_step(local, step), step)

    assert checkpoints.committed_steps() == [30, 40]
    assert checkpoints.latest_step() == 40
    assert not list(store.list(f"{CKPTS}/step-000000010"))
    assert not list(store.list(f"{CKPTS}/step-000000020"))


def test_commit_is_idempotent(store: RecordingStore, local: Path) -> None:
    checkpoints = CheckpointStore(store, LAYOUT)
    directory = make_step(local, 2)
    checkpoints.commit(directory, 2)
    store.writes.clear()

    checkpoints.commit(directory, 2)

    assert store.writes == []  # nothing uploaded, and the pointer already names it
    assert checkpoints.committed_steps() == [2]


def test_a_superseded_attempt_can_neither_commit_nor_prune(
    store: RecordingStore, local: Path, tmp_path: Path
) -> None:
    first = CheckpointStore(store, LAYOUT, keep=1, attempt=1)
    first.claim()
    first.commit(make_step(local, 10), 10)
    second = CheckpointStore(store, LAYOUT, keep=1, attempt=2)
    second.claim()  # the retry starts while the first attempt still runs
    store.writes.clear()

    with pytest.raises(Superseded, match=r"attempt 1 of acme\.demo\.1 is superseded by attempt 2"):
        first.commit(make_step(local, 20), 20)

    assert store.writes == []  # refused before anything was uploaded
    assert store.get_json(f"{CKPTS}/latest") == {"step": 10, "attempt": 2}
    with pytest.raises(Superseded):
        first.ensure_current()
    with pytest.raises(Superseded):
        first.claim()
    second.commit(make_step(tmp_path / "second", 20), 20)
    assert checkpoints_of(store) == {20: 2}


def checkpoints_of(store: RecordingStore) -> dict[int, int]:
    """Each committed step and the attempt that committed it."""
    return {
        step: store.get_json(f"{CKPTS}/step-{step:09d}/{MANIFEST}")["attempt"]
        for step in CheckpointStore(store, LAYOUT).committed_steps()
    }


def test_a_pointer_move_racing_a_newer_claim_is_refused(
    store: RecordingStore, local: Path, tmp_path: Path
) -> None:
    """The superseded attempt's check passes, then the newer attempt claims before its pointer
    write: the conditional write fails and the pointer keeps the newer owner."""
    first = CheckpointStore(store, LAYOUT, attempt=1)
    first.claim()
    second = CheckpointStore(store, LAYOUT, attempt=2)
    real_write_if = store.write_if

    def claim_first(key: str, data: bytes, expected_token: str | None) -> bool:
        if key.endswith("/latest") and not hasattr(store, "claimed"):
            store.claimed = True  # type: ignore[attr-defined]
            second.claim()
        return real_write_if(key, data, expected_token)

    store.write_if = claim_first  # type: ignore[method-assign]
    with pytest.raises(Superseded):
        first.commit(make_step(local, 5), 5)

    assert store.get_json(f"{CKPTS}/latest") == {"step": None, "attempt": 2}
    assert CheckpointStore(store, LAYOUT).restore(tmp_path / "restored") is None


def test_what_a_superseded_attempt_left_is_never_the_newer_ones_history(
    store: RecordingStore, local: Path, tmp_path: Path
) -> None:
    """Steps the old attempt committed after the claim (its pointer write refused) are neither
    restored nor reused: the newer attempt uploads its own and prunes them."""
    first = CheckpointStore(store, LAYOUT, keep=3, attempt=1)
    first.claim()
    first.commit(make_step(local, 10), 10)
    second = CheckpointStore(store, LAYOUT, keep=3, attempt=2)
    second.claim()
    first.ensure_current = lambda: None  # type: ignore[method-assign]  # raced past it
    for step in (20, 30):
        with pytest.raises(Superseded):  # at the pointer: after its files and manifest
            first.commit(make_step(local, step), step)
    assert checkpoints_of(store) == {10: 1, 20: 1, 30: 1}
    assert CheckpointStore(store, LAYOUT).restore(tmp_path / "restored") == 10

    second.commit(make_step(tmp_path / "second", 20), 20)

    assert checkpoints_of(store) == {10: 1, 20: 2}
    assert CheckpointStore(store, LAYOUT).latest_step() == 20


def test_a_damaged_committed_step_is_uploaded_again(
    store: RecordingStore, local: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoints = CheckpointStore(store, LAYOUT, keep=1)
    directory = make_step(local, 2)
    checkpoints.commit(directory, 2)
    store.put_bytes(f"{CKPTS}/step-000000002/model.bin", b"bit rot")

    with caplog.at_level(logging.WARNING, logger="trainyard.jobs.checkpoints"):
        checkpoints.commit(directory, 2)

    assert "step 2 is damaged" in caplog.text
    assert checkpoints.latest_step() == 2
    assert checkpoints.restore(tmp_path / "restored") == 2
    assert (tmp_path / "restored/step-2/model.bin").read_bytes() == (
        directory / "model.bin"
    ).read_bytes()


def test_a_damaged_step_without_its_files_is_neither_pointed_at_nor_kept(
    store: RecordingStore, local: Path, tmp_path: Path
) -> None:
    checkpoints = CheckpointStore(store, LAYOUT, keep=2)
    checkpoints.commit(make_step(local, 1), 1)
    checkpoints.commit(make_step(local, 2), 2)
    store.put_json(f"{CKPTS}/latest", {"step": 1})  # as if step 2's pointer move was lost
    store.put_bytes(f"{CKPTS}/step-000000002/model.bin", b"bit rot")

    with pytest.raises(FileNotFoundError):
        checkpoints.commit(tmp_path / "gone", 2)

    assert checkpoints.latest_step() == 1
    assert checkpoints.committed_steps() == [1]


def test_nothing_committed_restores_nothing(store: RecordingStore, tmp_path: Path) -> None:
    checkpoints = CheckpointStore(store, LAYOUT)
    assert checkpoints.latest_step() is None
    assert checkpoints.restore(tmp_path / "restored") is None


def test_empty_or_missing_directory_is_not_committed(
    store: RecordingStore, local: Path, tmp_path: Path
) -> None:
    checkpoints = CheckpointStore(store, LAYOUT)
    (local / "step-1").mkdir(parents=True)

    with pytest.raises(ValueError, match="empty"):
        checkpoints.commit(local / "step-1", 1)
    with pytest.raises(FileNotFoundError):
        checkpoints.commit(local / "step-2", 2)
    assert checkpoints.committed_steps() == []


def test_manifest_describes_the_files_as_uploaded(store: RecordingStore, local: Path) -> None:
    # The digests are taken while uploading (one read of each file), not in a pass before.
    CheckpointStore(store, LAYOUT).commit(make_step(local, 5), 5)

    files = store.get_json(f"{CKPTS}/step-000000005/{MANIFEST}")["files"]
    assert files == {
        name: file_digest(local / "step-5" / name) for name in ("model.bin", "nested/state.json")
    }


class FailingStore(RecordingStore):
    """Storage that refuses one file, as an outage in the middle of a commit would."""

    def put_stream(self, key: str, stream: Rewindable, size: int) -> None:
        if key.endswith("/model.bin"):
            raise StorageError(f"cannot upload {key!r}: connection refused")
        super().put_stream(key, stream, size)


def test_a_failed_upload_commits_nothing(tmp_path: Path, local: Path) -> None:
    store = FailingStore(tmp_path / "storage")
    checkpoints = CheckpointStore(store, LAYOUT)

    with pytest.raises(StorageError, match="connection refused"):
        checkpoints.commit(make_step(local, 4), 4)

    assert checkpoints.committed_steps() == []
    assert not any(key.endswith((MANIFEST, "/latest")) for key in store.writes)
