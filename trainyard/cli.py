"""`trainyard`: submit and follow training jobs from a terminal.

Talks to Airflow's REST API v2 (TRAINYARD_API_URL, TRAINYARD_USERNAME, TRAINYARD_PASSWORD) and
to the tenant's storage as declared in the deployment config (TRAINYARD_CONFIG). Airflow decides
who may do what: before touching a tenant's storage, a command checks that Airflow lets the user
read the tenant's training DAG.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from trainyard.client import AirflowClient, ApiError, ApiSettings
from trainyard.config import (
    ConfigError,
    TrainyardConfig,
    UnknownTenantError,
    check_manifest_for_tenant,
    dag_id_for_tenant,
    load_config,
)
from trainyard.failures import TrainyardFailure
from trainyard.jobs import JobLayout, job_id_for_run, new_job_id, tenant_of
from trainyard.manifest import ManifestError, confine_storage_path, parse_manifest
from trainyard.packaging import PackagingError, is_archive, unpack_archive, upload_directory
from trainyard.records import JobState, load_record, save_record
from trainyard.registry import ModelRegistry, ModelVersion, parse_version
from trainyard.status import TERMINAL_STATES, JobStatus, job_status, read_metrics
from trainyard.storage import ObjectStore, StorageError, open_store
from trainyard.tenancy import check_quota, tenant_role

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Manage data in a tenant's storage.", no_args_is_help=True)
app.add_typer(data_app, name="data")
tenants_app = typer.Typer(
    help="Tenants' Airflow objects: roles, pools, storage connections, variables.",
    no_args_is_help=True,
)
app.add_typer(tenants_app, name="tenants")
models_app = typer.Typer(
    help="Model versions of a job, and which one is in production.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
console = Console()
errors = Console(stderr=True)

#: Task order of the training DAG, for logs.
TASKS = ("validate", "stage_data", "learner", "commit", "evaluate")
POLL_SECONDS = 2.0


class AccessDenied(ApiError):
    """Airflow does not let the user see the tenant: no command may touch its storage."""


class Session:
    """The config, API client and stores one command needs, created on first use."""

    def __init__(self) -> None:
        self.config: TrainyardConfig = load_config()
        self.client = AirflowClient(ApiSettings.from_env())
        self._stores: dict[str, ObjectStore] = {}
        self._allowed: set[str] = set()

    def check_access(self, tenant: str) -> None:
        """Raise AccessDenied unless Airflow lets the user read the tenant's training DAG.

        The CLI reaches tenant storage with the credentials of its environment, which Airflow
        does not see: this is where the user's own rights (a tenant role, or platform admin)
        are checked first.
        """
        self.config.tenant(tenant)
        if tenant in self._allowed:
            return
        dag_id = dag_id_for_tenant(tenant)
        user = self.client.settings.username
        try:
            self.client.get_dag(dag_id)
        except ApiError as error:
            if error.status_code in (401, 403):
                raise AccessDenied(
                    error.status_code,
                    f"access denied: user {user!r} may not use tenant {tenant!r} (Airflow "
                    f"refused its DAG {dag_id}: {error.status_code}); a platform admin can "
                    f"grant the role {tenant_role(tenant)}",
                ) from error
            if error.status_code == 404:
                raise AccessDenied(
                    404,
                    f"tenant {tenant!r} has no DAG {dag_id} in Airflow yet, so access cannot "
                    "be checked: is the DAG processor running?",
                ) from error
            raise
        self._allowed.add(tenant)

    def store(self, tenant: str) -> ObjectStore:
        """The tenant's storage, once Airflow has confirmed the user's access to the tenant."""
        if tenant not in self._stores:
            self.check_access(tenant)
            self._stores[tenant] = open_store(self.config.tenant(tenant).storage)
        return self._stores[tenant]

    def status(self, job_id: str) -> JobStatus:
        return job_status(self.client, self.store(tenant_of(job_id)), job_id)


@contextmanager
def session() -> Iterator[Session]:
    """A Session whose expected failures end the command with a readable message."""
    current: Session | None = None
    try:
        current = Session()
        yield current
    except (ManifestError, PackagingError, ConfigError, ValueError, LookupError) as error:
        errors.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(2) from error
    except UnknownTenantError as error:
        errors.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(2) from error
    except TrainyardFailure as failure:
        errors.print(
            f"[red]error ({failure.failure_class.value}):[/red] {failure.cause}. "
            f"Fix: {failure.fix}",
            highlight=False,
        )
        raise typer.Exit(2) from failure
    except (ApiError, StorageError) as error:
        errors.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(1) from error
    finally:
        if current is not None:
            current.client.close()


def describe(status: JobStatus) -> str:
    """The state in a few words: 'running (attempt 2, step 340)'."""
    details = []
    if status.attempt:
        details.append(f"attempt {status.attempt}")
    if status.step is not None:
        details.append(f"step {status.step}")
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
    if status.progress is not None:
        console.print(f"  progress: {status.progress:.0%}")
    if status.evaluation:
        metrics = ", ".join(f"{k} = {_cell(v)}" for k, v in sorted(status.evaluation.items()))
        console.print(f"  evaluation: {metrics}", highlight=False)
    if status.model:
        console.print(f"  model: {status.model}", highlight=False)
    if status.model_version is not None:
        manifest_name = status.job_id.split(".")[1]
        console.print(
            f"  version: v{status.model_version} "
            f"(trainyard models show {manifest_name} {status.model_version} "
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
    """Validate a job manifest, package its code and start the job. Prints the job id."""
    with session() as sess:
        manifest = parse_manifest(manifest_file.read_text())
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
        sess.client.trigger_run(dag_id_for_tenant(tenant.name), job_id, {"manifest": document})
        typer.echo(job_id)
        if wait:
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
    for task_id in TASKS:
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
) -> None:
    """Print the metric rows the learners reported, step by step."""
    with session() as sess:
        rows = read_metrics(sess.store(tenant_of(job_id)), job_id)
        if tail:
            rows = rows[-tail:]
        if as_json:
            for row in rows:
                typer.echo(json.dumps(row))
            return
        columns = list(dict.fromkeys(key for row in rows for key in row))
        table = Table(*columns)
        for row in rows:
            table.add_row(*(_cell(row.get(column), column) for column in columns))
        console.print(table)


def _cell(value: Any, column: str = "") -> str:
    if value is None:
        return ""
    if column == "time" and isinstance(value, int | float):  # a Unix timestamp
        return datetime.fromtimestamp(value, UTC).strftime("%H:%M:%S")
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command("list")
def list_jobs(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's jobs.")] = None,
) -> None:
    """List recent jobs with their Airflow state (all tenants: those the user may see)."""
    with session() as sess:
        tenants = [tenant] if tenant else sess.config.tenant_names
        rows = []
        for name in tenants:
            try:
                sess.check_access(name)
            except AccessDenied:
                if tenant:
                    raise
                continue
            for run in sess.client.list_runs(dag_id_for_tenant(name)):
                job_name = (run.get("conf") or {}).get("manifest", {}).get("name", "job")
                started = (run.get("start_date") or "")[:19].replace("T", " ")
                job_id = job_id_for_run(name, str(job_name), run["dag_run_id"])
                rows.append((job_id, name, run["state"], started))
        table = Table(box=None)
        # Job ids are what people copy into the next command: never cut them short.
        table.add_column(
            "job id", no_wrap=True, min_width=max((len(r[0]) for r in rows), default=6)
        )
        for column in ("tenant", "state", "started (UTC)"):
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        console.print(table)


@app.command()
def cancel(job_id: Annotated[str, typer.Argument(help="The job id.")]) -> None:
    """Stop a job: learners get SIGTERM and commit a final checkpoint; the job ends cancelled."""
    with session() as sess:
        store = sess.store(tenant_of(job_id))
        record = load_record(store, job_id)
        if record is None:
            raise LookupError(f"no job record for {job_id!r}: is the job id right?")
        if record.state in TERMINAL_STATES:
            raise ValueError(f"{job_id} already ended ({record.state.value}); nothing to cancel")
        record.cancel_requested = True
        save_record(store, record)
        sess.client.set_run_state(record.dag_id, record.dag_run_id, "failed")
        record.state = JobState.CANCELLED
        save_record(store, record)
        console.print(f"{job_id}: cancelled", highlight=False)


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


@data_app.command("upload")
def data_upload(
    local_dir: Annotated[Path, typer.Argument(help="Local directory to upload.")],
    path: Annotated[str, typer.Argument(help="Destination in the tenant's storage.")],
    tenant: Annotated[str, typer.Option(help="The tenant whose storage receives the data.")],
) -> None:
    """Upload a directory (a dataset, or code for code.uri) to the tenant's storage."""
    with session() as sess:
        prefix = confine_storage_path(path)
        store = sess.store(tenant)
        keys = upload_directory(store, local_dir, prefix, "LOCAL_DIR")
        console.print(f"uploaded {len(keys)} files to {store.describe()}/{prefix}", highlight=False)
        announce_new_data(sess, tenant, prefix, len(keys))


