"""Airflow's plugin loader finds the Trainyard plugin in plugins/ and mounts the web app."""

from __future__ import annotations

from pathlib import Path

import trainyard_web
from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse
from airflow.plugins_manager import _load_plugins_from_plugin_directory
from fastapi.routing import APIRoute

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def test_the_loader_finds_the_plugin_and_its_web_app() -> None:
    plugins, errors = _load_plugins_from_plugin_directory(plugins_folder=str(PLUGINS))
    assert errors == {}
    [plugin] = plugins  # trainyard_web.py is in .airflowignore: it is the plugin's module
    assert plugin.name == "trainyard"
    [mounted] = plugin.fastapi_apps
    assert mounted["url_prefix"] == "/trainyard"
    assert mounted["app"] is trainyard_web.app
    paths = {route.path for route in trainyard_web.app.routes if isinstance(route, APIRoute)}
    assert {
        "/api/tenants/{tenant}/jobs",
        "/api/tenants/{tenant}/jobs/{job_id}",
        "/api/tenants/{tenant}/data-events",
        "/tenants/{tenant}/jobs",
        "/tenants/{tenant}/jobs/{job_id}",
    } <= paths


def test_the_page_is_in_airflows_navigation() -> None:
    plugins, _ = _load_plugins_from_plugin_directory(plugins_folder=str(PLUGINS))
    [view] = plugins[0].external_views
    shown = ExternalViewResponse.model_validate(view)  # as Airflow's UI gets it
    assert (shown.destination, shown.url_route, shown.href) == ("nav", "trainyard", "/trainyard/")
    assert shown.icon is not None
    icon = PLUGINS / "trainyard_static" / shown.icon.removeprefix("/trainyard/static/")
    assert icon.read_text().startswith("<svg")
