"""The embedded default's metadata DB: a private PostgreSQL 16 server from the pgserver wheel.

SQLite cannot take parallel submitters (bench/RESULTS.md), and a server from pip needs no root
and no Debian package. The server's data, log and unix socket live in one directory (the
demo's `.demo/postgres`, a test's temporary directory); it listens on no TCP port and outlives
the process that started it, so `make demo` and `make demo-stop` can start and stop it apart.
PostgreSQL refuses to run as root: pgserver then runs it as a system user, `pgserver`, that it
creates.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import warnings
from contextlib import closing
from pathlib import Path

import psutil
import psycopg2

with warnings.catch_warnings():
    # pgserver keeps a lock file in the user's runtime directory; where XDG_RUNTIME_DIR is unset
    # (a root shell, CI) it falls back to /tmp/runtime-<uid>, which does as well.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import pgserver
    from pgserver._commands import POSTGRES_BIN_PATH
    from pgserver.utils import PostmasterInfo

DATABASE = "airflow"
#: The sweeps' Optuna studies (operators/hooks/sweeps.py): a database of the same server.
SWEEPS_DATABASE = "trainyard_sweeps"
#: Room for every component's pools ([database] sql_alchemy_pool_size + max_overflow, twice
#: for the API server's async engine) with the burst sizing of `airflow_env`.
MAX_CONNECTIONS = 200
#: The user pgserver runs the server as under root (its `PostgresServer` decides the same).
ROOT_SYSTEM_USER = "pgserver"


def start_postgres(data_dir: Path) -> str:
    """Start the server in `data_dir` (created and initialised the first time; a running one
    is reused) and return the SQLAlchemy URL of its `airflow` database (it also holds the
    sweeps' database)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.PostgresServer(data_dir.resolve(), cleanup_mode=None)
    # Its exit hook only does pgserver's bookkeeping of handles (we stop the server
    # ourselves), and logs after pytest has closed its streams.
    atexit.unregister(server._cleanup)
    socket_dir = server.get_postmaster_info().socket_dir
    connection = psycopg2.connect(host=str(socket_dir), user="postgres", dbname="postgres")
    connection.autocommit = True  # CREATE DATABASE and ALTER SYSTEM refuse transactions
    with closing(connection), connection.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        restart = int(cursor.fetchone()[0]) < MAX_CONNECTIONS  # a fresh cluster: size it once
        if restart:
            cursor.execute(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
        for database in (DATABASE, SWEEPS_DATABASE):
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE DATABASE {database}")
    if restart:
        _pg_ctl(data_dir, "-l", str(server.log), "restart")
    return f"postgresql+psycopg2://postgres@/{DATABASE}?host={socket_dir}"


def stop_postgres(data_dir: Path) -> bool:
    """Stop the server in `data_dir` cleanly (it checkpoints first); False if none ran."""
    info = PostmasterInfo.read_from_pgdata(data_dir.resolve())
    if info is None or not info.is_running():
        return False
    _pg_ctl(data_dir, "stop")
    return True


def _pg_ctl(data_dir: Path, *args: str) -> None:
    """`pg_ctl` of the wheel's PostgreSQL, waiting, fast shutdown: the server's output goes
    to its log, pg_ctl's own messages to our stderr (a pipe would outlive pg_ctl in the
    server and hang us)."""
    subprocess.run(
        [
            str(POSTGRES_BIN_PATH / "pg_ctl"),
            "-D",
            str(data_dir.resolve()),
            "-w",
            "-m",
            "fast",
            *args,
        ],
        user=ROOT_SYSTEM_USER if os.geteuid() == 0 else None,
        stdout=subprocess.DEVNULL,
        check=True,
    )


def postmaster(url: str) -> psutil.Process:
    """The embedded server behind `url` (from `start_postgres`): its main process, which runs
    detached from whoever started it (pg_ctl daemonizes it).

    Raises:
        LookupError: no embedded server listens there.
    """
    socket_dir = url.rpartition("?host=")[2]
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if not cmdline or not cmdline[0].endswith("postgres") or "-D" not in cmdline:
            continue
        info = PostmasterInfo.read_from_pgdata(_data_dir(cmdline))
        if info is not None and str(info.socket_dir) == socket_dir and info.pid == process.pid:
            return process
    raise LookupError(f"no embedded PostgreSQL server listens at {socket_dir}")


def crash_postgres(url: str) -> Path:
    """SIGKILL the embedded server behind `url` (from `start_postgres`), as a crash would, and
    return its data directory, from which `start_postgres` starts it again."""
    process = postmaster(url)
    data_dir = _data_dir(process.cmdline())
    process.kill()
    process.wait(timeout=60)
    return data_dir


def _data_dir(cmdline: list[str]) -> Path:
    """The data directory a `postgres -D DIR ...` command line serves."""
    return Path(cmdline[cmdline.index("-D") + 1])
