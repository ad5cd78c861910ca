"""End-to-end tests get a Trainyard deployment on real Airflow, one per test module (the
modules of `shared/` share one: their tests need no settings of their own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devkit.deployment import Deployment, deploy
from devkit.s3_server import S3Server
from trainyard.cli.client import AirflowClient, ApiSettings


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[Deployment]:
    with deploy(tmp_path_factory.mktemp("deployment"), s3_server) as deployed:
        yield deployed


@pytest.fixture(scope="module")
def client(deployment: Deployment) -> Iterator[AirflowClient]:
    """A REST API v2 client logged in to the deployment's Airflow."""
    api = AirflowClient(ApiSettings.from_env(deployment.cluster.env))
    yield api
    api.close()
