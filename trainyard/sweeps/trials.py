"""A sweep's trials as jobs: each trial is a job of the tenant with its own id
(`<sweep id>.t<N>`, N from 1), record, checkpoints, attempts and retries, whose manifest is the
sweep's with the values the search drew as its `hyperparameters` and no `sweep` section."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from trainyard.jobs.attempts import record_attempt_end
from trainyard.jobs.layout import parse_job_id
from trainyard.jobs.progress import read_metrics
from trainyard.jobs.records import JobState, update_record
from trainyard.manifest.schema import JobManifest
from trainyard.manifest.sweep import ParameterValue
from trainyard.storage.base import ObjectStore
from trainyard.sweeps.record import load_sweep
from trainyard.sweeps.search import SweepSearch

log = logging.getLogger(__name__)

#: Seconds between two looks at a trial's metric rows for its sweep's early-stopping rule.
EARLY_STOP_POLL_SECONDS = 5.0

_TRIAL_SUFFIX = re.compile(r"\.t([1-9][0-9]*)$")


def trial_job_id(sweep_id: str, number: int) -> str:
    """The job id of the search's trial `number` (Optuna's, from 0)."""
    parse_job_id(sweep_id)  # a sweep id is a job id
    if _TRIAL_SUFFIX.search(sweep_id):
        raise ValueError(f"{sweep_id} is a trial, not a sweep: a trial cannot sweep")
    return f"{sweep_id}.t{number + 1}"


def trial_of(job_id: str) -> tuple[str, int] | None:
    """The sweep id and the search's trial number of a trial's job id (None: not a trial)."""
    match = _TRIAL_SUFFIX.search(job_id)
    if match is None:
        return None
    return job_id[: match.start()], int(match[1]) - 1


def trial_manifest(sweep: JobManifest, values: dict[str, ParameterValue]) -> dict[str, Any]:
    """The manifest document (as a run's conf carries it) of a trial that drew `values`."""
    assert sweep.sweep is not None
    document = sweep.model_dump(mode="json", exclude={"sweep"}, exclude_none=True)
    document["hyperparameters"] = {**sweep.hyperparameters, **values}
    return document


def record_pruned(store: ObjectStore, job_id: str, attempt: int, started_at: datetime) -> None:
    """End a trial its sweep's early-stopping rule stopped: the attempt (which committed a
    final checkpoint) ends as `pruned`, and so does the job: no failure, no retry."""
    trial = trial_of(job_id)
    sweep = load_sweep(store, trial[0]) if trial else None
    rule = sweep.spec.early_stopping.rule.value if sweep else "unknown"
    record_attempt_end(
        store,
        job_id,
        attempt,
        started_at,
        failure_class=JobState.PRUNED.value,
        message=f"pruned: the sweep's early-stopping rule ({rule}) stopped the trial, whose "
        "metric trailed the other trials' at the same step",
        fix="none needed: the sweep goes on with its other trials",
    )
    update_record(store, job_id, state=JobState.PRUNED)


class EarlyStopWatch:
    """While a trial's learners train, hear its metric rows (as the runtime syncs them to
    storage) every `every` seconds; once the sweep's early-stopping rule says so, `stop` the
    learners (they commit a final checkpoint, as for a preemption) and set `pruned`. A look
    that fails (storage or the study's database down) is logged and tried again at the next:
    the rule can wait, the training goes on."""

    def __init__(
        self,
        search: SweepSearch,
        number: int,
        store: ObjectStore,
        job_id: str,
        stop: Callable[[], None],
        every: float = EARLY_STOP_POLL_SECONDS,
    ) -> None:
        self.search, self.number, self.store, self.job_id = search, number, store, job_id
        self.stop, self.every = stop, every
        self.pruned = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="early-stop", daemon=True)

    def __enter__(self) -> EarlyStopWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join(timeout=self.every + 30)

    def _watch(self) -> None:
        while not self._done.wait(self.every):
            try:
                stop = self.search.hear(self.number, read_metrics(self.store, self.job_id))
            except Exception:  # any failure of a look waits for the next one
                log.warning("early stopping of %s: this look failed", self.job_id, exc_info=True)
                continue
            if stop and not self._done.is_set():
                log.info("%s: the sweep's early-stopping rule stops it", self.job_id)
                self.pruned.set()
                self.stop()
                return
