"""The checkpoint commit protocol: a checkpoint counts only once its manifest exists.

Object stores have no multi-object transactions, so a commit is ordered: the files, then
`step-<N>/_MANIFEST.json` (size + sha256 of every file), then the `latest` pointer. A crash at
any point leaves the previous checkpoint or the new one committed. Restore trusts nothing: it
checks every file against the manifest and falls back to older commits when one is damaged.

The pointer also names the attempt that owns the job's checkpoints, and moves only by a
conditional write: an attempt superseded by a newer one (`trainyard.jobs.fencing`) can neither
move it nor prune.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from trainyard.jobs.fencing import Superseded
from trainyard.jobs.layout import MANIFEST, JobLayout, published_manifest
from trainyard.storage.base import ObjectNotFound, ObjectStore, check_key, join_key
from trainyard.storage.untrusted import open_regular, regular_files

log = logging.getLogger(__name__)

#: Files of one checkpoint upload in parallel: a large shard's network wait overlaps the next
#: file's read, hashing and request signing (hashlib and sockets release the GIL).
UPLOAD_THREADS = 4


class CorruptCheckpoint(Exception):
    """A committed checkpoint whose files do not match its manifest."""


def file_digest(path: Path) -> dict[str, Any]:
    """Size and sha256 of a file, read in chunks so large checkpoints do not fill memory."""
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return {"size": path.stat().st_size, "sha256": sha.hexdigest()}


class DigestingReader:
    """A file whose upload also hashes it: one read of the data serves both (the manifest
    then describes exactly the bytes uploaded, even if the file changes meanwhile)."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._start = file.tell()
        self._sha = hashlib.sha256()
        self._size = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._file.read(size)
        self._sha.update(data)
        self._size += len(data)
        return data

    def seek(self, offset: int, whence: int = 0, /) -> int:
        """Only a rewind to the start (an upload's retry), which starts the hash over."""
        if (offset, whence) != (0, 0):
            raise io.UnsupportedOperation("a DigestingReader can only rewind to its start")
        self._sha = hashlib.sha256()
        self._size = 0
        return self._file.seek(self._start)

    def digest(self) -> dict[str, Any]:
        """Size and sha256 of what was read since the last rewind, as `file_digest` gives."""
        return {"size": self._size, "sha256": self._sha.hexdigest()}


def publish_directory(
    store: ObjectStore, local_dir: Path, prefix: str, **marker: Any
) -> dict[str, dict[str, Any]]:
    """Upload every file of `local_dir` under `prefix`, then `prefix/_MANIFEST.json` last.

    The manifest (size and sha256 of each file, plus `marker`) is the commit: readers trust
    the directory only once it exists. Files upload `UPLOAD_THREADS` at a time, each hashed
    while it uploads. Returns the manifest's file table.
    """
    names = regular_files(local_dir)  # user code wrote them: symlinks are not followed
    if MANIFEST in names:
        raise ValueError(f"{local_dir}: {MANIFEST} is reserved for the commit marker")

    def upload(name: str) -> dict[str, Any]:
        with open_regular(local_dir, name) as file:
            reader = DigestingReader(file)
            store.put_stream(join_key(prefix, name), reader, os.fstat(file.fileno()).st_size)
        return reader.digest()

    # Leaving the pool waits for every upload; a failed one raises here, before the commit.
    with ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="upload") as pool:
        files = dict(zip(names, pool.map(upload, names), strict=True))
    store.put_json(published_manifest(prefix), {**marker, "files": files})
    return files


@dataclass(frozen=True)
class CommittedCheckpoint:
    """One committed checkpoint as its manifest describes it (`committed_at`: ISO time, None
    for checkpoints committed before manifests recorded it)."""

    step: int
    size: int
    files: int
    committed_at: str | None


