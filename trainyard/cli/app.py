"""`trainyard`: submit and follow training jobs from a terminal.

Talks to Airflow's REST API v2 (TRAINYARD_API_URL, TRAINYARD_USERNAME, TRAINYARD_PASSWORD) and
to the tenant's storage as declared in the deployment config (TRAINYARD_CONFIG). Airflow decides
who may do what: before touching a tenant's storage, a command checks that Airflow lets the user
read the tenant's training DAG.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from trainyard.cli import data, envs, models, sweeps, usage
from trainyard.cli.control import pause_by_id, resume_by_id
from trainyard.cli.groups import add_installed_groups
from trainyard.cli.session import AccessDenied, Session, console, format_cell, session
from trainyard.cli.status import JobStatus, cancel_by_id, tenant_statuses
from trainyard.data.packaging import is_archive, unpack_archive, upload_directory
from trainyard.jobs.layout import JobLayout, new_job_id, parse_job_id, tenant_of
from trainyard.jobs.progress import Progress as JobProgress
from trainyard.jobs.progress import format_duration, metric_names, read_metrics
from trainyard.jobs.records import JobState, load_record
from trainyard.jobs.state import TERMINAL_STATES
from trainyard.jobs.tasks import TRAINING_TASKS
from trainyard.manifest.schema import read_manifest_file
from trainyard.manifest.units import parse_duration
from trainyard.sweeps.record import SweepRecord, list_sweeps, load_sweep
from trainyard.sweeps.trials import trial_of
from trainyard.tenancy.config import check_manifest_for_tenant
from trainyard.tenancy.names import dag_id_for_sweeps, dag_id_for_tenant
from trainyard.tenancy.quotas import check_quota

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
app.add_typer(envs.app, name="envs")
app.add_typer(sweeps.app, name="sweep")
app.command("usage")(usage.usage)
add_installed_groups(app)

POLL_SECONDS = 2.0


def describe(status: JobStatus) -> str:
    """The state in a few words: 'running (attempt 2, step 340 of 1000, about 4m 12s left)'."""
    details = []
    if status.attempt:
        details.append(f"attempt {status.attempt}")
    if status.step is not None:
        of = f" of {status.total_steps}" if status.total_steps else ""
        details.append(f"step {status.step}{of}")
    if status.eta_s is not None:
        details.append(f"about {format_duration(status.eta_s)} left")
    if status.max_runtime_s is not None and status.runtime_s is not None:
        used, limit = format_duration(status.runtime_s), format_duration(status.max_runtime_s)
        details.append(f"{used} of max_runtime {limit}")
    return f"{status.state.value} ({', '.join(details)})" if details else status.state.value


def wait_for(sess: Session, job_id: str) -> JobStatus:
    """Show a progress bar until the job ends; return its final status."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(job_id, total=1.0)
        while True:
            status = sess.status(job_id)
            progress.update(bar, completed=status.progress or 0.0, description=describe(status))
            if status.state in TERMINAL_STATES:
                return status
            time.sleep(POLL_SECONDS)


def print_status(status: JobStatus) -> None:
    console.print(f"{status.job_id}: {describe(status)}", highlight=False)
    if status.elapsed_s is not None:
        progress = JobProgress(
            status.step, status.total_steps, status.progress, status.elapsed_s, status.eta_s
        )
        console.print(f"  progress: {progress.describe()}", highlight=False)
    if status.evaluation:
        metrics = ", ".join(f"{k} = {format_cell(v)}" for k, v in sorted(status.evaluation.items()))
        console.print(f"  evaluation: {metrics}", highlight=False)
    if status.model:
        console.print(f"  model: {status.model}", highlight=False)
    if status.model_version is not None:
        console.print(
            f"  version: v{status.model_version} "
            f"(trainyard models show {parse_job_id(status.job_id).name} {status.model_version} "
            f"--tenant {status.tenant})",
            highlight=False,
        )
    if status.failure:
        console.print(
            f"  failure ({status.failure.failure_class}, task {status.failure.task}): "
            f"{status.failure.message}",
            highlight=False,
        )


