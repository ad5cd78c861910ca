"""Where sweeps keep their Optuna studies: the database of the connection `trainyard_sweeps`."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from sqlalchemy.engine import URL

from trainyard.failures import PlatformFault
from trainyard.manifest.sweep import EarlyStoppingRule
from trainyard.storage import ObjectStore
from trainyard.sweeps.record import load_sweep
from trainyard.sweeps.search import SweepSearch
from trainyard.sweeps.trials import trial_of

#: The connection types the studies' database may have, and SQLAlchemy's driver for each.
_DRIVERS = {"postgres": "postgresql+psycopg2", "postgresql": "postgresql+psycopg2"}


class SweepStudyHook(BaseHook):
    """The SQLAlchemy URL of the sweeps' studies: the connection `trainyard_sweeps` (conn type
    postgres: host, or a unix socket directory as the host; login, password, port; the
    database as its schema; or conn type sqlite, the file as its host, where every process
    runs on one machine). The embedded default sets it to a database of its own PostgreSQL
    server (`AIRFLOW_CONN_TRAINYARD_SWEEPS`); docs/deployment.md says what a production one
    needs."""

    conn_name_attr = "conn_id"
    default_conn_name = "trainyard_sweeps"
    conn_type = "postgres"
    hook_name = "Trainyard: sweep studies"

    def __init__(self, conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def storage_url(self) -> str:
        """Raises PlatformFault when the connection is missing or not a PostgreSQL one."""
        fix = (
            f"the platform admin sets the Airflow connection {self.conn_id} (conn type "
            "postgres: host, port, login, password, and the database as its schema)"
        )
        try:
            connection = self.get_connection(self.conn_id)
        except AirflowNotFoundException as missing:
            raise PlatformFault(f"no Airflow connection {self.conn_id!r}", fix) from missing
        if connection.conn_type == "sqlite" and connection.host:  # one machine: tests, trials
            return f"sqlite:///{connection.host}"
        driver = _DRIVERS.get(connection.conn_type or "")
        if driver is None or not connection.schema:
            raise PlatformFault(
                f"the connection {self.conn_id!r} is not a PostgreSQL database "
                f"(conn type {connection.conn_type!r}, schema {connection.schema!r})",
                fix,
            )
        host = connection.host or None
        socket = host is not None and host.startswith("/")
        return URL.create(
            driver,
            username=connection.login or None,
            password=connection.password or None,
            host=None if socket else host,
            port=connection.port or None,
            database=connection.schema,
            query={"host": host} if socket and host else {},
        ).render_as_string(hide_password=False)

    def trial_search(self, store: ObjectStore, job_id: str) -> tuple[SweepSearch, int] | None:
        """The search and trial number of `job_id` when it is a trial whose sweep stops trials
        early (None otherwise): what a trial's learners are watched with."""
        trial = trial_of(job_id)
        if trial is None:
            return None
        sweep_id, number = trial
        sweep = load_sweep(store, sweep_id)
        if sweep is None or sweep.spec.early_stopping.rule is EarlyStoppingRule.NONE:
            return None
        return SweepSearch(sweep.spec, sweep_id, self.storage_url()), number