class CheckpointStore:
    """The checkpoints of one job in its tenant's storage, as attempt `attempt` writes them
    (0, the default: a reader, or a writer outside any attempt)."""

    def __init__(
        self, store: ObjectStore, layout: JobLayout, keep: int = 3, *, attempt: int = 0
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.store = store
        self.layout = layout
        self.keep = keep
        self.attempt = attempt
        # Set by `claim`: the step the pointer named then (the history this attempt continues;
        # -1: none) and the steps this attempt committed since. Any other step beyond it was
        # written by a superseded attempt after the claim.
        self._claimed_step: int | None = None
        self._mine: set[int] = set()

    def _stored_steps(self) -> dict[int, bool]:
        """Every step with objects in storage, mapped to whether it is committed."""
        steps: dict[int, bool] = {}
        for info in self.store.list(self.layout.checkpoints):
            found = self.layout.checkpoint_file(info.key)
            if found is not None:
                step, rest = found
                steps[step] = steps.get(step, False) or rest == MANIFEST
        return steps

    def committed_steps(self) -> list[int]:
        return sorted(step for step, committed in self._stored_steps().items() if committed)

    def committed(self) -> list[CommittedCheckpoint]:
        """The committed checkpoints with their size and commit time, oldest first (one read
        of each manifest; one pruned meanwhile is left out)."""
        found = []
        for step in self.committed_steps():
            try:
                manifest = self.store.get_json(published_manifest(self.layout.checkpoint(step)))
            except ObjectNotFound:
                continue
            files = manifest.get("files", {})
            found.append(
                CommittedCheckpoint(
                    step=step,
                    size=sum(int(entry.get("size", 0)) for entry in files.values()),
                    files=len(files),
                    committed_at=manifest.get("committed_at"),
                )
            )
        return found

    def latest_step(self) -> int | None:
        """The step the pointer names (None: claimed, but nothing committed since); without a
        readable pointer, the newest committed step."""
        pointer = self._pointer()[0]
        if "step" in pointer:
            step = pointer["step"]
            return step if isinstance(step, int) else None
        committed = self.committed_steps()
        return committed[-1] if committed else None

    def _pointer(self) -> tuple[dict[str, Any], str | None]:
        """The pointer's content and its token for a conditional write (empty and None when
        there is none; an unreadable one reads as empty)."""
        try:
            data, token = self.store.read_with_token(self.layout.checkpoint_pointer)
        except ObjectNotFound:
            return {}, None
        try:
            pointer = json.loads(data)
        except ValueError:
            pointer = {}
        return (pointer if isinstance(pointer, dict) else {}), token

    def _check_owner(self, pointer: dict[str, Any]) -> None:
        owner = pointer.get("attempt", 0)
        if isinstance(owner, int) and owner > self.attempt:
            raise Superseded(self.layout.job_id, self.attempt, owner)

    def ensure_current(self) -> None:
        """Raise Superseded when a newer attempt owns the checkpoints."""
        self._check_owner(self._pointer()[0])

    def claim(self) -> None:
        """Make this attempt the owner of the checkpoints, keeping the step the pointer names:
        from now on an older attempt's commits are refused. Raises Superseded when a newer
        attempt already owns them."""
        step = self._move_pointer(None)
        self._claimed_step = -1 if step is None else step

    def _move_pointer(self, step: int | None) -> int | None:
        """Point `latest` at `step` (None: keep its step) as this attempt, by a conditional
        write that a newer owner refuses; return the step it names now."""
        while True:
            pointer, token = self._pointer()
            self._check_owner(pointer)
            named = pointer.get("step") if step is None else step
            wanted = {"step": named, "attempt": self.attempt}
            if pointer == wanted:
                return named
            data = json.dumps(wanted).encode()
            if self.store.write_if(self.layout.checkpoint_pointer, data, token):
                return named

    def commit(self, local_dir: Path, step: int) -> None:
        """Upload `local_dir` as checkpoint `step`, commit it, point `latest` at it, prune.

        Steps are immutable: committing an already committed step that is intact (every file
        matches its manifest) only moves the pointer; a damaged one is uploaded again first,
        so `latest` never names, and pruning never favours, a step that was not verified.
        Raises Superseded, before uploading anything, once a newer attempt owns the job.
        """
        self.ensure_current()
        prefix = self.layout.checkpoint(step)
        if step in self._stale_steps(self._stored_steps()):
            self._drop(step)  # a superseded attempt's: never part of this attempt's history
        if not self._intact(step):
            if not local_dir.is_dir():
                raise FileNotFoundError(f"checkpoint directory {local_dir} does not exist")
            if not regular_files(local_dir):
                raise ValueError(f"checkpoint directory {local_dir} is empty")
            publish_directory(
                self.store,
                local_dir,
                prefix,
                step=step,
                attempt=self.attempt,
                committed_at=datetime.now(UTC).isoformat(),
            )
        self._mine.add(step)
        self._move_pointer(step)
        self._prune(step)

    def _stale_steps(self, stored: Iterable[int]) -> set[int]:
        """Of the `stored` steps, those beyond the claimed one that this attempt did not
        commit: a superseded attempt wrote them after the claim (none before a claim)."""
        claimed = self._claimed_step
        if claimed is None:
            return set()
        return {step for step in stored if step > claimed and step not in self._mine}

    def _drop(self, step: int) -> None:
        """Delete a step, its manifest first: a crash mid-delete leaves an uncommitted leftover,
        never a committed checkpoint with missing files."""
        self.store.delete(published_manifest(self.layout.checkpoint(step)))
        self.store.delete_prefix(self.layout.checkpoint(step))

    def _intact(self, step: int) -> bool:
        """Whether `step` is committed and every file matches its manifest (size and sha256).

        A damaged step is uncommitted (its manifest goes first, as in a prune) so that a crash
        before the new upload leaves an uncommitted leftover, never a committed bad step.
        """
        manifest = published_manifest(self.layout.checkpoint(step))
        if not self.store.exists(manifest):
            return False
        with tempfile.TemporaryDirectory(prefix="trainyard-verify-") as scratch:
            try:
                self._fetch_verified(step, Path(scratch))
            except CorruptCheckpoint as bad:
                log.warning(
                    "committed checkpoint step %d is damaged (%s); uploading it again", step, bad
                )
            else:
                return True
        self._drop(step)
        return False

    def _prune(self, newest: int) -> None:
        """Drop committed checkpoints beyond `keep`, uncommitted leftovers older than `newest`,
        and what a superseded attempt wrote after this one's claim."""
        stored = self._stored_steps()
        committed = sorted((s for s, ok in stored.items() if ok), reverse=True)
        doomed = {step for step in committed[self.keep :] if step != newest}
        doomed |= {step for step, ok in stored.items() if not ok and step < newest}
        doomed |= self._stale_steps(stored) - {newest}
        for step in sorted(doomed):
            self._drop(step)

    def restore(self, into: Path) -> int | None:
        """Download the newest intact committed checkpoint into `into/step-<N>`; return N."""
        committed = self.committed_steps()
        latest = self.latest_step()
        # A step beyond it is a leftover (of a superseded attempt), not the job's history.
        committed = [s for s in committed if latest is not None and s <= latest]
        for step in reversed(committed):
            try:
                self._download(step, into)
            except CorruptCheckpoint as bad:
                log.warning("checkpoint step %d is unusable (%s); trying an older one", step, bad)
                continue
            return step
        return None

    def _download(self, step: int, into: Path) -> None:
        """Fetch and verify every file of `step` in a scratch dir, then move it into place."""
        scratch = into / f"tmp-restore-{step}"
        target = into / f"step-{step}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            self._fetch_verified(step, scratch)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)

    def _fetch_verified(self, step: int, scratch: Path) -> None:
        prefix = self.layout.checkpoint(step)
        try:
            files: dict[str, dict[str, Any]] = self.store.get_json(published_manifest(prefix))[
                "files"
            ]
            for relative, expected in files.items():
                path = scratch / check_key(relative)
                try:
                    self.store.get_file(join_key(prefix, relative), path)
                except ObjectNotFound:
                    raise CorruptCheckpoint(f"file {relative!r} is missing") from None
                actual = file_digest(path)
                if actual != {"size": expected["size"], "sha256": expected["sha256"]}:
                    raise CorruptCheckpoint(
                        f"file {relative!r} has size {actual['size']}, sha256 {actual['sha256']}; "
                        f"the manifest says {expected['size']}, {expected['sha256']}"
                    )
        except ObjectNotFound:
            raise CorruptCheckpoint("its manifest is gone") from None
        except (ValueError, KeyError, TypeError) as bad:
            raise CorruptCheckpoint(f"unreadable manifest: {bad!r}") from bad
