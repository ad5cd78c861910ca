"""`trainyard sweep`: a hyper-parameter sweep's trials, best first."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Annotated

import typer
from rich.table import Table

from trainyard.cli.client import AirflowClient
from trainyard.cli.session import Session, console, format_cell, session
from trainyard.cli.status import cancel_by_id
from trainyard.jobs.layout import tenant_of
from trainyard.manifest.sweep import MAX_TRIALS, format_value
from trainyard.storage.base import ObjectStore
from trainyard.sweeps.record import SweepRecord, SweepState, load_sweep, save_sweep
from trainyard.tenancy.names import dag_id_for_sweeps, dag_id_for_tenant

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
    """End the sweep's run (its controller starts no more trials), mark it cancelled, and
    cancel each of its trials that has not ended (those Airflow has a run of, and those the
    record names); return the trials cancelled."""
    if record.state is not SweepState.RUNNING:
        raise ValueError(f"{record.sweep_id} is {record.state.value}: only a running sweep cancels")
    client.set_run_state(record.dag_id, record.dag_run_id, "failed")
    record.state = SweepState.CANCELLED
    save_sweep(store, record)
    prefix = f"{record.sweep_id}.t"
    trials = {trial.job_id for trial in record.trials}
    trials |= {
        str(run["dag_run_id"])
        for run in client.list_runs(dag_id_for_tenant(record.tenant), limit=MAX_TRIALS)
        if str(run["dag_run_id"]).startswith(prefix)
    }
    cancelled = []
    for job_id in sorted(trials):
        with contextlib.suppress(LookupError, ValueError):  # gone, or already ended
            cancel_by_id(client, store, job_id)
            cancelled.append(job_id)
    return cancelled


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
