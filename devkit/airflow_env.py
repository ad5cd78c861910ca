"""Airflow settings shared by `make demo` and the end-to-end tests.

Both run Airflow from a private AIRFLOW_HOME on loopback ports with the admin password the
caller gives (the demo generates one; the tests' throwaway deployments use a known one), so the
CLI can log in without reading generated files. The auth manager is a deployment choice: the
simple auth manager (one admin) or FAB's (users, tenant roles; the demo and the production
configuration), whose users `create_user` adds after `airflow db migrate`. Files holding
secrets are written readable by their owner only (`write_private`).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from devkit.metadata_db import SWEEPS_DATABASE
from operators.deployment.auth_managers import AUTH_MANAGERS, AuthManagerName
from trainyard.storage.config import S3StorageConfig
from trainyard.tenancy.config import load_config
from trainyard.tenancy.names import storage_connection_id

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Trainyard's cluster policies (the learner's pool admission); Airflow imports
#: `airflow_local_settings` from `$AIRFLOW_HOME/config`.
LOCAL_SETTINGS = REPO_ROOT / "config" / "airflow_local_settings.py"

#: Sized for a burst of submitters on one machine (bench/RESULTS.md, "control plane"): API
#: server processes (each serves requests from a thread pool), task processes of the
#: LocalExecutor, and each component's DB connection pool (sync and async engines alike);
#: `metadata_db.MAX_CONNECTIONS` holds every pool at its fullest.
API_WORKERS = 2
PARALLELISM = 32
DB_POOL_SIZE = 5
DB_MAX_OVERFLOW = 10
#: The connection `trainyard_api` (operators/hooks/airflow_api.py) as the components read it.
API_CONNECTION_VARIABLE = "AIRFLOW_CONN_TRAINYARD_API"
#: The connection `trainyard_sweeps` (operators/hooks/sweeps.py).
SWEEPS_CONNECTION_VARIABLE = "AIRFLOW_CONN_TRAINYARD_SWEEPS"


def airflow_environment(
    airflow_home: Path,
    *,
    api_port: int,
    log_server_port: int,
    trigger_log_server_port: int,
    trainyard_config: Path,
    username: str = "admin",
    password: str = "admin",
    database_url: str,
    auth_manager: AuthManagerName = "simple",
    celery_broker_url: str | None = None,
) -> dict[str, str]:
    """Return the environment variables that configure an Airflow installation for Trainyard.

    With the simple auth manager, writes its password file so `username` logs in with
    `password`; with FAB, that user is created by `create_user` once the database exists.
    Links Trainyard's cluster policies into `<airflow_home>/config`. `database_url` is the
    PostgreSQL metadata DB: the embedded default's own server (`metadata_db.start_postgres`),
    or the production one. The LocalExecutor runs the tasks unless `celery_broker_url`
    (Redis) selects the CeleryExecutor, whose workers then run them (`airflow celery worker`).
    """
    airflow_home.mkdir(parents=True, exist_ok=True)
    local_settings = airflow_home / "config" / LOCAL_SETTINGS.name
    local_settings.parent.mkdir(exist_ok=True)
    local_settings.unlink(missing_ok=True)
    local_settings.symlink_to(LOCAL_SETTINGS)
    secret_file = airflow_home / "trainyard-secrets.json"
    if not secret_file.exists():
        write_private(
            secret_file,
            json.dumps({"jwt": secrets.token_urlsafe(32), "api": secrets.token_urlsafe(32)}),
        )
    secret_file.chmod(0o600)
    shared_secrets = json.loads(secret_file.read_text())
    api_url = f"http://127.0.0.1:{api_port}"
    env = {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGERS[auth_manager],
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__SECRET_KEY": shared_secrets["api"],
        "AIRFLOW__API_AUTH__JWT_SECRET": shared_secrets["jwt"],
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_server_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_log_server_port),
        # New DAG files and tenants show up within seconds, not minutes.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
        # The scheduler notices a finished task (and a new run) on its next loop; idle, it
        # sleeps this long between loops (default 1 s). Every run has six task hand-overs, so
        # this was ~5 s of each job's fixed overhead. At 0.1 s the idle scheduler's CPU use
        # stayed within the noise of measuring it (10-20 % of a core either way, with its
        # LocalExecutor workers; bench/RESULTS.md). No timeout depends on it.
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.1",
        # After a worker or scheduler crash, its tasks are retried within ~30 s, not 5 min: a
        # scheduler missing heartbeats for 15 s counts as dead and its tasks are reset.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "15",
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
        "TRAINYARD_CONFIG": str(trainyard_config),
        # The REST API for the max_queued deadline's callback in the triggerer
        # (operators/hooks/airflow_api.py).
        API_CONNECTION_VARIABLE: json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": api_port,
                "login": username,
                "password": password,
            }
        ),
        "TRAINYARD_API_URL": api_url,
        "TRAINYARD_USERNAME": username,
        "TRAINYARD_PASSWORD": password,
    }
    env.update(_metadata_db(database_url, celery_broker_url))
    env[SWEEPS_CONNECTION_VARIABLE] = sweeps_connection(database_url)
    if auth_manager == "simple":
        passwords_file = airflow_home / "simple_auth_manager_passwords.json"
        write_private(passwords_file, json.dumps({username: password}))
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = f"{username}:admin"
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(passwords_file)
    return env


def tenant_storage_keys(env: Mapping[str, str]) -> set[str]:
    """The variables of `env` that hold a tenant's storage keys: each S3 tenant's
    `<credentials_env>_ACCESS_KEY`/`_SECRET_KEY` and its connection `AIRFLOW_CONN_<ID>`."""
    config = load_config(Path(env["TRAINYARD_CONFIG"]))
    names = set()
    for tenant in config.tenants:
        if isinstance(tenant.storage, S3StorageConfig):
            prefix = tenant.storage.credentials_env
            names |= {f"{prefix}_ACCESS_KEY", f"{prefix}_SECRET_KEY"}
            names.add(f"AIRFLOW_CONN_{storage_connection_id(tenant.name).upper()}")
    return names & env.keys()


def api_server_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The API server's environment: the components' without any tenant's storage keys,
    without the platform user of `trainyard_api` (the server needs no client of itself) and
    without `trainyard_sweeps` (only tasks and the triggerer search; a page reads a sweep's
    record). Its web plugin opens a tenant's storage with the keys of the tenant's connection
    in the metadata DB (`trainyard tenants sync` wrote it); the tasks read their own
    environment."""
    keys = tenant_storage_keys(env) | {API_CONNECTION_VARIABLE, SWEEPS_CONNECTION_VARIABLE}
    return {name: value for name, value in env.items() if name not in keys}


