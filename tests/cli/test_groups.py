"""Command groups of other layers join the core CLI through the `trainyard.cli` entry points."""

from __future__ import annotations

import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from trainyard.cli import groups

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def declared() -> list[EntryPoint]:
    """The `trainyard.cli` entry points as pyproject.toml declares them (what an install gets)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return [
        EntryPoint(name=name, value=value, group=groups.ENTRY_POINT_GROUP)
        for name, value in project["entry-points"][groups.ENTRY_POINT_GROUP].items()
    ]


def test_the_airflow_layer_declares_the_tenants_group() -> None:
    assert [(ep.name, ep.value) for ep in declared()] == [
        ("tenants", "operators.deployment.cli:app")
    ]


def test_declared_groups_are_added_and_an_unimportable_one_is_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = EntryPoint(name="missing", value="no_such_layer.cli:app", group="trainyard.cli")
    monkeypatch.setattr(groups, "entry_points", lambda group: [*declared(), missing])
    app = typer.Typer(no_args_is_help=True)

    @app.command()
    def version() -> None:
        """A root command, so that typer keeps the groups as subcommands."""

    groups.add_installed_groups(app)

    result = CliRunner().invoke(app, ["tenants", "--help"])
    assert result.exit_code == 0, result.output
    assert "sync" in result.output
    assert "missing" not in CliRunner().invoke(app, ["--help"]).output
