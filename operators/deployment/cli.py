"""`trainyard tenants`: the Airflow objects of every tenant (roles, pools, connections).

The `trainyard` CLI is core and never imports the Airflow layer; it finds this command group
through the `trainyard.cli` entry point group (pyproject.toml), see `trainyard.cli.groups`.
Importing this module stays light: the sync (and Airflow's models) load when the command runs.
"""

from __future__ import annotations

import json
import sys
from contextlib import redirect_stdout
from typing import Annotated

import typer
from rich.table import Table

from trainyard.cli.session import console, errors
from trainyard.storage.config import S3StorageConfig
from trainyard.tenancy.config import ConfigError, UnknownTenantError, load_config
from trainyard.tenancy.storage_policy import tenant_storage_policy

app = typer.Typer(
    help="Tenants' Airflow objects: roles, pools, storage connections, variables.",
    no_args_is_help=True,
)


@app.command("sync")
def tenants_sync(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Create or update each tenant's role, pools, storage connection and the tenants variable.

    Run it where Airflow runs (its AIRFLOW_HOME or database settings, and the tenants' storage
    credentials in the environment): after `airflow db migrate`, before the DAG processor
    starts, and whenever the config changes. A second run changes nothing. The keys of an S3
    tenant need the policy `trainyard tenants policy TENANT` prints, and no more.
    """
    try:
        # Airflow logs to stdout (import-time warnings included): keep stdout for the report.
        with redirect_stdout(sys.stderr):
            # Imports Airflow's models: only this command pays for it.
            from operators.deployment.tenant_sync import Outcome, sync_tenants

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


@app.command("policy")
def tenants_policy(
    tenant: Annotated[str, typer.Argument(help="A tenant with s3 storage.")],
) -> None:
    """Print the IAM/MinIO policy its storage keys need: its own bucket or prefix, nothing else.

    Attach it to the tenant's MinIO user (`mc admin policy create ALIAS trainyard-TENANT
    policy.json`, `mc admin policy attach ALIAS trainyard-TENANT --user USER`); `tenants sync`
    puts that user's keys in the tenant's storage connection.
    """
    try:
        storage = load_config().tenant(tenant).storage
    except (ConfigError, UnknownTenantError) as error:
        errors.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(2) from error
    if not isinstance(storage, S3StorageConfig):
        errors.print(
            f"[red]error:[/red] tenant {tenant!r} has local storage: no keys, no policy",
            highlight=False,
        )
        raise typer.Exit(2)
    typer.echo(json.dumps(tenant_storage_policy(storage), indent=2))
