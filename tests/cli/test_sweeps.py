"""`trainyard sweep show`, a sweep in `trainyard list` with its trials under it, and
`trainyard cancel` of a sweep, against a fake REST API and a tenant's local storage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import a_record, finished_run, invoke, store_of, text_of
from tests.manifest.test_sweep import sweep_manifest
from tests.support.fake_airflow import FakeAirflow
from trainyard.jobs.records import JobState, load_record, save_record
from trainyard.manifest.schema import parse_manifest
from trainyard.sweeps.record import SweepRecord, SweepState, TrialRow, load_sweep, write_sweep

SWEEP_ID = "acme.digits-mlp.20261201-100000-ab12"
SWEEPS_DAG = "trainyard_acme.sweeps"


def stored_sweep(deployment: Path, airflow: FakeAirflow) -> list[str]:
    """A running sweep of acme: trial 1 succeeded (loss 0.3), 2 was pruned, 3 runs."""
    trials = [f"{SWEEP_ID}.t{n}" for n in (1, 2, 3)]
    states = [("succeeded", 0.3, 120), ("pruned", 1.5, 20), ("running", 0.9, 40)]
    rows = [
        TrialRow(
            number=n,
            job_id=job_id,
            values={"lr": 0.001 * (n + 1), "dropout": 0.1, "hidden": 32, "optimizer": "adam"},
            state=state,
            metric=metric,
            step=step,
        )
        for n, (job_id, (state, metric, step)) in enumerate(zip(trials, states, strict=True))
    ]
    assert write_sweep(
        store_of(deployment, "acme"),
        SweepRecord(
            sweep_id=SWEEP_ID,
            tenant="acme",
            dag_id=SWEEPS_DAG,
            dag_run_id=SWEEP_ID,
            manifest=parse_manifest(sweep_manifest(trials=4)).model_dump(mode="json"),
            trials=rows,
            best_job_id=trials[0],
        ),
        None,
    )
    airflow.readable_dags.add(SWEEPS_DAG)
    airflow.runs[SWEEPS_DAG] = [{**finished_run(SWEEP_ID, "running"), "end_date": None}]
    airflow.runs["trainyard_acme"] = [
        finished_run(trials[0], "success"),
        finished_run(trials[1], "success"),
        {**finished_run(trials[2], "running"), "end_date": None},
        finished_run("acme.other.20261201-090000-aa11", "success"),
    ]
    store = store_of(deployment, "acme")
    save_record(store, a_record(trials[0], state=JobState.SUCCEEDED))
    save_record(store, a_record(trials[1], state=JobState.PRUNED))
    save_record(store, a_record(trials[2]))
    return trials


def test_show_lists_the_trials_best_first_with_their_values(
    deployment: Path, airflow: FakeAirflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    trials = stored_sweep(deployment, airflow)

    result = invoke("sweep", "show", SWEEP_ID)

    assert result.exit_code == 0, result.output
    assert f"sweep {SWEEP_ID}: running, 3 of 4 trials drawn" in result.output
    assert f"best trial: {trials[0]}" in result.output
    lines = [line for line in result.output.splitlines() if line.startswith(SWEEP_ID + ".t")]
    assert [line.split()[0] for line in lines] == [trials[0], trials[2], trials[1]]
    assert lines[1].split()[1:] == ["0.003", "0.1", "32", "adam", "0.9", "running", "40"]
    shown = json.loads(invoke("sweep", "show", SWEEP_ID, "--json").output)
    assert [trial["job_id"] for trial in shown["trials"]] == [trials[0], trials[2], trials[1]]
    assert shown["state"] == "running"

    missing = invoke("sweep", "show", "acme.none.20261201-100000-ab12")
    assert missing.exit_code == 1
    assert "no sweep acme.none.20261201-100000-ab12" in missing.output


def test_list_shows_a_sweep_with_its_trials_under_it(
    deployment: Path, airflow: FakeAirflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    trials = stored_sweep(deployment, airflow)

    result = invoke("list", "--tenant", "acme")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, result.output
    ids = [line.split()[0] for line in lines[1:]]
    assert ids == [SWEEP_ID, *trials, "acme.other.20261201-090000-aa11"]
    assert "(sweep)" in lines[1]
    assert "2/4" in lines[1].split("(sweep)")[1]  # trials ended (succeeded, pruned) of all
    assert "pruned" in lines[3]


def test_cancel_of_a_sweep_ends_its_run_and_cancels_its_running_trials(
    deployment: Path, airflow: FakeAirflow
) -> None:
    trials = stored_sweep(deployment, airflow)

    result = invoke("cancel", SWEEP_ID)

    assert result.exit_code == 0, result.output
    assert f"PATCH /api/v2/dags/{SWEEPS_DAG}/dagRuns/{SWEEP_ID}" in airflow.requests
    assert f"PATCH /api/v2/dags/trainyard_acme/dagRuns/{trials[2]}" in airflow.requests
    # The ended ones are left as they are.
    assert result.output.splitlines()[1:] == [f"  {trials[2]}"]
    store = store_of(deployment, "acme")
    sweep = load_sweep(store, SWEEP_ID)
    assert sweep is not None
    assert sweep.state is SweepState.CANCELLED
    running = load_record(store, trials[2])
    assert running is not None
    assert running.state is JobState.CANCELLED
    pruned = load_record(store, trials[1])
    assert pruned is not None
    assert pruned.state is JobState.PRUNED

    again = invoke("cancel", SWEEP_ID)
    assert again.exit_code == 2
    assert "is cancelled: only a running or paused sweep cancels" in text_of(again)


def test_pause_then_resume_of_a_sweep_pauses_its_running_trials_then_resumes_them(
    deployment: Path, airflow: FakeAirflow
) -> None:
    trials = stored_sweep(deployment, airflow)
    store = store_of(deployment, "acme")

    paused = invoke("pause", SWEEP_ID)

    assert paused.exit_code == 0, paused.output
    assert paused.output.splitlines()[-1] == f"  {trials[2]}"
    assert "its trials acted on: 1" in text_of(paused)
    assert f"PATCH /api/v2/dags/{SWEEPS_DAG}/dagRuns/{SWEEP_ID}" in airflow.requests
    sweep = load_sweep(store, SWEEP_ID)
    assert sweep is not None
    assert sweep.state is SweepState.PAUSED
    running = load_record(store, trials[2])
    assert running is not None
    assert running.state is JobState.PAUSED
    assert invoke("pause", SWEEP_ID).exit_code == 2  # only a running sweep pauses

    resumed = invoke("resume", SWEEP_ID)

    assert resumed.exit_code == 0, resumed.output
    assert resumed.output.splitlines()[1:] == [f"  {trials[2]}"]
    sweep_runs = [run for run in airflow.runs[SWEEPS_DAG] if run["dag_run_id"] != SWEEP_ID]
    assert [run["conf"]["resume_sweep_id"] for run in sweep_runs] == [SWEEP_ID]
    trial_runs = [run["conf"] for run in airflow.runs["trainyard_acme"] if "conf" in run]
    assert {"resume_job_id": trials[2]} in [
        {k: v for k, v in (conf or {}).items() if k == "resume_job_id"} for conf in trial_runs
    ]
