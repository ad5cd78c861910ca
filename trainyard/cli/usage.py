"""`trainyard usage`: what each tenant's jobs used and what faults cost them
(`trainyard.jobs.accounting`), for the tenants the user may see."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from trainyard.cli.session import AccessDenied, console, session
from trainyard.jobs.accounting import (
    JobAccount,
    TenantUsage,
    store_accounts,
    usage_by_tenant,
    window_start,
)
from trainyard.jobs.progress import format_duration

#: The columns of `--csv`, one row a tenant (lost hours by class as `class=hours;...`).
CSV_COLUMNS = (
    "tenant",
    "jobs",
    "learner_hours",
    "gpu_hours",
    "cpu_hours",
    "gpu_hours_used",
    "cpu_hours_used",
    "goodput",
    "lost_hours_by_class",
    "retries_by_class",
    "mean_queue_s",
)


def _pairs(values: object) -> str:
    items = values.items() if isinstance(values, dict) else []
    return ";".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in items
    )


def as_csv(usage: dict[str, TenantUsage]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for summary in usage.values():
        row = summary.as_json()
        for column in ("jobs", "lost_hours_by_class", "retries_by_class"):
            row[column] = _pairs(row[column])
        writer.writerow(row)
    return out.getvalue()


def usage(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only jobs created in this window, such as 7d or 12h.")
    ] = None,
    as_csv_: Annotated[bool, typer.Option("--csv", help="Print CSV, one row a tenant.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON, one object a tenant.")
    ] = False,
) -> None:
    """Per tenant: jobs by final state, GPU/CPU hours held and used, goodput, time lost by
    failure class, mean queue time (all tenants: those the user may see)."""
    with session() as sess:
        start = window_start(since, datetime.now(UTC))
        tenants = [tenant] if tenant else sess.config.tenant_names
        jobs: list[JobAccount] = []
        for name in tenants:
            try:
                jobs.extend(store_accounts(sess.store(name), start))
            except AccessDenied:
                if tenant:
                    raise
        found = usage_by_tenant(jobs)
        if as_json:
            typer.echo(json.dumps([summary.as_json() for summary in found.values()], indent=2))
            return
        if as_csv_:
            typer.echo(as_csv(found), nl=False)
            return
        table = Table(box=None, pad_edge=False)
        for column in ("tenant", "jobs", "GPU h", "CPU h", "goodput", "lost", "queue"):
            table.add_column(column, overflow="fold")
        for summary in found.values():
            lost = summary.lost_s_by_class
            table.add_row(
                summary.tenant,
                _pairs(dict(sorted(summary.jobs.items()))).replace(";", " "),
                f"{summary.gpu_hours:.2f}",
                f"{summary.cpu_hours:.2f}",
                f"{summary.goodput:.0%}" if summary.goodput is not None else "",
                " ".join(f"{k}={format_duration(v)}" for k, v in sorted(lost.items())),
                format_duration(summary.mean_queue_s) if summary.mean_queue_s is not None else "",
            )
        console.print(table)
