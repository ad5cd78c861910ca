"""The modules of this package share one deployment: one Airflow start instead of one per
module (about a minute each on a loaded 2-core machine, of `.ci/run`'s time).

They stay independent: each test submits its own jobs and waits for them to end, and a
module that kills Airflow's components leaves them running again. The next module starts on
a healthy Airflow, whatever the one before did to it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devkit.airflow_env import DATABASE_URL
from devkit.deployment import Deployment, deploy
from devkit.metadata_db import postmaster
from devkit.s3_server import S3Server
from tests.support.processes import kill_orphans


@pytest.fixture(scope="package")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[Deployment]:
    with deploy(tmp_path_factory.mktemp("shared-deployment"), s3_server) as deployed:
        yield deployed


@pytest.fixture(scope="module", autouse=True)
def healthy(deployment: Deployment) -> None:
    deployment.cluster.wait_healthy(restart_exited=True)


@pytest.fixture(scope="module", autouse=True)
def no_orphan_left(deployment: Deployment) -> Iterator[None]:
    """As for every module (tests/conftest.py), but the deployment's PostgreSQL server, which
    runs detached from the start, is no orphan: the next module uses it."""
    yield
    kill_orphans(spare=[postmaster(deployment.cluster.env[DATABASE_URL])])
