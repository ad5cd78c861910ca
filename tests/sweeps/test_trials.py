"""A sweep's trials are jobs: their ids, and manifests that run as any job's do."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.manifest.test_sweep import sweep_manifest
from trainyard.jobs.layout import JobLayout, parse_job_id
from trainyard.jobs.records import JobRecord, JobState, load_record, save_record
from trainyard.jobs.state import TERMINAL_STATES, job_state
from trainyard.manifest.schema import parse_manifest
from trainyard.manifest.sweep import ParameterValue
from trainyard.storage.local import LocalStore
from trainyard.sweeps.record import SweepRecord, write_sweep
from trainyard.sweeps.search import SweepSearch, TrialEnd
from trainyard.sweeps.trials import (
    EarlyStopWatch,
    record_pruned,
    trial_job_id,
    trial_manifest,
    trial_of,
)

SWEEP_ID = "acme.digits-mlp.20261207-101500-ab12"


def test_a_trial_id_is_a_job_id_under_its_sweep() -> None:
    trial = trial_job_id(SWEEP_ID, 0)
    assert trial == f"{SWEEP_ID}.t1"
    assert parse_job_id(trial).tenant == "acme"
    assert trial_of(trial) == (SWEEP_ID, 0)
    assert trial_of(SWEEP_ID) is None
    assert JobLayout(trial).root != JobLayout(SWEEP_ID).root
    with pytest.raises(ValueError, match="a trial cannot sweep"):
        trial_job_id(trial, 1)
    with pytest.raises(ValueError, match="not a Trainyard job id"):
        trial_job_id("acme.x", 0)


def test_a_trials_manifest_is_the_sweeps_with_its_values_and_no_sweep() -> None:
    document = sweep_manifest()
    document["hyperparameters"] = {"epochs": 8}
    document["command"] += " --epochs {epochs}"
    sweep = parse_manifest(document)
    values: dict[str, ParameterValue] = {
        "lr": 0.01,
        "dropout": 0.25,
        "hidden": 32,
        "optimizer": "adam",
    }

    trial = parse_manifest(trial_manifest(sweep, values))

    assert trial.sweep is None
    assert trial.hyperparameters == {"epochs": 8, **values}
    assert trial.filled(trial.command) == (
        "python train.py --lr 0.01 --dropout 0.25 --hidden 32 --opt adam --epochs 8"
    )
    assert (trial.name, trial.resources, trial.evaluation) == (
        sweep.name,
        sweep.resources,
        sweep.evaluation,
    )


def sweep_record(document: dict[str, Any]) -> SweepRecord:
    return SweepRecord(
        sweep_id=SWEEP_ID,
        tenant="acme",
        dag_id="trainyard_acme.sweeps",
        dag_run_id=SWEEP_ID,
        manifest=parse_manifest(document).model_dump(mode="json"),
    )


def test_the_watch_stops_a_trailing_trial_and_its_record_says_pruned(tmp_path: Path) -> None:
    document = sweep_manifest(early_stopping={"rule": "asha", "min_steps": 1}, seed=1)
    spec = parse_manifest(document).sweep
    assert spec is not None
    search = SweepSearch(spec, SWEEP_ID, f"sqlite:///{tmp_path / 'study.db'}")
    for final in (0.3, 0.2, 0.1):
        trial = search.draw()
        for step in range(1, 9):
            search.report(trial.number, step, final + 1 / step)
        search.finish(trial.number, TrialEnd.COMPLETE, final)
    trailing = search.draw()
    job_id = trial_job_id(SWEEP_ID, trailing.number)
    store = LocalStore(tmp_path / "storage")
    save_record(
        store,
        JobRecord(
            job_id=job_id,
            tenant="acme",
            dag_id="trainyard_acme",
            dag_run_id=job_id,
            manifest={},
            current_attempt=1,
        ),
    )
    stopped = threading.Event()

    with EarlyStopWatch(search, trailing.number, store, job_id, stopped.set, every=0.05) as watch:
        assert not watch.pruned.wait(0.3)  # no metric row yet: nothing to judge
        store.put_bytes(JobLayout(job_id).metrics(1), b'{"step": 1, "loss": 9.0}\n')
        assert stopped.wait(60)
    assert watch.pruned.is_set()

    assert write_sweep(store, sweep_record(document), None)
    record_pruned(store, job_id, 1, datetime.now(UTC))
    record = load_record(store, job_id)
    assert record is not None
    assert record.state is JobState.PRUNED
    assert job_state(None, record) is JobState.PRUNED
    assert JobState.PRUNED in TERMINAL_STATES
    (attempt,) = record.attempts
    assert attempt.failure_class == "pruned"
    assert "asha" in attempt.message


def test_a_failed_look_is_tried_again_and_training_goes_on(tmp_path: Path) -> None:
    spec = parse_manifest(sweep_manifest(early_stopping={"rule": "median"})).sweep
    assert spec is not None
    search = SweepSearch(spec, SWEEP_ID, f"sqlite:///{tmp_path / 'study.db'}")
    trial = search.draw()
    looks = []

    class FlakyStore(LocalStore):
        def list(self, prefix: str = "") -> Any:
            looks.append(prefix)
            raise OSError("storage down")

    store = FlakyStore(tmp_path / "storage")
    with EarlyStopWatch(search, trial.number, store, "x", lambda: None, every=0.02) as watch:
        deadline = time.monotonic() + 60
        while len(looks) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(looks) >= 3
    assert not watch.pruned.is_set()
