"""Fault injection through real Airflow: each scenario breaks a real job and checks the outcome
in the stored metrics, checkpoints and job record (docs/dependability.md lists them).

Jobs train the digits example long enough to be interrupted; faults are injected once a
checkpoint is committed, so every scenario hits a job mid-training.
"""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devkit.deployment import EXAMPLE, Deployment
from devkit.learners import learner_processes, wait_for_end, wait_until
from devkit.s3_server import S3Server
from tests.support.fault_jobs import (
    FRAMEWORKS,
    INTERVAL,
    committed,
    kill_user_code_after_first_checkpoint,
    submit,
)
from trainyard.cli.client import AirflowClient
from trainyard.cli.status import JobStatus
from trainyard.jobs.accounting import account, read_utilisation, store_accounts, usage_by_tenant
from trainyard.jobs.checkpoints import file_digest
from trainyard.jobs.layout import JobLayout, RunMode, published_manifest
from trainyard.jobs.progress import read_metrics
from trainyard.jobs.records import JobRecord, JobState, load_record
from trainyard.storage import ObjectStore, join_key

pytestmark = pytest.mark.e2e


def record_of(store: ObjectStore, job_id: str) -> JobRecord:
    record = load_record(store, job_id)
    assert record is not None
    return record


def resumed_step(store: ObjectStore, job_id: str, attempt: int) -> int:
    """The checkpoint step the training script says it resumed from in `attempt`."""
    log = store.get_bytes(JobLayout(job_id).learner_log(RunMode.TRAIN, attempt, 0)).decode()
    match = re.search(r"resumed from step-(\d+)", log)
    assert match, f"attempt {attempt} did not resume from a checkpoint:\n{log[-2000:]}"
    return int(match.group(1))


def rows_of(store: ObjectStore, job_id: str, attempt: int) -> list[dict[str, Any]]:
    return [row for row in read_metrics(store, job_id) if row["attempt"] == attempt]


def verify_every_checkpoint(store: ObjectStore, job_id: str) -> None:
    """Every committed checkpoint's files match their manifest (nothing half-written)."""
    layout = JobLayout(job_id)
    steps = committed(store, job_id)
    assert steps
    for step in steps:
        prefix = layout.checkpoint(step)
        for relative, expected in store.get_json(published_manifest(prefix))["files"].items():
            local = Path(f"/tmp/verify-{job_id}-{step}")
            store.get_file(join_key(prefix, relative), local)
            assert file_digest(local) == {"size": expected["size"], "sha256": expected["sha256"]}
            local.unlink()


def learner_log(client: AirflowClient, status: JobStatus, try_number: int) -> str:
    return "\n".join(client.task_log(status.dag_id, status.dag_run_id, "learner", try_number))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_sigkill_resumes_from_the_newest_checkpoint_and_loses_at_most_one_interval(
    deployment: Deployment, client: AirflowClient, framework: str
) -> None:
    store = deployment.stores["globex"]
    baseline = submit(deployment, "globex", f"baseline-{framework}", framework)
    killed = submit(deployment, "globex", f"sigkill-{framework}", framework)

    kill_user_code_after_first_checkpoint(store, killed, signal.SIGKILL)

    final = wait_for_end(client, store, killed)
    assert final.state is JobState.SUCCEEDED, final.failure
    assert final.attempt == 2
    assert [a.failure_class for a in record_of(store, killed).attempts] == ["platform_fault", None]
    restored = resumed_step(store, killed, attempt=2)
    first, second = rows_of(store, killed, 1), rows_of(store, killed, 2)
    assert restored < second[0]["step"] <= restored + 10  # attempt 2 starts where 1 committed
    # The newest checkpoint attempt 1 committed (its runtime outlived the command), and so
    # what is lost is what the command trained after it: less than one checkpoint interval of
    # its own time, plus the batch and the save it was in. Measured in the learner's own rows,
    # whose spacing grows with the machine's load as the training does.
    commits = re.findall(r"committed checkpoint step-(\d+)", learner_log(client, final, 1))
    assert restored == max(map(int, commits))
    at_restore = max((row for row in first if row["step"] <= restored), key=lambda r: r["step"])
    lost_seconds = first[-1]["time"] - at_restore["time"]
    row_gap = max(later["time"] - row["time"] for row, later in pairwise(first))
    assert lost_seconds <= INTERVAL + 2 * row_gap, f"lost {lost_seconds:.1f} s of training"

    reference = wait_for_end(client, store, baseline)
    assert reference.state is JobState.SUCCEEDED
    assert final.evaluation is not None
    assert reference.evaluation is not None
    assert abs(final.evaluation["accuracy"] - reference.evaluation["accuracy"]) <= 0.01


