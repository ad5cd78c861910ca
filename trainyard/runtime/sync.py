"""Upload checkpoints, metrics and the learner log while the user command runs.

Training never waits on storage: uploads happen in a background thread, storage errors are
retried with backoff and then logged, and whatever is still pending is uploaded by the final
sync once the command has exited. The same loop checks the hang watchdog.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tenacity import (
    before_sleep_log,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.fencing import Superseded
from trainyard.runtime.helpers import checkpoint_steps
from trainyard.runtime.utilisation import Sampler
from trainyard.runtime.watchdog import Watchdog
from trainyard.storage.base import ObjectNotFound, ObjectStore, StorageError

log = logging.getLogger(__name__)

SYNC_PERIOD_S = 1.0
#: How often a training leader looks whether a newer attempt superseded it (one small read).
FENCE_PERIOD_S = 5.0


def _transient(error: BaseException) -> bool:
    return isinstance(error, StorageError) and not isinstance(error, ObjectNotFound)


storage_retry = retry(
    retry=retry_if_exception(_transient),
    stop=stop_after_attempt(5),
    wait=wait_exponential(multiplier=0.5, max=8),
    before_sleep=before_sleep_log(log, logging.WARNING),
    reraise=True,
)
"""Retry a storage call on outages (not on missing keys): about 8 s before giving up."""


def annotated_rows(text: str, **annotations: Any) -> list[dict[str, Any]]:
    """The complete JSON-object lines of a metrics file, each updated with `annotations`."""
    rows = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # the user is still writing this row
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append({**row, **annotations})
    return rows


class Syncer:
    """Mirrors one learner's local outputs into storage, from a background thread."""

    def __init__(
        self,
        store: ObjectStore,
        log_file: Path,
        log_key: str,
        *,
        checkpoints: CheckpointStore | None = None,
        checkpoint_dir: Path | None = None,
        committed: set[int] | None = None,
        metrics_file: Path | None = None,
        metrics_key: str | None = None,
        annotations: dict[str, Any] | None = None,
        watchdog: Watchdog | None = None,
        sampler: Sampler | None = None,
        utilisation_key: str | None = None,
        on_superseded: Callable[[Superseded], None] | None = None,
    ) -> None:
        """Checkpoints and metrics are synced only when given (rank 0 of a training run);
        utilisation is sampled and uploaded to `utilisation_key` with a `sampler`. Once a
        newer attempt supersedes this one (seen at a commit or every `FENCE_PERIOD_S`), the
        loop stops uploading and calls `on_superseded`, and `finish` raises it."""
        self.store = store
        self.log_file, self.log_key = log_file, log_key
        self.checkpoints, self.checkpoint_dir = checkpoints, checkpoint_dir
        self.committed = set(committed or ())
        self.metrics_file, self.metrics_key = metrics_file, metrics_key
        self.annotations = annotations or {}
        self.watchdog = watchdog
        self.sampler, self.utilisation_key = sampler, utilisation_key
        self.on_superseded = on_superseded
        self.superseded: Superseded | None = None
        self._sampled = 0
        self._uploaded: dict[Path, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="trainyard-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        """Stop the background thread and upload what is pending; storage errors and
        Superseded propagate."""
        self._stop.set()
        self._thread.join()
        if self.superseded is not None:
            raise self.superseded
        self.sync()

    def _loop(self) -> None:
        next_fence_check = time.monotonic() + FENCE_PERIOD_S
        while not self._stop.wait(SYNC_PERIOD_S):
            try:
                self.sync()
                if self.checkpoints is not None and time.monotonic() >= next_fence_check:
                    next_fence_check = time.monotonic() + FENCE_PERIOD_S
                    self.checkpoints.ensure_current()
            except Superseded as superseded:
                self.superseded = superseded
                log.error("%s: stopping the command", superseded)
                if self.on_superseded is not None:
                    self.on_superseded(superseded)
                return
            except Exception:
                log.exception("background upload failed; trying again in the next round")
            if self.watchdog is not None:
                self.watchdog.check()

    def sync(self) -> None:
        """Commit new checkpoints, upload the metrics and the log: each is tried even when an
        earlier one fails (a checkpoint that cannot be committed or pruned must not keep the
        attempt's metric rows and log out of storage); the first failure is raised after."""
        uploads: list[Callable[[], None]] = [self._commit_new_checkpoints]
        if self.metrics_file is not None and self.metrics_key is not None:
            metrics_file, metrics_key = self.metrics_file, self.metrics_key
            uploads.append(
                lambda: self._upload_if_changed(metrics_file, metrics_key, self._metrics_bytes)
            )
        uploads.append(
            lambda: self._upload_if_changed(self.log_file, self.log_key, Path.read_bytes)
        )
        uploads.append(self._sample_utilisation)
        failures = []
        for upload in uploads:
            try:
                upload()
            except Superseded:
                raise  # nothing more of this attempt may be written
            except Exception as error:
                failures.append(error)
        if failures:
            raise failures[0]

    def _commit_new_checkpoints(self) -> None:
        if self.checkpoints is None or self.checkpoint_dir is None:
            return
        for step, path in sorted(checkpoint_steps(self.checkpoint_dir).items()):
            if step in self.committed:
                continue
            try:
                storage_retry(self.checkpoints.commit)(path, step)
            except (FileNotFoundError, ValueError) as error:
                # Removed by the user's own cleanup, or unusable: nothing to retry.
                log.warning("checkpoint step-%d not committed: %s", step, error)
            else:
                log.info("committed checkpoint step-%d", step)
            self.committed.add(step)

    def _sample_utilisation(self) -> None:
        """Take a sample when one is due; upload the rows when there are new ones."""
        if self.sampler is None or self.utilisation_key is None:
            return
        if self.sampler.due():
            self.sampler.sample()
        rows = self.sampler.rows
        if len(rows) > self._sampled:
            data = "".join(json.dumps({**row, **self.annotations}) + "\n" for row in rows)
            storage_retry(self.store.put_bytes)(self.utilisation_key, data.encode())
            self._sampled = len(rows)

    def _metrics_bytes(self, path: Path) -> bytes:
        rows = annotated_rows(path.read_text(encoding="utf-8"), **self.annotations)
        return "".join(json.dumps(row) + "\n" for row in rows).encode()

    def _upload_if_changed(self, path: Path, key: str, read: Callable[[Path], bytes]) -> None:
        """Upload a snapshot of a growing local file when its size or mtime changed."""
        if not path.exists():
            return
        stat = path.stat()
        version = (stat.st_size, stat.st_mtime_ns)
        if self._uploaded.get(path) == version:
            return
        storage_retry(self.store.put_bytes)(key, read(path))
        self._uploaded[path] = version
