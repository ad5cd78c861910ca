"""The sweep controller's look at its trials, against a real study and a tenant's storage:
trials start up to `parallel`, each ended job ends its trial, and a controller started again
after a crash starts no trial twice and loses none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.manifest.test_sweep import sweep_manifest
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.records import JobRecord, JobState, save_record
from trainyard.manifest.schema import parse_manifest
from trainyard.storage import join_key
from trainyard.storage.local import LocalStore
from trainyard.sweeps.controller import advance, final_metric, look
from trainyard.sweeps.record import (
    SweepRecord,
    SweepState,
    change_sweep,
    load_sweep,
    write_sweep,
)
from trainyard.sweeps.search import SweepSearch

SWEEP_ID = "acme.digits-mlp.20261207-101500-ab12"


class Trials:
    """The trials' jobs as the controller sees them: started ones queue, then the test ends
    them."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.states: dict[str, JobState] = {}
        self.started: list[str] = []
        self.manifests: dict[str, dict[str, Any]] = {}
        self.stopped: list[tuple[SweepState, str]] = []

    def state(self, job_id: str) -> JobState | None:
        return self.states.get(job_id)

    def start(self, job_id: str, manifest: dict[str, Any]) -> None:
        assert job_id not in self.states, f"{job_id} started twice"
        self.started.append(job_id)
        self.manifests[job_id] = manifest
        self.states[job_id] = JobState.QUEUED

    def stop(self, state: SweepState, job_ids: list[str]) -> None:
        self.stopped += [(state, job_id) for job_id in job_ids]

    def end(self, job_id: str, state: JobState, loss: float | None = None) -> None:
        self.states[job_id] = state
        if loss is not None:
            rows = "".join(
                f'{{"step": {step}, "loss": {loss + 1 / step}, "attempt": 1}}\n'
                for step in (10, 20, 30)
            )
            self.store.put_bytes(JobLayout(job_id).metrics(1), rows.encode())


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "storage")


def sweep(store: LocalStore, tmp_path: Path, **changes: Any) -> tuple[SweepRecord, SweepSearch]:
    document = sweep_manifest(**({"trials": 4, "parallel": 2, "seed": 3} | changes))
    manifest = parse_manifest(document)
    record = SweepRecord(
        sweep_id=SWEEP_ID,
        tenant="acme",
        dag_id="trainyard_acme.sweeps",
        dag_run_id=SWEEP_ID,
        manifest=manifest.model_dump(mode="json"),
    )
    assert write_sweep(store, record, None)
    assert manifest.sweep is not None
    return record, SweepSearch(manifest.sweep, SWEEP_ID, f"sqlite:///{tmp_path / 'study.db'}")


def a_look(search: SweepSearch, store: LocalStore, trials: Trials) -> SweepRecord:
    record = look(store, SWEEP_ID, lambda _: search, trials.state, trials.start, trials.stop)
    assert record is not None
    return record


