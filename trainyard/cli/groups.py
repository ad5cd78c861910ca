"""Command groups that other installed layers add to the `trainyard` CLI.

The CLI is core: it may not import the Airflow layer, yet `trainyard tenants sync` needs Airflow's
models. Packages declare such groups as entry points of the `trainyard.cli` group (Trainyard's
own in pyproject.toml: `tenants = "operators.deployment.cli:app"`), and the CLI adds each under its
entry point's name. The dependency is then declared where packages are, in the distribution
metadata, not in an import: an install without the Airflow layer simply has no `tenants` group,
and a group whose module cannot be imported there is left out rather than breaking every command.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

import typer

ENTRY_POINT_GROUP = "trainyard.cli"

log = logging.getLogger(__name__)


def add_installed_groups(app: typer.Typer) -> None:
    """Add every command group declared under `trainyard.cli` to `app`, by its entry point name."""
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            group = entry_point.load()
        except ImportError as error:  # the layer is declared but not importable here
            log.debug("command group %s left out: %s", entry_point.name, error)
            continue
        app.add_typer(group, name=entry_point.name)
