"""`trainyard data`: data in a tenant's storage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import httpx
import typer

from trainyard.cli.client import ApiError
from trainyard.cli.session import Session, console, errors, session
from trainyard.data.packaging import upload_directory
from trainyard.manifest.schema import confine_storage_path

app = typer.Typer(help="Manage data in a tenant's storage.", no_args_is_help=True)


@app.command("upload")
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
