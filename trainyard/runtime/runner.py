"""One learner run, start to finish: stage inputs, run the command, publish, report the outcome."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

from trainyard.failures import RESUME_FIX, PlatformFault, TrainyardFailure, UserError
from trainyard.jobs.checkpoints import CheckpointStore, publish_directory
from trainyard.jobs.fencing import Superseded
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.runtime.outcome import Outcome, out_of_disk
from trainyard.runtime.process import UserProcess
from trainyard.runtime.sandbox import Sandbox
from trainyard.runtime.settings import RuntimeSettings
from trainyard.runtime.sync import Syncer, annotated_rows, storage_retry
from trainyard.runtime.utilisation import Sampler, load_nvml
from trainyard.runtime.watchdog import Watchdog
from trainyard.runtime.workspace import Workspace
from trainyard.storage.base import ObjectStore, StorageError
from trainyard.storage.untrusted import UnsafeFile

log = logging.getLogger(__name__)


def _disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, is ENOSPC (a storage client may wrap
    the OSError of the file it was writing)."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


class Runner:
    def __init__(self, mode: RunMode, settings: RuntimeSettings, store: ObjectStore) -> None:
        self.mode = mode
        self.settings = settings
        self.store = store
        self.layout = JobLayout(settings.job_id)
        self.checkpoints = CheckpointStore(
            store, self.layout, keep=settings.checkpoint_keep, attempt=settings.attempt
        )
        self.workspace = Workspace.create(settings, mode)
        self.restored: int | None = None
        self.outcome = Outcome(exit_code=None, signal=None)

    @property
    def _leader(self) -> bool:
        return self.settings.rank == 0

    def run(self) -> Outcome:
        """Never raises for a classified failure: it becomes the outcome (and its file).

        Once everything is uploaded and the outcome written, the workspace goes: a machine
        running job after job must not fill its disk with their data and checkpoints.
        """
        try:
            self._stage()
            self._execute()
            if self.outcome.succeeded and self._leader:
                self._publish()
        except Superseded as superseded:
            # Another attempt owns the job now (`trainyard.jobs.fencing`): nothing more of
            # this one may be written, not even its outcome.
            log.error("%s: the command was stopped; exiting without writing", superseded)
            self.outcome = Outcome(exit_code=None, signal=None).with_failure(
                PlatformFault(str(superseded), fix=RESUME_FIX)
            )
            self.workspace.remove()
            return self.outcome
        except (TrainyardFailure, StorageError, OSError) as error:
            failure = self._failure_of(error)
            if self.outcome.succeeded:
                self.outcome = self.outcome.with_failure(failure)
            else:  # the command's own failure is what the user must see
                log.error("after the command failed: %s", failure.cause)
        self._report()
        self.workspace.remove()
        return self.outcome

    def _failure_of(self, error: Exception) -> TrainyardFailure:
        """The failure an error around the command stands for; raises back any other OSError."""
        if _disk_full(error):
            return out_of_disk(f"{error} (the workspace is {self.workspace.root})")
        if isinstance(error, TrainyardFailure):
            return error
        if isinstance(error, StorageError):
            return self._storage_fault(error)
        raise error

    def _storage_fault(self, error: StorageError) -> PlatformFault:
        return PlatformFault(
            f"storage {self.store.describe()} failed: {error}",
            fix=f"{RESUME_FIX}; if it keeps failing, check that the tenant's object storage is "
            "reachable",
        )

    def _download(self, prefix: str, into: Path) -> None:
        files = storage_retry(self.store.download_dir)(prefix, into)
        log.info("downloaded %d files from %s", len(files), prefix)

    def _stage(self) -> None:
        ws = self.workspace
        self._download(self.layout.code, ws.code)
        self._download(self.layout.data, ws.data)
        if self.mode is RunMode.EVALUATE:
            self._download(self.layout.results, ws.results)
            return
        if self._leader:  # from now on an older attempt's checkpoint writes are refused
            storage_retry(self.checkpoints.claim)()
        self.restored = storage_retry(self.checkpoints.restore)(ws.checkpoints)
        if self.restored is None:
            log.info("no committed checkpoint: the command starts from scratch")
        else:
            log.info("restored checkpoint step-%d into %s", self.restored, ws.checkpoints)

    def _execute(self) -> None:
        ws, settings = self.workspace, self.settings
        log.info("running %r in %s", settings.command, ws.code)
        sandbox = (
            Sandbox(
                settings.sandbox_network,
                ws.user_paths,
                settings.num_learners,
                readable=(ws.python_hook,),
                gpus=settings.gpu_devices,
            )
            if settings.sandbox_network
            else None
        )
        # Start the command before the sync thread: forking is only safe with a single thread.
        process = UserProcess(
            settings.command,
            ws.code,
            ws.user_env(settings, os.environ),
            ws.log_file,
            signal_report=ws.signal_report,
            sandbox=sandbox,
            stop_grace=settings.stop_grace,
        )
        training_leader = self.mode is RunMode.TRAIN and self._leader
        # Only the leader's progress is visible (other ranks need not write metrics), and a
        # rank hung in a collective stalls the leader too.
        watchdog = (
            Watchdog(
                process,
                ws.metrics_file,
                ws.checkpoints,
                window=settings.watchdog,
                startup=settings.watchdog_startup,
            )
            if training_leader and (settings.watchdog or settings.watchdog_startup)
            else None
        )
        syncer = Syncer(
            self.store,
            ws.log_file,
            self.layout.learner_log(self.mode, settings.attempt, settings.rank),
            checkpoints=self.checkpoints if training_leader else None,
            checkpoint_dir=ws.checkpoints,
            committed={self.restored} if self.restored is not None else set(),
            metrics_file=ws.metrics_file if training_leader else None,
            metrics_key=self.layout.metrics(settings.attempt),
            annotations={"attempt": settings.attempt, "rank": settings.rank},
            watchdog=watchdog,
            sampler=(
                Sampler(process.proc.pid, settings.gpu_devices, load_nvml(settings.gpu_devices))
                if self.mode is RunMode.TRAIN
                else None
            ),
            utilisation_key=self.layout.utilisation(settings.attempt, settings.rank),
            on_superseded=lambda superseded: process.stop(
                PlatformFault(str(superseded), fix=RESUME_FIX), grace=0
            ),
        )
        syncer.start()
        finished = process.wait()
        log.info("the command exited with code %d; uploading what is pending", finished.returncode)
        learner_log = self.layout.learner_log(self.mode, settings.attempt, settings.rank)
        self.outcome = Outcome.of(finished, learner_log=f"{self.store.describe()}/{learner_log}")
        syncer.finish()

    def _publish(self) -> None:
        if self.mode is RunMode.TRAIN:
            # The commit task takes only the results of the job's current attempt (fencing).
            self.checkpoints.ensure_current()
            storage_retry(self.store.delete_prefix)(self.layout.results)
            try:
                files = storage_retry(publish_directory)(
                    self.store,
                    self.workspace.results,
                    self.layout.results,
                    attempt=self.settings.attempt,
                )
            except UnsafeFile as error:
                raise UserError(
                    f"the results cannot be published: {error}",
                    fix="leave only regular files and directories in TRAINYARD_RESULT_DIR",
                ) from error
            log.info("published %d result files to %s", len(files), self.layout.results)
            return
        metrics: dict[str, object] = {}
        for row in annotated_rows(self.workspace.metrics_file.read_text(encoding="utf-8")):
            metrics.update(row)
        storage_retry(self.store.put_json)(self.layout.evaluation, {"metrics": metrics})
        log.info("evaluation metrics %s written to %s", json.dumps(metrics), self.layout.evaluation)

    def _report(self) -> None:
        """Record the outcome in storage (best effort: the exit code carries it too)."""
        record = self.outcome.to_json()
        key = self.layout.outcome(self.mode, self.settings.attempt, self.settings.rank)
        log.info("outcome: %s", json.dumps(record))
        try:
            storage_retry(self.store.put_json)(key, record)
        except StorageError:
            log.exception("could not write the outcome to %s", key)
