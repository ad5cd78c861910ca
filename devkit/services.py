"""The production configuration's services, real and throwaway: PostgreSQL and Redis.

Each runs from the Debian package's binaries on a free loopback port with its data in a fresh
directory, and is gone when the context ends. PostgreSQL refuses to run as root, so under root
its commands run as the package's `postgres` user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from devkit.cluster import free_ports
from devkit.metadata_db import SWEEPS_DATABASE

INSTALL_HINT = "install the Debian packages postgresql and redis-server (.ci/run does)"


def _postgres_bin() -> Path:
    """The newest installed PostgreSQL's server binaries (Debian keeps them off PATH)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda initdb: int(initdb.parts[-3]) if initdb.parts[-3].isdigit() else -1,
    )
    if not found:
        raise RuntimeError(f"no PostgreSQL server found: {INSTALL_HINT}")
    return found[-1].parent


def _as_postgres_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres_server() -> Iterator[str]:
    """A fresh PostgreSQL cluster with an `airflow` database (and the sweeps'); yields the
    SQLAlchemy URL of `airflow`."""
    bin_dir = _postgres_bin()
    (port,) = free_ports(1)
    # Not under pytest's tmp_path: the postgres user must be able to reach the directory.
    root = Path(tempfile.mkdtemp(prefix="trainyard-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"

    def run(*command: str) -> None:
        subprocess.run(_as_postgres_user(list(command)), check=True, capture_output=True)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust", "-E", "UTF8")
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    )
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(root / "log"),
        "-o",
        options,
        "-w",
        "start",
    )
    try:
        for database in ("airflow", SWEEPS_DATABASE):
            run(
                str(bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "airflow",
                database,
            )
        yield f"postgresql+psycopg2://airflow@127.0.0.1:{port}/airflow"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@retry(
    retry=retry_if_exception_type(redis.ConnectionError),
    stop=stop_after_delay(30),
    wait=wait_fixed(0.2),
    reraise=True,
)
def _ping(url: str) -> None:
    redis.Redis.from_url(url).ping()


@contextmanager
def redis_server() -> Iterator[str]:
    """A Redis server that keeps nothing on disk; yields its URL (database 0)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(f"no redis-server found: {INSTALL_HINT}")
    (port,) = free_ports(1)
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _ping(url)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
