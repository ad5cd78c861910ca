"""The sweeps DAG's validate: a sweep is recorded once, under its run's id; a plain job is
refused there, and a sweep is refused by the tenant's job DAG, each naming where it belongs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from operators.tasks.sweep import ValidateSweepOperator
from operators.tasks.validate import ValidateJobOperator
from tests.operators.tasks.test_validate import bare_acme
from trainyard.jobs.records import JobState, load_record
from trainyard.manifest.submission import example_manifest, example_sweep_manifest
from trainyard.sweeps.record import SweepRecord, SweepState, change_sweep, load_sweep

SWEEP_ID = "acme.digits-mlp.20261207-101500-ab12"


def context(manifest: dict[str, object]) -> Context:
    dag_run = SimpleNamespace(run_id=SWEEP_ID, queued_at=None)
    return cast(Context, {"params": {"manifest": manifest}, "dag_run": dag_run})


def test_a_sweep_is_recorded_once_under_its_runs_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = bare_acme(tmp_path, monkeypatch)
    validate = ValidateSweepOperator(task_id="validate", tenant="acme")

    assert validate.execute(context(example_sweep_manifest("acme"))) == SWEEP_ID
    record = load_sweep(store, SWEEP_ID)
    assert record is not None
    assert record.state is SweepState.RUNNING
    assert record.spec.trials == 8
    assert record.trials == []
    assert validate.execute(context(example_sweep_manifest("acme"))) == SWEEP_ID  # a retry
    assert load_sweep(store, SWEEP_ID) == record
    assert load_record(store, SWEEP_ID) is None  # a sweep is no job


@pytest.mark.parametrize(
    ("operator", "manifest", "says"),
    [
        (ValidateSweepOperator, example_manifest("acme"), "has no sweep section"),
        (ValidateJobOperator, example_sweep_manifest("acme"), "trainyard_acme.sweeps"),
    ],
)
def test_each_dag_refuses_the_other_kind_of_manifest_naming_where_it_belongs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    operator: type[ValidateJobOperator],
    manifest: dict[str, object],
    says: str,
) -> None:
    store = bare_acme(tmp_path, monkeypatch)
    with pytest.raises(AirflowFailException, match=says):
        operator(task_id="validate", tenant="acme").execute(context(manifest))
    record = load_record(store, SWEEP_ID)  # why, where `trainyard status` finds it
    assert record is not None
    assert record.state is JobState.FAILED
    assert record.failure is not None
    assert says in record.failure.message
    assert load_sweep(store, SWEEP_ID) is None


def test_a_resume_run_takes_up_a_paused_sweep_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = bare_acme(tmp_path, monkeypatch)
    validate = ValidateSweepOperator(task_id="validate", tenant="acme")
    validate.execute(context(example_sweep_manifest("acme")))
    resume_run = SimpleNamespace(run_id=f"{SWEEP_ID}.resumed-1", queued_at=None)
    conf = {"manifest": example_sweep_manifest("acme"), "resume_sweep_id": SWEEP_ID}
    resumed = cast(Context, {"params": conf, "dag_run": resume_run})

    with pytest.raises(AirflowFailException, match="only a paused sweep resumes"):
        validate.execute(resumed)  # it runs

    def paused(record: SweepRecord) -> None:
        record.state = SweepState.PAUSED

    change_sweep(store, SWEEP_ID, paused)
    assert validate.execute(resumed) == SWEEP_ID
    assert validate.execute(resumed) == SWEEP_ID  # a retry of the resume run's validate
    record = load_sweep(store, SWEEP_ID)
    assert record is not None
    assert (record.state, record.dag_run_id) == (SweepState.RUNNING, resume_run.run_id)
