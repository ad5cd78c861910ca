"""Shared fixtures: real storage backends (a directory, and moto's S3 server in a subprocess)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Airflow reads its configuration on import: keep tests away from the user's ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="trainyard-tests-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from devkit.s3_server import FAST_RETRY, S3Server, running_s3_server
from tests.support.processes import SESSION_MARK, kill_orphans
from trainyard.storage.local import LocalStore
from trainyard.storage.s3 import S3Store


def pytest_configure() -> None:
    os.environ[SESSION_MARK] = uuid.uuid4().hex


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto server for the whole session; tests isolate themselves by bucket.

    It checks keys, as MinIO does: its own are an admin's, a tenant's its IAM user's.
    """
    with running_s3_server(tmp_path_factory.mktemp("s3-server"), authenticate=True) as server:
        yield server


@pytest.fixture(scope="module", autouse=True)
def no_orphan_left() -> Iterator[None]:
    """After each module, kill what its processes left running (`kill_orphans`)."""
    yield
    kill_orphans()


@pytest.fixture
def s3_store(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    """An S3Store on a fresh bucket, built from config as production builds it."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    store = S3Store.from_config(s3_server.config(f"test-{uuid.uuid4().hex[:16]}"), retry=FAST_RETRY)
    store.ensure_bucket()
    return store


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "storage")


# Property-based suites (tests/fuzz): `ci` is the bounded, derandomized default that
# `make test` runs (about 2,500 examples in all); `make fuzz` picks `fuzz`. Suites that start
# processes or build DAGs run a fraction of max_examples: 12,000 makes 100,000 in all.
settings.register_profile(
    "ci",
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    parent=settings.get_profile("ci"),
    max_examples=int(os.environ.get("TRAINYARD_FUZZ_EXAMPLES", "12000")),
    derandomize=False,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


#: How much of each failure's message the last section shows (CI keeps only the log's tail).
MESSAGE_LINES = 8
MESSAGE_WIDTH = 240


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each failure's own message, last: a CI log is read from its tail, and the short summary
    cuts a message at the terminal's width (often to nothing but '...')."""
    reports = [*terminalreporter.stats.get("failed", []), *terminalreporter.stats.get("error", [])]
    if not reports:
        return
    terminalreporter.section("why each test failed")
    for report in reports:
        crash = getattr(report.longrepr, "reprcrash", None)
        message = crash.message if crash is not None else str(report.longrepr)
        terminalreporter.write_line(f"{report.nodeid} ({report.when}):")
        for line in message.splitlines()[:MESSAGE_LINES]:
            terminalreporter.write_line(f"    {line[:MESSAGE_WIDTH]}")
