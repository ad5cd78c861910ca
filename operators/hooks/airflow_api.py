"""Airflow's own REST API, for platform work that runs where there is no metadata DB: the
`max_queued` deadline's callback runs in the triggerer (operators/deployment/deadlines.py)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from trainyard.cli.client import AirflowClient, ApiSettings
from trainyard.failures import PlatformFault


class AirflowApiHook(BaseHook):
    """A client of the REST API with the credentials of the connection `trainyard_api`
    (conn type http: host and port of the API server, login and password of a user who may
    end any tenant's runs). The embedded default sets it (`AIRFLOW_CONN_TRAINYARD_API`)."""

    conn_name_attr = "conn_id"
    default_conn_name = "trainyard_api"
    conn_type = "http"
    hook_name = "Trainyard: Airflow REST API"

    def __init__(self, conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def get_client(self) -> AirflowClient:
        """Raises PlatformFault when the connection is missing or lacks its credentials."""
        fix = (
            f"the platform admin sets the Airflow connection {self.conn_id} (conn type http: "
            "the API server's host and port, a platform user's login and password)"
        )
        try:
            connection = self.get_connection(self.conn_id)
        except AirflowNotFoundException as missing:
            raise PlatformFault(f"no Airflow connection {self.conn_id!r}", fix) from missing
        if not (connection.host and connection.login and connection.password):
            raise PlatformFault(
                f"the connection {self.conn_id!r} lacks its host, login or password", fix
            )
        # As the http provider reads an http connection: schema (or conn type) https for TLS.
        scheme = "https" if "https" in (connection.schema, connection.conn_type) else "http"
        port = f":{connection.port}" if connection.port else ""
        return AirflowClient(
            ApiSettings(
                url=f"{scheme}://{connection.host}{port}",
                username=connection.login,
                password=connection.password,
            )
        )
