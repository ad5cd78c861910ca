"""`make demo`'s deployment, as the demo starts it (its own config, PostgreSQL, Airflow with
FAB and generated users): its credentials, what a tenant's user sees, the hostile job against
it, and `make demo-stop` then the next `make demo` with a job in the middle."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from configparser import ConfigParser
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pgserver.utils import PostmasterInfo

from devkit.airflow_env import airflow_healthy, wait_for_dags
from devkit.cluster import AirflowCluster, free_ports
from devkit.demo import (
    ADMIN,
    CREDENTIALS_FILE,
    DEMO_CONFIG,
    PID_FILE,
    start_services,
    stop_services,
    tenant_user,
)
from devkit.deployment import EXAMPLE, EXAMPLE_CODE
from devkit.learners import wait_for_end, wait_until
from trainyard.cli.client import AirflowClient, ApiSettings
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.jobs.records import JobState
from trainyard.storage import open_store
from trainyard.storage.local import LocalStore
from trainyard.tenancy.config import load_config

pytestmark = pytest.mark.e2e

TENANT, OTHER = "acme", "globex"
HOSTILE_JOB = Path(__file__).parents[1] / "runtime" / "hostile_job.py"


@dataclass
class Demo:
    root: Path
    config: Path
    cli: AirflowCluster
    #: user -> password, as the demo printed them
    printed: dict[str, str]

    def user(self, tenant: str) -> tuple[str, str]:
        name = tenant_user(tenant)
        return name, self.printed[name]

    def store(self, tenant: str) -> LocalStore:
        storage = load_config(self.config).tenant(tenant).storage
        store = open_store(storage)
        assert isinstance(store, LocalStore)
        return store


def demo_config(root: Path) -> Path:
    """The demo's own config (config/trainyard.yaml: its tenants, its sandbox settings) with its
    directories moved under `root`."""
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    config.update(work_dir=str(root / "work"), jobs_dir=str(root / "jobs"))
    for tenant in config["tenants"]:
        tenant["storage"]["root"] = str(root / "storage" / tenant["name"])
    path = root / "trainyard.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def printed_passwords(output: str) -> dict[str, str]:
    return dict(re.findall(r"^\s*user (\S+)\s+password (\S+)", output, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    """The demo on a free port in a directory of its own; whatever still runs there is stopped
    after. Not under pytest's tmp_path, which pytest keeps private to its user: under root the
    database runs as pgserver's own user."""
    (port,) = free_ports(1)  # its log servers listen on port + 713 and port + 714
    root = Path(tempfile.mkdtemp(prefix="trainyard-demo-"))
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TRAINYARD_DEMO_PORT", str(port))
            config = demo_config(root)
            output = io.StringIO()
            with contextlib.redirect_stdout(output):
                env = start_services(root, config)
            cli = AirflowCluster(root / "airflow", env)
            wait_for_dags(cli.env, [f"trainyard_{TENANT}", f"trainyard_{OTHER}"])
            yield Demo(root, config, cli, printed_passwords(output.getvalue()))
    finally:
        stop_services(root)
        shutil.rmtree(root, ignore_errors=True)


def token_response(demo: Demo, username: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{demo.cli.api_url}/auth/token", json={"username": username, "password": password}
    )


def bearer(demo: Demo, user: tuple[str, str]) -> dict[str, str]:
    response = token_response(demo, *user)
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_admin_admin_is_refused_and_the_printed_passwords_work(demo: Demo) -> None:
    assert set(demo.printed) == {ADMIN, tenant_user(TENANT), tenant_user(OTHER)}
    assert token_response(demo, "admin", "admin").status_code == 401
    for user, password in demo.printed.items():
        assert token_response(demo, user, password).status_code in (200, 201), user
    # The CLI, as the admin the demo runs its own steps as.
    assert demo.cli.env["TRAINYARD_PASSWORD"] == demo.printed[ADMIN]


