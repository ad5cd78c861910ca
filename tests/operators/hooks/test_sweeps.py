"""The sweeps' studies live in a database of the metadata DB's server: the connection the
embedded default sets reaches it, and a study there is shared by every process that opens it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow.sdk import Connection

from devkit.airflow_env import SWEEPS_CONNECTION_VARIABLE, sweeps_connection
from devkit.metadata_db import start_postgres, stop_postgres
from operators.hooks.sweeps import SweepStudyHook
from tests.manifest.test_sweep import SWEEP
from trainyard.failures import PlatformFault
from trainyard.manifest.sweep import SweepSpec
from trainyard.sweeps.search import SweepSearch, TrialEnd


@pytest.fixture
def database_url() -> Iterator[str]:
    """Not under pytest's tmp_path (private to its user): under root the server runs as
    pgserver's own user (as tests/devkit/test_metadata_db.py)."""
    root = Path(tempfile.mkdtemp(prefix="trainyard-pg-"))
    try:
        yield start_postgres(root / "data")
    finally:
        stop_postgres(root / "data")
        shutil.rmtree(root, ignore_errors=True)


def test_the_embedded_defaults_connection_holds_a_study_two_searches_share(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SWEEPS_CONNECTION_VARIABLE, sweeps_connection(database_url))
    url = SweepStudyHook().storage_url()
    assert url.startswith("postgresql+psycopg2://postgres@/trainyard_sweeps?host=")
    spec = SweepSpec.model_validate(SWEEP)

    controller = SweepSearch(spec, "acme.tune.1", url)
    trial = controller.draw()
    learner_task = SweepSearch(spec, "acme.tune.1", url)  # another process, the same study
    learner_task.report(trial.number, 10, 0.5)
    controller.finish(trial.number, TrialEnd.COMPLETE, 0.25)

    (seen,) = SweepSearch(spec, "acme.tune.1", url).trials()
    assert (seen.state, seen.metric, seen.last_step, seen.values) == (
        "complete",
        0.25,
        10,
        trial.values,
    )


@pytest.mark.parametrize(
    ("connection", "problem"),
    [
        (None, "no Airflow connection 'trainyard_sweeps'"),
        (Connection(conn_id="trainyard_sweeps", conn_type="http", host="x", schema="s"), "http"),
        (Connection(conn_id="trainyard_sweeps", conn_type="postgres", host="db"), "schema None"),
    ],
)
def test_a_missing_or_wrong_connection_is_a_platform_fault_naming_it(
    connection: Connection | None, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SWEEPS_CONNECTION_VARIABLE, raising=False)
    if connection is not None:
        monkeypatch.setenv(SWEEPS_CONNECTION_VARIABLE, connection.as_json())
    with pytest.raises(PlatformFault, match=problem) as fault:
        SweepStudyHook().storage_url()
    assert "trainyard_sweeps" in fault.value.fix


def test_a_tcp_server_gives_a_plain_url(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql+psycopg2://airflow:s3cret@db.example.com:5433/airflow"
    monkeypatch.setenv(SWEEPS_CONNECTION_VARIABLE, sweeps_connection(url))
    assert SweepStudyHook().storage_url() == (
        "postgresql+psycopg2://airflow:s3cret@db.example.com:5433/trainyard_sweeps"
    )