def test_trials_run_parallel_at_a_time_until_all_ended_and_the_best_is_named(
    store: LocalStore, tmp_path: Path
) -> None:
    record, search = sweep(store, tmp_path)
    trials = Trials(store)

    record = a_look(search, store, trials)
    assert trials.started == [f"{SWEEP_ID}.t1", f"{SWEEP_ID}.t2"]
    assert trials.stopped == []
    assert record.state is SweepState.RUNNING
    manifest = parse_manifest(trials.manifests[f"{SWEEP_ID}.t1"])
    assert manifest.sweep is None
    assert set(manifest.hyperparameters) == {"lr", "dropout", "hidden", "optimizer"}

    assert a_look(search, store, trials).trials == record.trials  # nothing ended: waits
    assert len(trials.started) == 2

    trials.end(f"{SWEEP_ID}.t1", JobState.SUCCEEDED, loss=0.3)
    trials.end(f"{SWEEP_ID}.t2", JobState.PRUNED, loss=2.0)
    record = a_look(search, store, trials)
    assert trials.started[2:] == [f"{SWEEP_ID}.t3", f"{SWEEP_ID}.t4"]
    assert record.best_job_id == f"{SWEEP_ID}.t1"

    trials.end(f"{SWEEP_ID}.t3", JobState.SUCCEEDED, loss=0.1)
    trials.end(f"{SWEEP_ID}.t4", JobState.FAILED)  # a user error: a failed trial, sweep goes on
    record = a_look(search, store, trials)
    assert record.state is SweepState.SUCCEEDED
    assert len(trials.started) == 4  # trials: 4
    assert record.best_job_id == f"{SWEEP_ID}.t3"
    ranked = [(t.job_id.rsplit(".", 1)[1], t.state) for t in record.ranked()]
    assert ranked[:2] == [("t3", "succeeded"), ("t1", "succeeded")]
    assert {state for _, state in ranked[2:]} == {"pruned", "failed"}
    assert [t.state for t in search.trials()] == ["complete", "pruned", "complete", "failed"]
    stored = load_sweep(store, SWEEP_ID)
    assert stored is not None
    assert stored.state is SweepState.SUCCEEDED


def test_a_trial_that_ended_between_two_looks_of_its_watch_still_counts_for_pruning(
    store: LocalStore, tmp_path: Path
) -> None:
    early_stopping = {"rule": "asha", "min_steps": 10, "reduction_factor": 2}
    _, search = sweep(store, tmp_path, trials=2, parallel=1, early_stopping=early_stopping)
    trials = Trials(store)
    a_look(search, store, trials)
    trials.end(f"{SWEEP_ID}.t1", JobState.SUCCEEDED, loss=0.3)  # no look of its watch heard it
    a_look(search, store, trials)
    assert trials.started == [f"{SWEEP_ID}.t1", f"{SWEEP_ID}.t2"]
    second = search.trials()[1]
    # A loss far above the first trial's at step 10: ASHA stops the second trial there.
    assert search.report(second.number, 10, 5.0)


def test_a_sweep_whose_trials_all_fail_fails(store: LocalStore, tmp_path: Path) -> None:
    record, search = sweep(store, tmp_path, trials=2)
    trials = Trials(store)
    record = a_look(search, store, trials)
    for job_id in trials.started:
        trials.end(job_id, JobState.FAILED)
    record = a_look(search, store, trials)
    assert record.state is SweepState.FAILED
    assert record.best_job_id is None


def test_a_controller_started_again_starts_a_drawn_trial_once_and_draws_no_more(
    store: LocalStore, tmp_path: Path
) -> None:
    record, search = sweep(store, tmp_path)
    trials = Trials(store)
    crashed = Trials(store)

    def start_then_crash(job_id: str, manifest: dict[str, Any]) -> None:
        crashed.start(job_id, manifest)
        raise ConnectionError("the API server went away")  # the run was never created

    with pytest.raises(ConnectionError):
        advance(record, search, store, trials.state, start_then_crash)
    assert [t.state for t in search.trials()] == ["running"]  # drawn, never started

    again = SweepSearch(record.spec, SWEEP_ID, f"sqlite:///{tmp_path / 'study.db'}")
    record = a_look(again, store, trials)
    assert trials.started == [f"{SWEEP_ID}.t1", f"{SWEEP_ID}.t2"]
    assert trials.manifests[f"{SWEEP_ID}.t1"] == crashed.manifests[f"{SWEEP_ID}.t1"]
    assert len(again.trials()) == 2