@pytest.mark.parametrize(
    ("framework", "target"),
    [
        pytest.param("pytorch", "runtime", id="pytorch-to-the-runtime"),
        pytest.param("pytorch", "user process", id="pytorch-to-the-user-process"),
        pytest.param("pytorch", "process group", id="pytorch-to-the-user-process-group"),
        # How the signal arrives is the runtime's concern, not the framework's: the other
        # frameworks get it where their own code must handle it.
        pytest.param("tensorflow", "user process", id="tensorflow-to-the-user-process"),
        pytest.param("jax", "user process", id="jax-to-the-user-process"),
    ],
)
def test_sigterm_preemption_commits_a_final_checkpoint_and_spares_the_fault_budget(
    deployment: Deployment, client: AirflowClient, framework: str, target: str
) -> None:
    """However the SIGTERM arrives (a drain signals the runtime, a node shutdown or a spot
    handler the training process or its group), it is a preemption."""
    store = deployment.stores["globex"]
    name = f"preempted-{framework}-{target.replace(' ', '-')}"
    job_id = submit(deployment, "globex", name, framework)

    kill_user_code_after_first_checkpoint(store, job_id, signal.SIGTERM, target=target)

    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final.failure
    record = record_of(store, job_id)
    assert [a.failure_class for a in record.attempts] == ["preemption", None]
    assert record.count_attempts("platform_fault", "hang") == 0
    first = rows_of(store, job_id, 1)
    assert resumed_step(store, job_id, attempt=2) >= first[-1]["step"]  # no step lost
    assert "does not count against the platform-fault budget" in learner_log(client, final, 1)


def test_storage_outage_of_20_seconds_during_training(
    deployment: Deployment, client: AirflowClient, s3_server: S3Server
) -> None:
    store = deployment.stores["acme"]
    job_id = submit(deployment, "acme", "outage")
    wait_until(lambda: committed(store, job_id), "a committed checkpoint")

    s3_server.stop()
    try:
        time.sleep(20)
    finally:
        s3_server.start()

    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final.failure
    verify_every_checkpoint(store, job_id)


def test_a_storage_outage_before_commit_is_waited_out(
    deployment: Deployment, client: AirflowClient, s3_server: S3Server
) -> None:
    """Storage goes down for 30 s between training and commit: the commit waits (deferred)
    instead of failing, and the job succeeds with no task retried.

    The DAG is paused while the learner ends, so that no task after it starts before the
    outage does; the outage starts, then the DAG is unpaused.
    """
    store = deployment.stores["acme"]
    job_id = submit(deployment, "acme", "commit-outage", command="python train.py --epochs 30")
    record = wait_until(lambda: load_record(store, job_id), "the job record")
    dag = f"/dags/{record.dag_id}"

    def state(task_id: str) -> str | None:
        instances = client.task_instances(record.dag_id, record.dag_run_id)
        return next((ti["state"] for ti in instances if ti["task_id"] == task_id), None)

    wait_until(lambda: state("learner") == "running", "the learner to run", timeout=300)
    client.request("PATCH", dag, json={"is_paused": True})
    try:
        wait_until(lambda: state("learner") == "success", "the learner to succeed", timeout=300)
        s3_server.stop()
    finally:
        client.request("PATCH", dag, json={"is_paused": False})
    try:
        wait_until(lambda: state("commit") == "deferred", "the commit to wait")
        time.sleep(30)  # the outage: 30 s in all
    finally:
        s3_server.start()

    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final.failure
    assert [a.failure_class for a in record_of(store, job_id).attempts] == [None]
    tries = {
        ti["task_id"]: ti["try_number"]
        for ti in client.task_instances(record.dag_id, record.dag_run_id)
    }
    assert tries["commit"] == 1  # waited, not retried
    log = client.task_log(record.dag_id, record.dag_run_id, "commit", 1)
    assert "waiting for the tenant's storage to answer" in "\n".join(log)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(
    deployment: Deployment, client: AirflowClient
) -> None:
    store = deployment.stores["globex"]
    job_id = submit(deployment, "globex", "corrupt")
    layout = JobLayout(job_id)
    wait_until(lambda: len(committed(store, job_id)) >= 2, "two committed checkpoints")
    [process] = learner_processes(job_id, user_code=True)
    process.send_signal(signal.SIGKILL)
    wait_until(lambda: store.exists(layout.outcome(RunMode.TRAIN, 1, 0)), "attempt 1 to end")
    steps = committed(store, job_id)
    newest, previous = steps[-1], steps[-2]
    store.put_bytes(join_key(layout.checkpoint(newest), "state.pt"), b"garbage")

    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final.failure
    assert resumed_step(store, job_id, attempt=2) == previous
    assert f"checkpoint step {newest} is unusable" in learner_log(client, final, 2)


