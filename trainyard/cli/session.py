"""What every command of the `trainyard` CLI shares: the session (config, API client, stores,
the access check) and the consoles; expected failures end a command with a readable message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console

from trainyard.cli.client import AirflowClient, ApiError, ApiSettings
from trainyard.cli.status import JobStatus, job_status
from trainyard.data.packaging import PackagingError
from trainyard.failures import TrainyardFailure
from trainyard.jobs.layout import tenant_of
from trainyard.manifest.schema import ManifestError
from trainyard.storage import ObjectStore, StorageError, open_store
from trainyard.tenancy.config import ConfigError, TrainyardConfig, UnknownTenantError, load_config
from trainyard.tenancy.names import dag_id_for_tenant, tenant_role

console = Console()
errors = Console(stderr=True)


class AccessDenied(ApiError):
    """Airflow does not let the user see the tenant: no command may touch its storage."""


class Session:
    """The config, API client and stores one command needs, created on first use."""

    def __init__(self) -> None:
        self.config: TrainyardConfig = load_config()
        if warning := self.config.sandbox_warning():
            errors.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
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


def format_cell(value: Any, column: str = "") -> str:
    if value is None:
        return ""
    if column == "time" and isinstance(value, int | float):  # a Unix timestamp
        return datetime.fromtimestamp(value, UTC).strftime("%H:%M:%S")
    return f"{value:.4g}" if isinstance(value, float) else str(value)