@app.command()
def submit(
    manifest_file: Annotated[Path, typer.Argument(help="The job manifest (YAML or JSON).")],
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = False,
) -> None:
    """Validate a job manifest, package its code and start the job. Prints the job id (a
    sweep's id for a manifest with a sweep section: its trials are jobs of their own)."""
    with session() as sess:
        manifest = read_manifest_file(manifest_file)
        tenant = check_manifest_for_tenant(manifest, sess.config)
        sess.check_access(tenant.name)
        check_quota(manifest.resources, tenant)
        job_id = new_job_id(tenant.name, manifest.name)
        document = manifest.model_dump(mode="json")
        if manifest.code.path is not None:
            code = (manifest_file.parent / manifest.code.path).resolve()
            prefix = JobLayout(job_id).code
            if is_archive(code.name) and code.is_file():
                unpack_archive(
                    sess.store(tenant.name), code.read_bytes(), code.name, prefix, "code.path"
                )
            else:
                upload_directory(sess.store(tenant.name), code, prefix, "code.path")
            document["code"] = {"uri": prefix}
        dag_id = (dag_id_for_sweeps if manifest.sweep else dag_id_for_tenant)(tenant.name)
        sess.client.trigger_run(dag_id, job_id, {"manifest": document})
        typer.echo(job_id)
        if wait and manifest.sweep:
            if not sweeps.wait_for_sweep(sess, job_id, POLL_SECONDS):
                raise typer.Exit(1)
        elif wait:
            final = wait_for(sess, job_id)
            print_status(final)
            if final.state is not JobState.SUCCEEDED:
                raise typer.Exit(1)


