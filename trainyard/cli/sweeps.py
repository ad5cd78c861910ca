"""`trainyard sweep`: a hyper-parameter sweep's trials, best first."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from trainyard.cli.client import AirflowClient
from trainyard.cli.control import resume_by_id, stop_trials
from trainyard.cli.session import Session, console, format_cell, session
from trainyard.cli.status import job_status
from trainyard.jobs.layout import tenant_of
from trainyard.jobs.records import JobState
from trainyard.manifest.sweep import MAX_TRIALS, format_value
from trainyard.storage.base import ObjectStore
from trainyard.sweeps.record import (
    RESUME_SWEEP_KEY,
    SweepRecord,
    SweepState,
    change_sweep,
    load_sweep,
)
from trainyard.tenancy.names import dag_id_for_sweeps, dag_id_for_tenant

#: The states a stop to each state takes a sweep from, and its refusal for the others.
_STOPS = {
    SweepState.PAUSED: ({SweepState.RUNNING}, "only a running sweep pauses"),
    SweepState.CANCELLED: (
        {SweepState.RUNNING, SweepState.PAUSED},
        "only a running or paused sweep cancels",
    ),
}

app = typer.Typer(help="Hyper-parameter sweeps: each trial is a job.", no_args_is_help=True)


@app.command("show")
def show(
    sweep_id: Annotated[str, typer.Argument(help="The sweep's id (what submit printed).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the sweep as JSON.")] = False,
) -> None:
    """The sweep's state and its trials best first: values, metric, state, steps run."""
    tenant = tenant_of(sweep_id)
    with session() as sess:
        sess.check_access(tenant)
        record = load_sweep(sess.store(tenant), sweep_id)
        if record is None:
            console.print(
                f"no sweep {sweep_id} in tenant {tenant}'s storage: a sweep shows once its "
                f"validate task accepted it ('trainyard status {sweep_id}' says why not)",
                highlight=False,
            )
            raise typer.Exit(1)
        ranked = record.ranked()
        if as_json:
            document = record.model_dump(mode="json")
            document["trials"] = [trial.model_dump(mode="json") for trial in ranked]
            typer.echo(json.dumps(document, indent=2))
            return
        print_sweep(record)


def print_sweep(record: SweepRecord) -> None:
    spec = record.spec
    console.print(
        f"sweep {record.sweep_id}: {record.state.value}, {len(record.trials)} of "
        f"{spec.trials_to_run} trials drawn ({spec.algorithm.value}, {spec.goal.value} "
        f"{spec.metric}, early stopping {spec.early_stopping.rule.value})",
        highlight=False,
    )
    if record.best_job_id:
        console.print(f"best trial: {record.best_job_id}", highlight=False)
    table = Table(box=None, pad_edge=False)
    table.add_column("trial job id", no_wrap=True)
    for name in spec.parameters:
        table.add_column(name, no_wrap=True)
    table.add_column(spec.metric, justify="right")
    table.add_column("state", no_wrap=True)
    table.add_column("steps", justify="right")
    for trial in record.ranked():
        table.add_row(
            trial.job_id,
            *(format_value(trial.values[name]) for name in spec.parameters),
            format_cell(trial.metric),
            trial.state,
            "" if trial.step is None else str(trial.step),
        )
    console.print(table)


def cancel_sweep(client: AirflowClient, store: ObjectStore, record: SweepRecord) -> list[str]:
    """Mark the sweep cancelled, end its run (its controller starts no more trials), and
    cancel each of its trials that has not ended; return the trials cancelled."""
    return _stop(client, store, record, SweepState.CANCELLED)


def pause_sweep(client: AirflowClient, store: ObjectStore, record: SweepRecord) -> list[str]:
    """Mark the sweep paused, end its run, and pause each of its trials that is queued or
    running (a final checkpoint each); return the trials paused."""
    return _stop(client, store, record, SweepState.PAUSED)


def resume_sweep_run(client: AirflowClient, store: ObjectStore, record: SweepRecord) -> list[str]:
    """Resume each paused trial, and go on with the sweep in a new run of its DAG (its
    controller draws the rest of the trials); return the trials resumed."""
    if record.state is not SweepState.PAUSED:
        raise ValueError(f"{record.sweep_id} is {record.state.value}: only a paused sweep resumes")
    resumed = []
    for job_id in _trials(client, record):
        with contextlib.suppress(LookupError, ValueError):  # not paused: it ended, or never ran
            if job_status(client, store, job_id).state is JobState.PAUSED:
                resume_by_id(client, store, job_id)
                resumed.append(job_id)
    run_id = f"{record.sweep_id}.resumed-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    client.trigger_run(
        record.dag_id, run_id, {"manifest": record.manifest, RESUME_SWEEP_KEY: record.sweep_id}
    )
    return resumed


def _stop(
    client: AirflowClient, store: ObjectStore, record: SweepRecord, state: SweepState
) -> list[str]:
    """The state is written first: a controller's look under way then loses its write, and
    stops the trials it started itself (`trainyard.sweeps.controller.look`)."""
    stoppable, refusal = _STOPS[state]
    was_running = False

    def stop(current: SweepRecord) -> None:
        nonlocal was_running
        if current.state not in stoppable:
            raise ValueError(f"{current.sweep_id} is {current.state.value}: {refusal}")
        was_running = current.state is SweepState.RUNNING
        current.state = state

    stopped = change_sweep(store, record.sweep_id, stop)
    if was_running:
        client.set_run_state(stopped.dag_id, stopped.dag_run_id, "failed")
    return stop_trials(client, store, state, _trials(client, stopped))


def _trials(client: AirflowClient, record: SweepRecord) -> list[str]:
    """The sweep's trials: those its record names and those Airflow has a run of (one its
    controller started just before it stopped)."""
    prefix = f"{record.sweep_id}.t"
    trials = {trial.job_id for trial in record.trials}
    trials |= {
        str(run["dag_run_id"])
        for run in client.list_runs(dag_id_for_tenant(record.tenant), limit=MAX_TRIALS)
        if str(run["dag_run_id"]).startswith(prefix)
    }
    return sorted(trials)


def wait_for_sweep(sess: Session, sweep_id: str, poll_seconds: float) -> bool:
    """Follow a sweep until its run ends; print it; whether it succeeded."""
    tenant = tenant_of(sweep_id)
    while True:
        run = sess.client.get_run(dag_id_for_sweeps(tenant), sweep_id)
        if run["state"] in ("success", "failed"):
            break
        time.sleep(poll_seconds)
    record = load_sweep(sess.store(tenant), sweep_id)
    if record is None:
        console.print(f"sweep {sweep_id} was refused: 'trainyard status {sweep_id}' says why")
        return False
    print_sweep(record)
    return record.state is SweepState.SUCCEEDED