def test_the_demos_secrets_are_readable_by_their_owner_only(demo: Demo) -> None:
    home = demo.root / "airflow"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for path in (
        demo.root / CREDENTIALS_FILE,
        home / "trainyard-secrets.json",
        home / "airflow.cfg",
        demo.root / "airflow.log",
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert json.loads((demo.root / CREDENTIALS_FILE).read_text()) == demo.printed


def test_a_tenant_user_sees_only_its_tenants_dags_and_pages(demo: Demo) -> None:
    base, headers = demo.cli.api_url, bearer(demo, demo.user(TENANT))

    dags = httpx.get(f"{base}/api/v2/dags", headers=headers).json()["dags"]
    dag_ids = {dag["dag_id"] for dag in dags}
    assert f"trainyard_{TENANT}" in dag_ids
    assert all(dag_id.startswith(f"trainyard_{TENANT}") for dag_id in dag_ids), dag_ids
    other_dag = httpx.get(f"{base}/api/v2/dags/trainyard_{OTHER}", headers=headers)
    assert other_dag.status_code == 403
    for route in ("/trainyard/api/tenants/{tenant}/jobs", "/trainyard/tenants/{tenant}/jobs"):
        assert httpx.get(base + route.format(tenant=OTHER), headers=headers).status_code == 403
        assert httpx.get(base + route.format(tenant=TENANT), headers=headers).status_code == 200
    # A user of one tenant lands on its job list.
    index = httpx.get(f"{base}/trainyard/", headers=headers, follow_redirects=True)
    assert f"tenants/{TENANT}/jobs" in index.text
    assert f"tenants/{OTHER}/jobs" not in index.text
    # The CLI as that user: the other tenant is refused before its storage is touched.
    refused = demo.cli.trainyard(
        "models", "list", "digits-mlp", "--tenant", OTHER, user=demo.user(TENANT), check=False
    )
    assert refused.returncode == 1
    assert "access denied" in refused.stderr


def demo_secrets(demo: Demo) -> set[str]:
    """What of the demo's secrets a job could take: the API's signing keys, the Fernet key,
    every user's password."""
    home = demo.root / "airflow"
    keys = json.loads((home / "trainyard-secrets.json").read_text())
    airflow_cfg = ConfigParser(interpolation=None)
    airflow_cfg.read(home / "airflow.cfg")
    fernet = airflow_cfg.get("core", "fernet_key", fallback="")
    return {*keys.values(), *demo.printed.values(), *([fernet] if fernet else [])}


def test_the_hostile_job_gets_nothing_through_on_the_demos_deployment(demo: Demo) -> None:
    """tests/runtime/hostile_job.py, submitted by a tenant's user to the deployment the demo
    started: every attempt is denied, and nothing secret reaches what it could keep."""
    victim = demo.root / "work" / f"{TENANT}.victim.20261202-000000-ef01"
    (victim / "attempt-1-rank-0" / "data").mkdir(parents=True)
    (victim / "attempt-1-rank-0" / "data" / "secret.csv").write_text("victim's data")
    (demo.root / "storage" / OTHER / "datasets").mkdir(parents=True, exist_ok=True)
    (demo.root / "storage" / OTHER / "datasets" / "secret.csv").write_text("globex's data")
    code, data = demo.root / "hostile", demo.root / "rows"
    code.mkdir()
    data.mkdir()
    shutil.copy(HOSTILE_JOB, code / "train.py")
    port = demo.cli.api_url.rsplit(":", 1)[1]
    targets = {
        "airflow_home": str(demo.root / "airflow"),
        "config": str(demo.config),
        "other_storage": str(demo.root / "storage" / OTHER),
        "other_job": str(victim),
        "work_dir": str(demo.root / "work"),
        "outside_pid": int((demo.root / PID_FILE).read_text()),  # Airflow's components
        # No storage server here: the nearest thing is Airflow's own API, on loopback.
        "s3_endpoint": f"127.0.0.1:{port}",
        "other_bucket": "api/v2",
    }
    (code / "targets.json").write_text(json.dumps(targets))
    (data / "rows.csv").write_text("x,y\n1,2\n")
    user = demo.user(TENANT)
    demo.cli.trainyard("data", "upload", str(code), "code/hostile", "--tenant", TENANT, user=user)
    demo.cli.trainyard("data", "upload", str(data), "datasets/rows", "--tenant", TENANT, user=user)
    manifest: dict[str, Any] = {
        "name": "hostile",
        "tenant": TENANT,
        "framework": {"name": "pytorch", "version": "2.13"},
        "code": {"uri": "code/hostile"},
        "data": {"path": "datasets/rows"},
        "command": "python train.py",
        "resources": {"cpus": 0.5, "memory": "1Gi"},
        "checkpoint": {"interval": "1s"},
    }
    manifest_file = demo.root / "hostile.yaml"
    manifest_file.write_text(yaml.safe_dump(manifest))
    job_id = demo.cli.trainyard("submit", str(manifest_file), user=user).stdout.split()[0]
    store = demo.store(TENANT)
    with AirflowClient(ApiSettings.from_env(demo.cli.env)) as client:
        final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final.failure

    report: dict[str, dict[str, Any]] = json.loads(
        store.get_bytes(f"{JobLayout(job_id).results}/report.json")
    )
    through = {name: entry for name, entry in report.items() if not entry["denied"]}
    assert through == {}
    assert len(report) >= 20  # every attempt of the hostile job reported
    assert list(report["environments in /proc"]["detail"]) == ["1", "2"]  # its sandbox only
    kept = [store.get_bytes(info.key) for info in store.list(JobLayout(job_id).root)]
    for secret in demo_secrets(demo):
        assert all(secret.encode() not in blob for blob in kept)


def test_a_job_survives_demo_stop_and_finishes_from_its_checkpoint(demo: Demo) -> None:
    """Runs last: it stops the demo and starts it again, which keeps the users' passwords."""
    cli, user = demo.cli, demo.user(TENANT)
    dataset = demo.root / "digits"
    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_dataset.py"), "--out", str(dataset)], check=True
    )
    cli.trainyard("data", "upload", str(dataset), "datasets/digits", "--tenant", TENANT, user=user)
    manifest = yaml.safe_load((EXAMPLE / "job.yaml").read_text())
    manifest.update(
        tenant=TENANT,
        code={"uri": EXAMPLE_CODE},
        command="python train.py --epochs 300",
        checkpoint={"interval": "2s", "keep": 3},
    )
    cli.trainyard("data", "upload", str(EXAMPLE), EXAMPLE_CODE, "--tenant", TENANT, user=user)
    manifest_file = demo.root / "job.yaml"
    manifest_file.write_text(yaml.safe_dump(manifest))
    job_id = cli.trainyard("submit", str(manifest_file), user=user).stdout.split()[0]
    store = demo.store(TENANT)
    checkpoints = CheckpointStore(store, JobLayout(job_id))
    wait_until(checkpoints.committed_steps, "a committed checkpoint")

    stop_services(demo.root)  # make demo-stop

    assert not airflow_healthy(cli.api_url)
    postmaster = PostmasterInfo.read_from_pgdata(demo.root / "postgres")
    assert postmaster is None or not postmaster.is_running()

    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        start_services(demo.root, demo.config)  # the next make demo, on the same database
    assert printed_passwords(output.getvalue()) == demo.printed

    with AirflowClient(ApiSettings.from_env(cli.env)) as client:
        final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final.failure
    assert final.attempt >= 2  # the stopped attempt was retried, not lost
    retry_log = store.get_bytes(JobLayout(job_id).learner_log(RunMode.TRAIN, final.attempt, 0))
    assert b"resumed from step-" in retry_log  # from its checkpoint, not from scratch
    assert token_response(demo, ADMIN, demo.printed[ADMIN]).status_code in (200, 201)