def test_hung_learner_is_killed_by_the_watchdog_and_the_retry_succeeds(
    deployment: Deployment, client: AirflowClient
) -> None:
    store = deployment.stores["globex"]
    code = deployment.root / "hang-once"
    code.mkdir()
    for source in EXAMPLE.glob("*.py"):
        (code / source.name).write_text(source.read_text())
    # The first attempt shows progress (one metric row), then hangs: the hang window starts
    # there. The retry's start-up (torch, data) may take longer than the window on a busy
    # machine: the start-up allowance covers it.
    (code / "hang_once.py").write_text(
        "import json, os, runpy, time\n"
        "if os.environ['TRAINYARD_ATTEMPT'] == '1':\n"
        "    with open(os.environ['TRAINYARD_METRICS_FILE'], 'a') as metrics:\n"
        "        metrics.write(json.dumps({'step': 1, 'loss': 2.3}) + '\\n')\n"
        "    print('stuck on a dead data loader', flush=True)\n"
        "    time.sleep(3600)\n"
        "runpy.run_path('train.py', run_name='__main__')\n"
    )
    job_id = submit(
        deployment,
        "globex",
        "hang",
        code={"path": str(code)},
        command="python hang_once.py --epochs 20",
        watchdog="10s",
        watchdog_startup="10m",
    )

    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final.failure
    attempts = record_of(store, job_id).attempts
    assert [a.failure_class for a in attempts] == ["hang", None]


def test_user_code_exception_fails_once_as_a_user_error(
    deployment: Deployment, client: AirflowClient
) -> None:
    store = deployment.stores["globex"]
    job_id = submit(
        deployment,
        "globex",
        "raises",
        command="python -c \"import warnings; warnings.warn('TypedStorage is deprecated'); "
        "raise ValueError('learning rate must be positive')\"",
    )

    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.FAILED
    assert final.attempt == 1
    assert final.failure is not None
    assert final.failure.failure_class == "user_error"
    assert "ValueError: learning rate must be positive (<string>:1)" in final.failure.message
    assert "Warning" not in final.failure.message  # warnings stay in the learner log


def test_learner_over_its_memory_limit_is_a_resource_error_without_retry(
    deployment: Deployment, client: AirflowClient
) -> None:
    store = deployment.stores["globex"]
    job_id = submit(
        deployment,
        "globex",
        "oom",
        command="python -c \"import time; ballast = b'x' * (800 * 2**20); time.sleep(60)\"",
        resources={"memory": "300Mi"},
    )

    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.FAILED
    assert final.attempt == 1
    assert final.failure is not None
    assert final.failure.failure_class == "resource_error"
    assert "raise resources.memory above 300Mi" in final.failure.message


def test_cancel_stops_gracefully_with_a_final_checkpoint_and_no_process_left(
    deployment: Deployment, client: AirflowClient
) -> None:
    store = deployment.stores["globex"]
    job_id = submit(deployment, "globex", "cancelled", command="python train.py --epochs 3000")
    wait_until(lambda: committed(store, job_id), "a committed checkpoint")
    before = committed(store, job_id)[-1]

    deployment.cluster.trainyard("cancel", job_id)

    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.CANCELLED
    wait_until(
        lambda: (
            not learner_processes(job_id, user_code=True)
            and not learner_processes(job_id, user_code=False)
        ),
        "every learner process to exit",
        timeout=60,
    )
    assert committed(store, job_id)[-1] > before  # the final checkpoint was committed


#: A learner whose final save on SIGTERM takes SLOW_SAVE_S, talking all along: longer than the
#: 5 s after which Airflow kills the task process that stops it.
SLOW_SAVE_S = 10
SLOW_SAVE = f"""
import json, os, pathlib, signal, sys, time

checkpoints = pathlib.Path(os.environ["TRAINYARD_CHECKPOINT_DIR"])
stop = []
signal.signal(signal.SIGTERM, lambda signum, _: stop.append(signum))


def save(step):
    tmp = checkpoints / f"tmp-{{step}}"
    tmp.mkdir()
    (tmp / "weights.txt").write_text(f"weights at step {{step}}")
    tmp.rename(checkpoints / f"step-{{step}}")


step = 0
while not stop:
    step += 1
    save(step)
    with open(os.environ["TRAINYARD_METRICS_FILE"], "a") as f:
        f.write(json.dumps({{"step": step, "loss": 1 / step}}) + "\\n")
    time.sleep(1)
deadline = time.monotonic() + {SLOW_SAVE_S}
while time.monotonic() < deadline:
    print("saving the final checkpoint...", flush=True)
    time.sleep(0.5)
save(1000)
print("final checkpoint written", flush=True)
sys.exit(143)
"""


