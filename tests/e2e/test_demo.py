"""`make demo`'s services: its private PostgreSQL and `airflow standalone`, stopped and started
again the way `make demo-stop` and the next `make demo` do, with a job in the middle."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pgserver.utils import PostmasterInfo

from devkit.airflow_env import airflow_healthy, wait_for_dags
from devkit.cluster import AirflowCluster, free_ports
from devkit.demo import start_services, stop_services
from devkit.deployment import EXAMPLE, EXAMPLE_CODE
from devkit.learners import wait_for_end, wait_until
from trainyard.cli.client import AirflowClient, ApiSettings
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.jobs.records import JobState
from trainyard.storage import open_store
from trainyard.tenancy.config import load_config

pytestmark = pytest.mark.e2e

TENANT = "acme"


@pytest.fixture
def demo_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A demo directory of its own on free ports; whatever still runs there is stopped after.

    Not under pytest's tmp_path, which pytest keeps private to its user: under root the
    database runs as pgserver's own user.
    """
    (port,) = free_ports(1)  # its log servers listen on port + 713 and port + 714
    monkeypatch.setenv("TRAINYARD_DEMO_PORT", str(port))
    root = Path(tempfile.mkdtemp(prefix="trainyard-demo-"))
    try:
        yield root
    finally:
        stop_services(root)
        shutil.rmtree(root, ignore_errors=True)


def write_config(root: Path) -> Path:
    config = {
        "learner_backend": "local",
        "work_dir": str(root / "work"),
        "jobs_dir": str(root / "jobs"),
        "tenants": [{"name": TENANT, "storage": {"kind": "local", "root": str(root / TENANT)}}],
    }
    path = root / "trainyard.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_job_survives_demo_stop_and_finishes_from_its_checkpoint(demo_dir: Path) -> None:
    config = write_config(demo_dir)
    cli = AirflowCluster(demo_dir / "airflow", start_services(demo_dir, config))
    cli.trainyard("tenants", "sync")
    wait_for_dags(cli.env, [f"trainyard_{TENANT}"])
    dataset = demo_dir / "digits"
    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_dataset.py"), "--out", str(dataset)], check=True
    )
    cli.trainyard("data", "upload", str(dataset), "datasets/digits", "--tenant", TENANT)
    manifest = yaml.safe_load((EXAMPLE / "job.yaml").read_text())
    manifest.update(
        tenant=TENANT,
        code={"uri": EXAMPLE_CODE},
        command="python train.py --epochs 300",
        checkpoint={"interval": "2s", "keep": 3},
    )
    cli.trainyard("data", "upload", str(EXAMPLE), EXAMPLE_CODE, "--tenant", TENANT)
    manifest_file = demo_dir / "job.yaml"
    manifest_file.write_text(yaml.safe_dump(manifest))
    job_id = cli.trainyard("submit", str(manifest_file)).stdout.split()[0]
    store = open_store(load_config(config).tenant(TENANT).storage)
    checkpoints = CheckpointStore(store, JobLayout(job_id))
    wait_until(checkpoints.committed_steps, "a committed checkpoint")

    stop_services(demo_dir)  # make demo-stop

    assert not airflow_healthy(cli.api_url)
    postmaster = PostmasterInfo.read_from_pgdata(demo_dir / "postgres")
    assert postmaster is None or not postmaster.is_running()

    start_services(demo_dir, config)  # the next make demo, on the same database

    with AirflowClient(ApiSettings.from_env(cli.env)) as client:
        final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final.failure
    assert final.attempt >= 2  # the stopped attempt was retried, not lost
    retry_log = store.get_bytes(JobLayout(job_id).learner_log(RunMode.TRAIN, final.attempt, 0))
    assert b"resumed from step-" in retry_log  # from its checkpoint, not from scratch