def announce_new_data(sess: Session, tenant: str, prefix: str, files: int) -> None:
    """Record an asset event for every data trigger watching `prefix` (or a folder above it).

    Goes through the Trainyard plugin, which lets a tenant's users post events for their own
    tenant's assets only. The data is safely stored either way; without Airflow, no retraining
    starts, and we say so.
    """
    try:
        triggered = sess.client.record_data_event(tenant, prefix, files)
    except (ApiError, httpx.HTTPError) as error:
        errors.print(
            f"[yellow]warning:[/yellow] could not tell Airflow about the new data ({error}); "
            "jobs scheduled on it will not start until data is uploaded again",
            highlight=False,
        )
        return
    for uri in triggered:
        console.print(f"new data event for {uri}: scheduled jobs on it will start")


@tenants_app.command("sync")
def tenants_sync(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Create or update each tenant's role, pools, storage connection and the tenants variable.

    Run it where Airflow runs (its AIRFLOW_HOME or database settings, and the tenants' storage
    credentials in the environment): after `airflow db migrate`, before the DAG processor
    starts, and whenever the config changes. A second run changes nothing.
    """
    try:
        # Airflow logs to stdout (import-time warnings included): keep stdout for the report.
        with redirect_stdout(sys.stderr):
            # Imports Airflow's models: only this command pays for it.
            from trainyard.tenant_sync import Outcome, sync_tenants

            report = sync_tenants(load_config())
    except (ConfigError, RuntimeError) as error:
        errors.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(2) from error
    if as_json:
        typer.echo(json.dumps(report.as_dicts(), indent=2))
        return
    table = Table("kind", "name", "result", "detail", box=None)
    for change in report.changes:
        table.add_row(change.kind, change.name, change.outcome.value, change.detail)
    console.print(table)
    counts = {o: sum(1 for c in report.changes if c.outcome is o) for o in Outcome}
    console.print(", ".join(f"{n} {o.value}" for o, n in counts.items() if n), highlight=False)


JobNameArgument = Annotated[str, typer.Argument(help="The job's name (the manifest's name).")]
TenantOption = Annotated[str, typer.Option(help="The tenant the job belongs to.")]


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@models_app.command("list")
def models_list(job_name: JobNameArgument, tenant: TenantOption) -> None:
    """List a job's model versions, oldest first; the production one is marked."""
    with session() as sess:
        registry = ModelRegistry(sess.store(tenant), job_name)
        versions = registry.versions()
        if not versions:
            console.print(f"job {job_name!r} of tenant {tenant!r} has no model versions yet")
            return
        pointer = registry.production_pointer()
        table = Table(box=None)
        for column in ("version", "status", "metric", "value", "created (UTC)"):
            table.add_column(column)
        table.add_column("job id", no_wrap=True, min_width=max(len(v.job_id) for v in versions))
        table.add_column("production")
        for version in versions:
            marker = ""
            if pointer is not None and pointer.version == version.version:
                marker = "yes (manual)" if pointer.manual else "yes"
            table.add_row(
                f"v{version.version}",
                version.status,
                version.metric,
                _cell(version.value),
                _when(version.created_at),
                version.job_id,
                marker,
            )
        # Wider than the terminal rather than squeeze cells: ids are copied from here.
        needed = Measurement.get(console, console.options.update_width(1 << 16), table).maximum
        Console(width=max(console.width, needed)).print(table)


def _print_version(registry: ModelRegistry, version: ModelVersion) -> None:
    pointer = registry.production_pointer()
    live = ""
    if pointer is not None and pointer.version == version.version:
        how = "manually, " if pointer.manual else ""
        live = f", in production ({how}since {_when(pointer.promoted_at)} UTC)"
    lineage = version.lineage
    lines = [
        f"{registry.job_name} v{version.version}: {version.status}{live}",
        f"  reason: {version.reason or '-'}",
        f"  {version.metric or 'metric'}: {_cell(version.value) or '-'}",
        "  metrics: " + ", ".join(f"{k} = {_cell(v)}" for k, v in sorted(version.metrics.items())),
        f"  job id: {version.job_id} (Airflow run {lineage.airflow_run_id})",
        f"  created: {_when(version.created_at)} UTC",
        f"  model: {registry.store.describe()}/{registry.model_prefix(version.version)}",
        f"  code: {lineage.code_digest}",
        f"  data: {lineage.data_digest or '-'}",
        f"  framework: {lineage.framework}" + (f", image {lineage.image}" if lineage.image else ""),
        f"  parent checkpoint: {_cell(lineage.parent_checkpoint) or '-'}",
    ]
    if lineage.data_validation is not None:
        lines.append(f"  data expectations: {json.dumps(lineage.data_validation, sort_keys=True)}")
    if lineage.timings:
        timings = ", ".join(f"{k} {v:g} s" for k, v in lineage.timings.items())
        lines.append(f"  timings: {timings}")
    for line in lines:
        # soft_wrap: digests and keys stay on one line, whole, to be copied.
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@models_app.command("show")
def models_show(
    job_name: JobNameArgument,
    tenant: TenantOption,
    version: Annotated[
        str | None, typer.Argument(help="The version (3 or v3); default: the production one.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print version.json.")] = False,
) -> None:
    """Show a model version: metrics, status and the reason for it, lineage."""
    with session() as sess:
        registry = ModelRegistry(sess.store(tenant), job_name)
        if version is None:
            chosen = registry.production()
            if chosen is None:
                raise LookupError(
                    f"job {job_name!r} of tenant {tenant!r} has no production version yet; "
                    f"`trainyard models list {job_name} --tenant {tenant}` shows its versions"
                )
        else:
            chosen = registry.get(parse_version(version))
        if as_json:
            typer.echo(chosen.model_dump_json(indent=2))
        else:
            _print_version(registry, chosen)


@models_app.command("promote")
def models_promote(
    job_name: JobNameArgument,
    version: Annotated[str, typer.Argument(help="The version to put in production (3 or v3).")],
    tenant: TenantOption,
    reason: Annotated[
        str, typer.Option(help="Why, for the record (stored in the version and the pointer).")
    ] = "manual override",
) -> None:
    """Put a version in production whatever the evaluation gate said; recorded as manual."""
    with session() as sess:
        registry = ModelRegistry(sess.store(tenant), job_name)
        before = registry.production_pointer()
        promoted = registry.promote(parse_version(version), reason)
        was = f" (was v{before.version})" if before is not None else ""
        console.print(f"{job_name} v{promoted.version} is now in production{was}", highlight=False)


def main() -> None:
    app()
