"""The Airflow auth managers Trainyard deploys with, by the name its configs use.

Import-light (no Airflow import): the development harness configures Airflow with these, and
`operators.deployment.tenant_sync` checks which one the deployment runs.
"""

from __future__ import annotations

from typing import Literal

AuthManagerName = Literal["simple", "fab"]
AUTH_MANAGERS: dict[AuthManagerName, str] = {
    "simple": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    "fab": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
}