def test_cancel_commits_a_final_save_slower_than_airflows_kill_of_the_task(
    deployment: Deployment, client: AirflowClient, tmp_path: Path
) -> None:
    """Airflow SIGKILLs the stopped task process after 5 s; the learner, in its own session,
    finishes its save within the deployment's stop_grace_seconds (30 s) and commits it."""
    code = tmp_path / "slow-save"
    code.mkdir()
    (code / "slow_save.py").write_text(SLOW_SAVE)
    store = deployment.stores["globex"]
    job_id = submit(
        deployment,
        "globex",
        "slow-save",
        code={"path": str(code)},
        command="python slow_save.py",
        data=None,
        evaluation=None,
    )
    wait_until(lambda: committed(store, job_id), "a committed checkpoint")

    deployment.cluster.trainyard("cancel", job_id)

    assert wait_for_end(client, store, job_id).state is JobState.CANCELLED
    wait_until(
        lambda: 1000 in committed(store, job_id),
        "the slow final save to be committed",
        timeout=SLOW_SAVE_S + 60,
    )
    wait_until(
        lambda: (
            not learner_processes(job_id, user_code=True)
            and not learner_processes(job_id, user_code=False)
        ),
        "every learner process to exit",
        timeout=60,
    )


def metric_samples(text: str, tenant: str) -> dict[tuple[str, str], float]:
    """The `tenant`'s samples of a metrics scrape, by name and failure class ('' for none)."""
    return {
        (sample.name, sample.labels.get("failure_class", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("tenant") == tenant and "le" not in sample.labels
    }


def test_a_sigkill_after_a_checkpoint_is_accounted_alike_in_usage_the_api_and_the_metrics(
    deployment: Deployment, client: AirflowClient
) -> None:
    tenant, store = "globex", deployment.stores["globex"]
    job_id = submit(deployment, tenant, "accounted")

    kill_user_code_after_first_checkpoint(store, job_id, signal.SIGKILL)
    killed = datetime.now(UTC)

    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final.failure
    record = record_of(store, job_id)
    first, second = record.attempts
    job = account(record, read_utilisation(store, job_id))
    # The attempts add up to the learner time, and all of it is productive or lost.
    spans = [(a.ended_at - a.started_at).total_seconds() for a in record.attempts]
    assert job.learner_s == pytest.approx(sum(spans))
    assert job.learner_s == pytest.approx(job.productive_s + job.attempts[0].lost_s)
    # Lost: from the newest checkpoint committed before the kill to the kill (the attempt's
    # end is recorded once the learner task saw it die: within a few seconds), plus restart.
    assert first.checkpoint_at is not None
    # A checkpoint the learner saved before the kill may be committed by the runtime just after.
    assert first.checkpoint_at <= killed + timedelta(seconds=5)
    assert (killed - first.checkpoint_at).total_seconds() <= INTERVAL + 2.0
    lost_in_attempt = job.attempts[0].lost_s
    assert lost_in_attempt == pytest.approx((killed - first.checkpoint_at).total_seconds(), abs=10)
    restart = (second.started_at - first.ended_at).total_seconds()
    assert job.lost_by_class == {"platform_fault": pytest.approx(lost_in_attempt + restart)}
    assert job.goodput is not None
    assert 0 < job.goodput < 1
    assert job.used.cpu_s > 0, "the learners' utilisation was sampled"

    # The same numbers from the CLI, the plugin's API and the metrics endpoint: read them
    # until the tenant's jobs (others of this module's may still end) stay put meanwhile.
    def alike() -> bool:
        expected = usage_by_tenant(store_accounts(store))[tenant].as_json()
        cli = json.loads(deployment.cluster.trainyard("usage", "--tenant", tenant, "--json").stdout)
        api = client.request("GET", "/usage", api="/trainyard/api", params={"tenant": tenant})
        scrape = httpx.get(f"{deployment.cluster.api_url}/trainyard/metrics")  # no credentials
        scrape.raise_for_status()
        if usage_by_tenant(store_accounts(store))[tenant].as_json() != expected:
            return False
        assert cli == [expected]
        assert api == [expected]
        samples = metric_samples(scrape.text, tenant)
        assert samples["trainyard_goodput_ratio", ""] == pytest.approx(expected["goodput"])
        lost = expected["lost_hours_by_class"]
        assert isinstance(lost, dict)
        for failure_class, hours in lost.items():
            seconds = samples["trainyard_lost_seconds_total", failure_class]
            assert seconds == pytest.approx(hours * 3600)
        retries = expected["retries_by_class"]
        assert isinstance(retries, dict)
        for failure_class, count in retries.items():
            assert samples["trainyard_retries_total", failure_class] == count
        return True

    wait_until(alike, f"{tenant}'s usage to stay put while it is read three ways")