def test_the_final_metric_is_the_evaluations_else_the_last_row(store: LocalStore) -> None:
    job_id = f"{SWEEP_ID}.t1"
    assert final_metric(store, job_id, "loss") is None
    store.put_bytes(
        JobLayout(job_id).metrics(1),
        b'{"step": 10, "loss": 0.9}\n{"step": 20, "accuracy": 0.5}\n{"step": 30, "loss": 0.4}\n',
    )
    assert final_metric(store, job_id, "loss") == 0.4
    save_record(
        store,
        JobRecord(
            job_id=job_id,
            tenant="acme",
            dag_id="trainyard_acme",
            dag_run_id=job_id,
            manifest={},
            evaluation={"accuracy": 0.97, "loss": 0.2},
        ),
    )
    assert final_metric(store, job_id, "accuracy") == 0.97
    assert final_metric(store, job_id, "loss") == 0.2
    assert join_key("sweeps", SWEEP_ID, "sweep.json") not in [i.key for i in store.list("jobs")]


def test_a_look_reads_only_the_trials_that_have_not_ended(
    store: LocalStore, tmp_path: Path
) -> None:
    record, search = sweep(store, tmp_path, trials=3)
    trials = Trials(store)
    read: list[str] = []

    def state(job_id: str) -> JobState | None:
        read.append(job_id)
        return trials.state(job_id)

    record = advance(record, search, store, state, trials.start)
    trials.end(f"{SWEEP_ID}.t1", JobState.SUCCEEDED, loss=0.3)
    record = advance(record, search, store, state, trials.start)  # t1 ends; t3 starts
    read.clear()

    record = advance(record, search, store, state, trials.start)

    assert read == [f"{SWEEP_ID}.t2", f"{SWEEP_ID}.t3"]
    assert (record.trials[0].job_id, record.trials[0].state) == (f"{SWEEP_ID}.t1", "succeeded")
    assert record.trials[0].metric == pytest.approx(0.3 + 1 / 30)


@pytest.mark.parametrize("stop", [SweepState.PAUSED, SweepState.CANCELLED])
def test_a_stop_written_during_a_look_wins_and_the_look_starts_no_trial(
    store: LocalStore, tmp_path: Path, stop: SweepState
) -> None:
    _, search = sweep(store, tmp_path)
    trials = Trials(store)
    a_look(search, store, trials)
    trials.end(f"{SWEEP_ID}.t1", JobState.SUCCEEDED, loss=0.3)

    def state_as_a_user_stops(job_id: str) -> JobState | None:
        a_user_stops(store, stop)  # after the look read
        return trials.state(job_id)

    looked = look(
        store, SWEEP_ID, lambda _: search, state_as_a_user_stops, trials.start, trials.stop
    )

    assert looked is not None
    assert looked.state is stop
    stored = load_sweep(store, SWEEP_ID)
    assert stored is not None
    assert stored.state is stop
    assert [t.state for t in stored.trials] == ["queued", "queued"]  # the look's copy lost
    assert trials.started == [f"{SWEEP_ID}.t1", f"{SWEEP_ID}.t2"]  # t3 was drawn, not started
    assert trials.stopped == []
    assert a_look(search, store, trials).state is stop  # a later look starts nothing either
    assert len(trials.started) == 2


@pytest.mark.parametrize("stop", [SweepState.PAUSED, SweepState.CANCELLED])
def test_trials_started_after_a_stop_that_listed_the_trials_first_are_stopped(
    store: LocalStore, tmp_path: Path, stop: SweepState
) -> None:
    _, search = sweep(store, tmp_path)
    trials = Trials(store)

    def start_as_a_user_stops(job_id: str, manifest: dict[str, Any]) -> None:
        if not trials.started:  # after the look's write, before its first start
            a_user_stops(store, stop)
        trials.start(job_id, manifest)

    looked = look(
        store, SWEEP_ID, lambda _: search, trials.state, start_as_a_user_stops, trials.stop
    )

    assert looked is not None
    assert looked.state is stop
    assert trials.stopped == [(stop, f"{SWEEP_ID}.t1"), (stop, f"{SWEEP_ID}.t2")]


def a_user_stops(store: LocalStore, stop: SweepState) -> None:
    """A pause or cancel's write of the sweep's state, as `trainyard pause|cancel` does it."""

    def stopped(record: SweepRecord) -> None:
        record.state = stop

    change_sweep(store, SWEEP_ID, stopped)
