"""Real Airflow for end-to-end tests: scheduler, dag-processor, API server and triggerer.

Each component is its own process in a temporary AIRFLOW_HOME (the embedded default's private
PostgreSQL server there and the LocalExecutor, or the production configuration's external
PostgreSQL and CeleryExecutor with a Celery worker), so a
test can kill one and start it again, as a crash and a restart would. Before the components
start, the deployment is prepared as production prepares it: database migrated, (with FAB) the
admin created, `trainyard tenants sync` run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from devkit.airflow_env import (
    REPO_ROOT,
    airflow_environment,
    airflow_unhealthy,
    api_server_environment,
    create_user,
)
from devkit.metadata_db import start_postgres, stop_postgres
from operators.deployment.auth_managers import AuthManagerName

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
BIN_DIR = Path(sys.executable).parent
START_TIMEOUT_SECONDS = 120


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: all sockets stay bound until every port is chosen."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class AirflowCluster:
    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def api_url(self) -> str:
        return self.env["TRAINYARD_API_URL"]

    def log_path(self, component: str) -> Path:
        return self.home / f"{component}.log"

    def start(self, component: str) -> None:
        """Start `component`; the API server without any tenant's storage keys."""
        env = api_server_environment(self.env) if component == "api-server" else self.env
        with self.log_path(component).open("ab") as log:
            self.processes[component] = subprocess.Popen(
                [str(BIN_DIR / "airflow"), *component.split()],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self, component: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill a component's whole process group, as a crashed container would die."""
        process = self.processes.pop(component)
        os.killpg(process.pid, sig)
        process.wait(timeout=60)

    def wait_healthy(self, *, restart_exited: bool = False) -> None:
        """Wait until Airflow is healthy; a component that exits meanwhile fails the wait, or
        with `restart_exited` is started again, as a restart policy would."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while unhealthy := airflow_unhealthy(self.api_url):
            exited = self.exited()
            if exited and not restart_exited:
                name = exited[0]
                raise RuntimeError(f"{name} exited:\n{self.log_path(name).read_text()[-3000:]}")
            for name in exited:
                self.start(name)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Airflow was not healthy {START_TIMEOUT_SECONDS} s on: "
                    f"{'; '.join(unhealthy)}; running: {sorted(self.processes)}"
                )
            time.sleep(1)

    def exited(self) -> list[str]:
        """The components that exited (a crash: none of them ends on its own)."""
        return [name for name, process in self.processes.items() if process.poll() is not None]

    def trainyard(
        self, *args: str, check: bool = True, user: tuple[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the `trainyard` CLI against this Airflow, as a user would (`user`: username and
        password, default the admin)."""
        env = dict(self.env)
        if user is not None:
            env["TRAINYARD_USERNAME"], env["TRAINYARD_PASSWORD"] = user
        result = subprocess.run(
            [str(BIN_DIR / "trainyard"), *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO_ROOT,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"trainyard {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def stop_all(self) -> None:
        for name in list(self.processes):
            process = self.processes.pop(name)
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            except ProcessLookupError:
                continue
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextmanager
def embedded_postgres() -> Iterator[str]:
    """The embedded default's PostgreSQL server in a fresh directory; yields its URL.

    Not under pytest's tmp_path: pytest keeps its temporary root private to its user (every
    pytest run sets it back to 0700), and under root the server runs as pgserver's own user.
    """
    root = Path(tempfile.mkdtemp(prefix="trainyard-pg-"))
    try:
        url = start_postgres(root / "data")
        try:
            yield url
        finally:
            stop_postgres(root / "data")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def running_airflow(
    home: Path,
    trainyard_config: Path,
    extra_env: dict[str, str],
    auth_manager: AuthManagerName = "simple",
    database_url: str | None = None,
    celery_broker_url: str | None = None,
) -> Iterator[AirflowCluster]:
    """Migrate a fresh metadata DB, sync the tenants, start every component, wait until healthy.

    Without a `database_url`, the metadata DB is the embedded default's own PostgreSQL server
    (`embedded_postgres`); `database_url` and `celery_broker_url`: see `airflow_environment`.
    """
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
    env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    api_port, log_server_port, trigger_log_server_port = free_ports(3)
    with ExitStack() as stack:
        if database_url is None:
            database_url = stack.enter_context(embedded_postgres())
        env.update(
            airflow_environment(
                home,
                api_port=api_port,
                log_server_port=log_server_port,
                trigger_log_server_port=trigger_log_server_port,
                trainyard_config=trainyard_config,
                auth_manager=auth_manager,
                database_url=database_url,
                celery_broker_url=celery_broker_url,
            )
        )
        env.update(extra_env)  # the caller's settings win over the embedded default's
        cluster = AirflowCluster(home, env)
        stack.callback(cluster.stop_all)  # before the database stops
        subprocess.run(
            [str(BIN_DIR / "airflow"), "db", "migrate"],
            env=env,
            check=True,
            capture_output=True,
        )
        if auth_manager == "fab":
            create_user(env, env["TRAINYARD_USERNAME"], env["TRAINYARD_PASSWORD"], "Admin")
        cluster.trainyard("tenants", "sync")
        workers = ("celery worker",) if celery_broker_url else ()
        for component in (*COMPONENTS, *workers):
            cluster.start(component)
        cluster.wait_healthy()
        yield cluster
