"""`trainyard models`: a job's model versions, and which one is in production."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from trainyard.cli.session import console, format_cell, session
from trainyard.jobs.registry import ModelRegistry, ModelVersion, parse_version
from trainyard.limits import shorten

app = typer.Typer(
    help="Model versions of a job, and which one is in production.", no_args_is_help=True
)


JobNameArgument = Annotated[str, typer.Argument(help="The job's name (the manifest's name).")]
TenantOption = Annotated[str, typer.Option(help="The tenant the job belongs to.")]


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command("list")
def models_list(job_name: JobNameArgument, tenant: TenantOption) -> None:
    """List a job's model versions, oldest first; the production one is marked."""
    with session() as sess:
        registry = ModelRegistry(sess.store(tenant), job_name)
        versions = registry.versions()
        if not versions:
            console.print(f"job {shorten(job_name)} of tenant {tenant!r} has no model versions yet")
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
                format_cell(version.value),
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
        f"  {version.metric or 'metric'}: {format_cell(version.value) or '-'}",
        "  metrics: "
        + ", ".join(f"{k} = {format_cell(v)}" for k, v in sorted(version.metrics.items())),
        f"  job id: {version.job_id} (Airflow run {lineage.airflow_run_id})",
        f"  created: {_when(version.created_at)} UTC",
        f"  model: {registry.store.describe()}/{registry.model_prefix(version.version)}",
        f"  code: {lineage.code_digest}",
        f"  data: {lineage.data_digest or '-'}",
        f"  framework: {lineage.framework}" + (f", image {lineage.image}" if lineage.image else ""),
        f"  parent checkpoint: {format_cell(lineage.parent_checkpoint) or '-'}",
    ]
    if lineage.data_validation is not None:
        lines.append(f"  data expectations: {json.dumps(lineage.data_validation, sort_keys=True)}")
    if lineage.timings:
        timings = ", ".join(f"{k} {v:g} s" for k, v in lineage.timings.items())
        lines.append(f"  timings: {timings}")
    for line in lines:
        # soft_wrap: digests and keys stay on one line, whole, to be copied.
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command("show")
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
                    f"job {shorten(job_name)} of tenant {tenant!r} has no production version yet; "
                    f"`trainyard models list {job_name} --tenant {tenant}` shows its versions"
                )
        else:
            chosen = registry.get(parse_version(version))
        if as_json:
            typer.echo(chosen.model_dump_json(indent=2))
        else:
            _print_version(registry, chosen)


@app.command("promote")
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