def sweeps_connection(database_url: str) -> str:
    """The connection `trainyard_sweeps` (JSON) to the sweeps' database on the metadata DB's
    server: the same host (or unix socket directory), port and user."""
    url = make_url(database_url)
    host = url.host or str(url.query.get("host", ""))
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": host,
            "port": url.port,
            "login": url.username,
            "password": url.password,
            "schema": SWEEPS_DATABASE,
        }
    )


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable by its owner only (mode 0600), from its
    creation on: no moment when others could read it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), 0o600)  # an existing file keeps its mode otherwise
        file.write(text)


#: The setting that names the metadata DB (a deployment's environment holds its URL).
DATABASE_URL = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"


def _metadata_db(database_url: str, celery_broker_url: str | None) -> dict[str, str]:
    """Settings of the metadata DB and the executor."""
    db = {
        DATABASE_URL: database_url,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": str(DB_POOL_SIZE),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": str(DB_MAX_OVERFLOW),
        "AIRFLOW__API__WORKERS": str(API_WORKERS),
        "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
    }
    if celery_broker_url is None:
        return {**db, "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    return {
        **db,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": celery_broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{database_url}",
    }


def create_user(env: Mapping[str, str], username: str, password: str, role: str) -> None:
    """Add a FAB user with one role (`airflow users create`); the role must exist."""
    subprocess.run(
        [
            "airflow",
            "users",
            "create",
            # --password=...: a generated password may start with "-", like an option.
            *("--username", username, f"--password={password}", "--role", role),
            *("--email", f"{username}@trainyard.invalid", "--firstname", username),
            *("--lastname", "Trainyard"),
        ],
        env=dict(env),
        check=True,
        capture_output=True,
    )


#: The components whose health `airflow_healthy` requires.
HEALTH_PARTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def airflow_unhealthy(api_url: str) -> list[str]:
    """The components that do not report healthy through the API server (["api-server"] when
    it does not answer), each with the status it reports."""
    try:
        health = httpx.get(f"{api_url}/api/v2/monitor/health", timeout=2).json()
    except (httpx.HTTPError, ValueError) as error:
        return [f"api-server ({type(error).__name__})"]
    return [
        f"{part} ({health.get(part)})"
        for part in HEALTH_PARTS
        if health.get(part, {}).get("status") != "healthy"
    ]


def airflow_healthy(api_url: str) -> bool:
    """Whether every Airflow component reports healthy through the API server."""
    return not airflow_unhealthy(api_url)


def wait_for_dags(env: Mapping[str, str], dag_ids: list[str], timeout: float = 180) -> None:
    """Block until the DAG processor has serialised every DAG in `dag_ids`.

    Raises:
        TimeoutError: naming the DAGs that did not appear.
    """
    deadline = time.monotonic() + timeout
    while True:
        listing = subprocess.run(
            ["airflow", "dags", "list", "-o", "plain"],
            env=dict(env),
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        missing = [dag_id for dag_id in dag_ids if dag_id not in listing]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"DAGs {missing} were not parsed within {timeout:.0f} s")
        time.sleep(2)