@app.command()
def status(
    job_id: Annotated[str, typer.Argument(help="The job id printed by submit.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a job's state, attempt, progress and failure reason."""
    with session() as sess:
        current = sess.status(job_id)
        if as_json:
            typer.echo(json.dumps(current.as_dict(), default=str, indent=2))
        else:
            print_status(current)


def _log_lines(sess: Session, job_id: str) -> list[str]:
    current = sess.status(job_id)
    instances = {
        ti["task_id"]: ti for ti in sess.client.task_instances(current.dag_id, current.dag_run_id)
    }
    lines = []
    for task_id in TRAINING_TASKS:
        ti = instances.get(task_id)
        if ti is None or not ti.get("try_number"):
            continue
        for try_number in range(1, int(ti["try_number"]) + 1):
            lines.append(f"=== {task_id} (try {try_number}) ===")
            lines.extend(
                sess.client.task_log(current.dag_id, current.dag_run_id, task_id, try_number)
            )
    return lines


@app.command()
def logs(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    follow: Annotated[bool, typer.Option(help="Keep printing until the job ends.")] = False,
) -> None:
    """Print the job's task logs from Airflow, training output included."""
    with session() as sess:
        printed = 0
        while True:
            lines = _log_lines(sess, job_id)
            for line in lines[printed:]:
                typer.echo(line)
            printed = len(lines)
            if not follow or sess.status(job_id).state in TERMINAL_STATES:
                return
            time.sleep(POLL_SECONDS)


@app.command()
def metrics(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    tail: Annotated[int, typer.Option(help="Only the last N rows (0: all).", min=0)] = 0,
    plot: Annotated[
        bool, typer.Option("--plot", help="Draw a metric over the steps, one line per attempt.")
    ] = False,
    metric: Annotated[str, typer.Option(help="The metric --plot draws.")] = "loss",
) -> None:
    """Print the metric rows the learners reported, step by step (or draw one with --plot)."""
    with session() as sess:
        rows = read_metrics(sess.store(tenant_of(job_id)), job_id)
        if tail:
            rows = rows[-tail:]
        if plot:
            typer.echo(plot_metric(rows, metric, job_id))
            return
        if as_json:
            for row in rows:
                typer.echo(json.dumps(row))
            return
        columns = list(dict.fromkeys(key for row in rows for key in row))
        table = Table(*columns)
        for row in rows:
            table.add_row(*(format_cell(row.get(column), column) for column in columns))
        console.print(table)


def plot_metric(rows: list[dict[str, Any]], metric: str, title: str) -> str:
    """`metric` over the steps as a terminal chart (plotext), one line per attempt; the
    terminal's size, at most 100 x 25.

    Raises:
        ValueError: no row reports `metric` at a step (naming the metrics there are).
    """
    import plotext

    by_attempt: dict[int, tuple[list[float], list[float]]] = {}
    for row in rows:
        step, value = row.get("step"), row.get(metric)
        if isinstance(step, int | float) and isinstance(value, int | float):
            steps, values = by_attempt.setdefault(int(row.get("attempt", 1)), ([], []))
            steps.append(float(step))
            values.append(float(value))
    if not by_attempt:
        known = ", ".join(metric_names(rows)) or "none yet"
        raise ValueError(f"--metric {metric!r}: no row reports it at a step (metrics: {known})")
    plotext.clear_figure()
    width, height = shutil.get_terminal_size((80, 24))
    plotext.plotsize(min(width, 100), min(height - 2, 25))
    plotext.theme("clear")
    for attempt, (steps, values) in sorted(by_attempt.items()):
        plotext.plot(steps, values, label=f"attempt {attempt}", marker="braille")
    plotext.title(f"{metric} of {title}")
    plotext.xlabel("step")
    return str(plotext.build())


@app.command("list")
def list_jobs(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's jobs.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, one status a job.")] = False,
) -> None:
    """List recent jobs with their state and progress (all tenants: those the user may see).
    A sweep's trials are listed under it."""
    with session() as sess:
        tenants = [tenant] if tenant else sess.config.tenant_names
        statuses: list[JobStatus] = []
        sweeps: list[SweepRecord] = []
        for name in tenants:
            try:
                sess.check_access(name)
            except AccessDenied:
                if tenant:
                    raise
                continue
            statuses.extend(tenant_statuses(sess.client, sess.store(name), name))
            sweeps.extend(list_sweeps(sess.store(name)))
        if as_json:
            typer.echo(json.dumps([status.as_dict() for status in statuses], indent=2))
            return
        # 80 columns: the job id (what people copy into the next command) is never cut, the
        # state, progress and start time keep their width; only a long tenant name may wrap.
        table = Table(box=None, pad_edge=False)
        table.add_column("job id", no_wrap=True)
        table.add_column("tenant", overflow="fold")
        table.add_column("state", no_wrap=True, min_width=len(JobState.SUCCEEDED.value))
        table.add_column("done", no_wrap=True, justify="right")
        table.add_column("started (UTC)", no_wrap=True, min_width=16)
        # "": the jobs that are no trial of a listed sweep.
        trials: dict[str, list[JobStatus]] = {sweep.sweep_id: [] for sweep in sweeps}
        trials[""] = []
        for status in statuses:
            trial = trial_of(status.job_id)
            trials[trial[0] if trial and trial[0] in trials else ""].append(status)
        rows: list[tuple[str, str, str, str, str]] = []
        for sweep in sorted(sweeps, key=lambda sweep: sweep.created_at, reverse=True):
            ended = sum(t.state in TERMINAL_NAMES for t in sweep.trials)
            rows.append(
                (
                    f"{sweep.sweep_id} (sweep)",
                    sweep.tenant,
                    sweep.state.value,
                    f"{ended}/{sweep.spec.trials_to_run}",
                    sweep.created_at.strftime("%Y-%m-%d %H:%M"),
                )
            )
            rows += [_row(status) for status in trials[sweep.sweep_id]]
        rows += [_row(status) for status in trials[""]]
        for row in rows:
            table.add_row(*row)
        console.print(table)


TERMINAL_NAMES = {state.value for state in TERMINAL_STATES}


def print_trials(said: str, trials: list[str]) -> None:
    """What a sweep's cancel, pause or resume did, then each trial it acted on."""
    console.print(f"{said}; its trials acted on: {len(trials)}", highlight=False)
    for trial in trials:
        console.print(f"  {trial}", highlight=False)


def _row(status: JobStatus) -> tuple[str, str, str, str, str]:
    return (
        status.job_id,
        status.tenant,
        status.state.value,
        f"{status.progress:.0%}" if status.progress is not None else "",
        status.started_at.strftime("%Y-%m-%d %H:%M") if status.started_at else "",
    )


@app.command()
def cancel(job_id: Annotated[str, typer.Argument(help="The job id, or a sweep's.")]) -> None:
    """Stop a job: learners get SIGTERM and commit a final checkpoint; a queued job never
    starts. The job ends cancelled. A sweep starts no more trials and its trials are
    cancelled."""
    with session() as sess:
        store = sess.store(tenant_of(job_id))
        sweep = load_sweep(store, job_id)
        if sweep is not None:
            print_trials(f"{job_id}: cancelled", sweeps.cancel_sweep(sess.client, store, sweep))
            return
        cancel_by_id(sess.client, store, job_id)
        console.print(f"{job_id}: cancelled", highlight=False)


@app.command()
def pause(job_id: Annotated[str, typer.Argument(help="The job id, or a sweep's.")]) -> None:
    """Hold a job: learners get SIGTERM and commit a final checkpoint, and the job gives back
    its slots until `trainyard resume`. A queued job is kept from starting. A sweep starts no
    more trials and its trials are paused."""
    with session() as sess:
        store = sess.store(tenant_of(job_id))
        sweep = load_sweep(store, job_id)
        if sweep is not None:
            paused = sweeps.pause_sweep(sess.client, store, sweep)
            print_trials(f"{job_id}: paused (trainyard resume continues it)", paused)
            return
        pause_by_id(sess.client, store, job_id)
        console.print(f"{job_id}: paused (trainyard resume {job_id} continues it)", highlight=False)


@app.command()
def resume(
    job_id: Annotated[str, typer.Argument(help="The job id, or a paused sweep's.")],
    max_runtime: Annotated[
        str | None, typer.Option(help="A new max_runtime for the job, such as 2h.")
    ] = None,
) -> None:
    """Continue a paused or failed job, as the same job, from its newest committed checkpoint;
    it waits in the queue like any job. A paused sweep resumes its paused trials and goes on
    drawing the rest."""
    with session() as sess:
        try:
            limit = parse_duration(max_runtime) if max_runtime is not None else None
        except ValueError as error:
            raise ValueError(f"--max-runtime: {error}") from None
        store = sess.store(tenant_of(job_id))
        sweep = load_sweep(store, job_id)
        if sweep is not None:
            resumed = sweeps.resume_sweep_run(sess.client, store, sweep)
            print_trials(f"{job_id}: resumed", resumed)
            return
        resume_by_id(sess.client, store, job_id, limit)
        console.print(f"{job_id}: resumed (queued)", highlight=False)


@app.command()
def download(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    dest: Annotated[Path, typer.Argument(help="Local directory for the model files.")],
) -> None:
    """Download the job's committed model and results."""
    with session() as sess:
        store = sess.store(tenant_of(job_id))
        record = load_record(store, job_id)
        if record is None or record.model_key is None:
            state = record.state.value if record else "unknown"
            raise LookupError(f"{job_id} has no committed model yet (state: {state})")
        files = store.download_dir(record.model_key, dest)
        console.print(f"downloaded {len(files)} files to {dest}", highlight=False)


def main() -> None:
    app()
