"""Pause and resume through real Airflow, with real PyTorch learners (docs/dependability.md,
"Pause and resume").

One Airflow for the module; `globex` runs at most one job at a time, so a job queued behind a
paused one shows that the pause gave back the tenant's place.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devkit.deployment import Deployment, deploy
from devkit.learners import learner_processes, wait_for_end, wait_until
from devkit.s3_server import S3Server
from trainyard.cli.client import AirflowClient
from trainyard.cli.status import job_status
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.jobs.progress import read_metrics
from trainyard.jobs.records import JobState, load_record
from trainyard.storage import ObjectStore

pytestmark = pytest.mark.e2e

TENANT = "globex"


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[Deployment]:
    with deploy(
        tmp_path_factory.mktemp("deployment"),
        s3_server,
        tenant_settings={TENANT: {"max_running_jobs": 1}},
    ) as deployed:
        yield deployed


def submit(deployment: Deployment, name: str, command: str) -> str:
    manifest = deployment.write_manifest(
        TENANT,
        f"{name}.yaml",
        name=name,
        command=command,
        checkpoint={"interval": "2s", "keep": 5},
        evaluation=None,
    )
    return deployment.submit(manifest)


def committed(store: ObjectStore, job_id: str) -> list[int]:
    return CheckpointStore(store, JobLayout(job_id)).committed_steps()


def cli_state(deployment: Deployment, job_id: str) -> str:
    status: dict[str, Any] = json.loads(
        deployment.cluster.trainyard("status", job_id, "--json").stdout
    )
    return str(status["state"])


def test_a_paused_job_gives_back_its_place_and_resumes_as_the_same_job(
    deployment: Deployment, client: AirflowClient
) -> None:
    store = deployment.stores[TENANT]
    held = submit(deployment, "held", "python train.py --epochs 600")
    wait_until(lambda: committed(store, held), "a committed checkpoint", timeout=300)
    queued = submit(deployment, "behind", "python train.py --epochs 4")
    assert job_status(client, store, queued).state is JobState.QUEUED  # max_running_jobs: 1
    before = committed(store, held)[-1]

    paused = deployment.cluster.trainyard("pause", held)

    assert f"{held}: paused" in paused.stdout
    wait_until(
        lambda: (
            not learner_processes(held, user_code=True)
            and not learner_processes(held, user_code=False)
        ),
        "the paused job's learners to exit",
        timeout=60,
    )
    paused_at = committed(store, held)[-1]
    assert paused_at > before  # the final checkpoint on SIGTERM
    assert cli_state(deployment, held) == "paused"
    page = client.request("GET", f"/tenants/{TENANT}/jobs/{held}", api="/trainyard/api")
    assert page["job"]["state"] == "paused"
    assert page["attempts"][-1]["failure_class"] == "paused"
    # The job behind it starts and ends while the first is paused.
    assert wait_for_end(client, store, queued).state is JobState.SUCCEEDED
    assert cli_state(deployment, held) == "paused"
    record = load_record(store, held)
    assert record is not None
    assert [a.failure_class for a in record.attempts] == ["paused"]  # no budget charged

    resumed = client.request("POST", f"/jobs/{held}/resume", api="/trainyard/api")

    assert resumed == {"job_id": held, "state": "queued"}
    final = wait_for_end(client, store, held)
    assert final.state is JobState.SUCCEEDED
    log = store.get_bytes(JobLayout(held).learner_log(RunMode.TRAIN, 2, 0)).decode()
    match = re.search(r"resumed from step-(\d+)", log)
    assert match, log[-2000:]
    resumed_from = int(match.group(1))
    assert resumed_from >= paused_at
    rows = read_metrics(store, held)
    assert {row["attempt"] for row in rows} == {1, 2}
    assert min(row["step"] for row in rows if row["attempt"] == 2) > resumed_from  # continuous
    listed = json.loads(deployment.cluster.trainyard("list", "--tenant", TENANT, "--json").stdout)
    assert [job["state"] for job in listed if job["job_id"] == held] == ["succeeded"]


def test_max_runtime_counts_learner_time_only_and_a_larger_limit_lets_the_job_finish(
    deployment: Deployment, client: AirflowClient
) -> None:
    """A job of ~40 s of training under `max_runtime: 20s`: paused longer than the limit, it
    still trains on when resumed (paused time is not counted), then ends as deadline with a
    committed checkpoint; resumed with a larger limit it finishes."""
    store = deployment.stores["acme"]
    manifest = deployment.write_manifest(
        "acme",
        "limited.yaml",
        name="limited",
        command="python train.py --epochs 600",
        checkpoint={"interval": "2s", "keep": 5},
        evaluation=None,
        max_runtime="20s",
    )
    job_id = deployment.submit(manifest)
    wait_until(lambda: committed(store, job_id), "a committed checkpoint", timeout=300)
    deployment.cluster.trainyard("pause", job_id)
    wait_until(
        lambda: job_status(client, store, job_id).state is JobState.PAUSED, "the job to pause"
    )
    record = load_record(store, job_id)
    assert record is not None
    first = record.attempts[0]
    # Paused until more wall time than the whole limit has passed since it started.
    wait_until(
        lambda: datetime.now(UTC) - first.started_at > timedelta(seconds=25),
        "the pause to outlast the limit",
    )
    deployment.cluster.trainyard("resume", job_id)

    final = wait_for_end(client, store, job_id)

    assert final.state is JobState.FAILED
    assert final.failure is not None
    assert final.failure.failure_class == "deadline"
    assert "max_runtime ran out" in final.failure.message
    assert "trainyard resume" in final.failure.fix
    record = load_record(store, job_id)
    assert record is not None
    assert [a.failure_class for a in record.attempts] == ["paused", "deadline"]  # not retried
    assert record.attempts[1].checkpoint_step is not None  # the final checkpoint on SIGTERM
    trained = record.attempts[1].ended_at - record.attempts[1].started_at
    assert trained > timedelta(seconds=1)  # the pause did not use up the limit
    assert final.max_runtime_s == 20.0
    assert final.runtime_s is not None
    wall = record.attempts[1].ended_at - first.started_at
    assert 20.0 <= final.runtime_s < wall.total_seconds()  # the pause in between not counted
    shown = json.loads(deployment.cluster.trainyard("status", job_id, "--json").stdout)
    assert shown["max_runtime_s"] == 20.0

    deployment.cluster.trainyard("resume", job_id, "--max-runtime", "10m")

    finished = wait_for_end(client, store, job_id)
    assert finished.state is JobState.SUCCEEDED, finished.failure
    assert finished.max_runtime_s == 600.0


def test_a_two_learner_gang_pauses_as_a_whole_and_resumes_from_one_step(
    deployment: Deployment, client: AirflowClient
) -> None:
    store = deployment.stores["acme"]
    manifest = deployment.write_manifest(
        "acme",
        "gang.yaml",
        name="gang",
        command="python ddp_train.py --epochs 300",
        resources={"learners": 2, "cpus": 1},
        checkpoint={"interval": "2s", "keep": 5},
        evaluation=None,
    )
    job_id = deployment.submit(manifest)
    wait_until(lambda: committed(store, job_id), "a committed checkpoint", timeout=300)
    wait_until(lambda: learner_processes(job_id, user_code=True, rank=1), "rank 1's training")
    before = committed(store, job_id)[-1]

    deployment.cluster.trainyard("pause", job_id)

    wait_until(
        lambda: (
            not learner_processes(job_id, user_code=True)
            and not learner_processes(job_id, user_code=False)
        ),
        "every learner of the gang to exit",
        timeout=60,
    )
    paused_at = committed(store, job_id)[-1]
    assert paused_at >= before
    assert cli_state(deployment, job_id) == "paused"
    deployment.cluster.trainyard("resume", job_id)
    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final.failure
    steps = set()
    for rank in (0, 1):
        log = store.get_bytes(JobLayout(job_id).learner_log(RunMode.TRAIN, 2, rank)).decode()
        match = re.search(r"resumed from step-(\d+)", log)
        assert match, log[-2000:]
        steps.add(int(match.group(1)))
    assert len(steps) == 1  # the whole gang from one step
    assert steps.pop() >= paused_at


def test_jobs_queued_behind_the_tenants_limit_expire_at_max_queued_or_pause_until_resumed(
    deployment: Deployment, client: AirflowClient
) -> None:
    """globex runs one job at a time: the jobs behind it are held queued by Airflow's
    max_active_runs, where no task of theirs runs. One with max_queued fails as deadline
    (the DAG's deadline alert) without ever starting; one paused while queued never starts,
    and once resumed trains from the start."""
    store = deployment.stores[TENANT]
    dag_id = f"trainyard_{TENANT}"
    holder = submit(deployment, "holder", "python train.py --epochs 600")
    wait_until(
        lambda: job_status(client, store, holder).state is JobState.RUNNING, "the first job to run"
    )
    impatient = deployment.submit(
        deployment.write_manifest(
            TENANT,
            "impatient.yaml",
            name="impatient",
            command="python train.py --epochs 4",
            evaluation=None,
            max_queued="15s",
        )
    )
    waiting = submit(deployment, "waiting", "python train.py --epochs 4")
    assert client.get_run(dag_id, waiting)["state"] == "queued"

    assert f"{waiting}: paused" in deployment.cluster.trainyard("pause", waiting).stdout
    expired = wait_for_end(client, store, impatient, timeout=180)

    assert expired.state is JobState.FAILED
    assert expired.failure is not None
    assert expired.failure.failure_class == "deadline"
    assert "max_queued ran out" in expired.failure.message
    assert "max_running_jobs" in expired.failure.fix
    assert client.get_run(dag_id, impatient)["state"] == "failed"  # its place is given back
    instances = client.task_instances(dag_id, impatient)
    assert all(not ti.get("try_number") for ti in instances), instances  # no task ever ran
    assert cli_state(deployment, waiting) == "paused"
    assert client.get_run(dag_id, waiting)["state"] == "failed"
    assert job_status(client, store, holder).state is JobState.RUNNING  # untouched

    deployment.cluster.trainyard("cancel", holder)
    deployment.cluster.trainyard("resume", waiting)

    final = wait_for_end(client, store, waiting)
    assert final.state is JobState.SUCCEEDED, final.failure
    record = load_record(store, waiting)
    assert record is not None
    assert record.code_digest is not None  # validated and snapshot by its resume run
    assert [a.failure_class for a in record.attempts] == [None]  # trained once, from the start


def test_a_paused_job_outlives_a_scheduler_crash_and_resumes(
    deployment: Deployment, client: AirflowClient
) -> None:
    """Last in the module: it restarts the scheduler. A paused job is only its record, so the
    crash loses nothing, and `trainyard resume` afterwards finishes it."""
    store = deployment.stores["acme"]
    manifest = deployment.write_manifest(
        "acme",
        "crash.yaml",
        name="crash",
        command="python train.py --epochs 600",
        checkpoint={"interval": "2s", "keep": 5},
        evaluation=None,
    )
    job_id = deployment.submit(manifest)
    wait_until(lambda: committed(store, job_id), "a committed checkpoint", timeout=300)
    deployment.cluster.trainyard("pause", job_id)
    wait_until(
        lambda: job_status(client, store, job_id).state is JobState.PAUSED, "the job to pause"
    )

    deployment.cluster.kill("scheduler", signal.SIGKILL)
    deployment.cluster.start("scheduler")

    assert cli_state(deployment, job_id) == "paused"
    deployment.cluster.trainyard("resume", job_id)
    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final.failure
    retry_log = store.get_bytes(JobLayout(job_id).learner_log(RunMode.TRAIN, 2, 0))
    assert b"resumed from step-" in retry_log
