"""The embedded default's PostgreSQL server from the pgserver wheel, started and stopped for
real: it is reused while it runs, and what it holds survives a stop."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from devkit.metadata_db import MAX_CONNECTIONS, start_postgres, stop_postgres


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Not under pytest's tmp_path, which pytest keeps private to its user: under root the
    server runs as pgserver's own user."""
    root = Path(tempfile.mkdtemp(prefix="trainyard-pg-"))
    try:
        yield root / "data"
    finally:
        stop_postgres(root / "data")
        shutil.rmtree(root, ignore_errors=True)


def query(url: str, statement: str) -> object:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(sqlalchemy.text(statement))
            return result.scalar() if result.returns_rows else None
    finally:
        engine.dispose()


def test_the_server_is_reused_while_it_runs_and_keeps_its_data_across_a_stop(
    data_dir: Path,
) -> None:
    url = start_postgres(data_dir)
    assert url.startswith("postgresql+psycopg2://")
    assert query(url, "SHOW max_connections") == str(MAX_CONNECTIONS)
    query(url, "CREATE TABLE job (id text); INSERT INTO job VALUES ('acme.a.1')")
    backend = query(url, "SELECT pg_postmaster_start_time()")

    assert start_postgres(data_dir) == url
    assert query(url, "SELECT pg_postmaster_start_time()") == backend  # the same server

    assert stop_postgres(data_dir)
    assert not stop_postgres(data_dir)  # nothing left to stop
    with pytest.raises(sqlalchemy.exc.OperationalError):
        query(url, "SELECT 1")

    restarted = start_postgres(data_dir)
    assert query(restarted, "SELECT id FROM job") == "acme.a.1"
