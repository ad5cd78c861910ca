"""A hyper-parameter sweep through real Airflow with real PyTorch trials (issue 26): the digits
example's learning rate searched over 8 trials, 2 at once, random search with ASHA, while one
trial's learner is SIGKILLed, the scheduler is killed with its process group and then the
whole Airflow restarted mid-sweep.
Every trial is a job of its own with its own draw, none runs twice, trailing ones are pruned,
the best trial is as accurate as the example's default and its model is registered under the
sweep's name; the sweep's page in headless Chromium shows them. A sweep cancelled mid-way
starts no more trials and cancels those running; a paused one holds its trials and, resumed,
finishes."""

from __future__ import annotations

import json
import signal
from functools import partial
from typing import Any

import pytest

from devkit.deployment import Deployment
from devkit.learners import learner_processes, wait_for_end, wait_until
from tests.support.browser import chromium
from tests.support.users import token
from trainyard.cli.client import AirflowClient
from trainyard.cli.status import job_status
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.jobs.records import JobState, load_record
from trainyard.jobs.registry import ModelRegistry
from trainyard.storage import ObjectStore
from trainyard.sweeps.record import SweepRecord, SweepState, load_sweep
from trainyard.tenancy.names import dag_id_for_sweeps, dag_id_for_tenant

pytestmark = pytest.mark.e2e

TENANT = "acme"  # S3 storage
NAME = "digits-sweep"
TRIALS = 8
#: The example's evaluation threshold (examples/pytorch-digits/job.yaml): its default
#: learning rate clears it.
THRESHOLD = 0.9
SWEEP: dict[str, Any] = {
    # Down to rates at which the model barely learns in a few epochs: ASHA has trials to stop.
    "parameters": {"lr": {"distribution": "log_uniform", "low": 1e-6, "high": 3e-2}},
    "trials": TRIALS,
    "parallel": 2,
    "algorithm": "random",
    # The held-out accuracy the example reports at each epoch's end (its last is the final).
    "metric": "val_accuracy",
    "goal": "maximize",
    "early_stopping": {"rule": "asha", "min_steps": 40, "reduction_factor": 2},
    "seed": 4,
}

#: The example's 85 steps an epoch held to at least 50 ms each.
PACE = "--min-step-seconds 0.05"


def committed(store: ObjectStore, job_id: str) -> list[int]:
    return CheckpointStore(store, JobLayout(job_id)).committed_steps()


def sweep_of(store: ObjectStore, sweep_id: str) -> SweepRecord:
    record = load_sweep(store, sweep_id)
    assert record is not None, f"{sweep_id} has no record"
    return record


def test_a_sweep_runs_each_trial_once_as_a_job_through_a_learner_kill_and_airflow_crashes(
    deployment: Deployment, client: AirflowClient
) -> None:
    store = deployment.stores[TENANT]
    manifest = deployment.write_manifest(
        TENANT,
        "sweep.yaml",
        name=NAME,
        # At least 4 s an epoch, however fast the machine: each trial still trains for several
        # looks of its 5 s early-stopping watch after its first epoch's row.
        command=f"python train.py --epochs 6 --lr {{lr}} {PACE}",
        checkpoint={"interval": "2s", "keep": 3},
        sweep=SWEEP,
    )
    sweep_id = deployment.submit(manifest)
    first = f"{sweep_id}.t1"
    # The example with its default learning rate, as a job of the other tenant (its own quota).
    baseline = deployment.submit(
        deployment.write_manifest(
            "globex", "baseline.yaml", name="digits-default", command="python train.py --epochs 6"
        )
    )

    # A trial's learner dies (a platform fault): its job retries and resumes.
    wait_until(lambda: committed(store, first), f"{first} to commit a checkpoint", timeout=600)
    (learner,) = learner_processes(first, user_code=True, rank=0, mode=RunMode.TRAIN)
    learner.send_signal(signal.SIGKILL)
    # The scheduler dies with its workers once the third trial was drawn.
    wait_until(lambda: len(sweep_of(store, sweep_id).trials) >= 3, "a third trial", timeout=600)
    deployment.cluster.kill("scheduler", signal.SIGKILL)
    deployment.cluster.start("scheduler")
    # The whole Airflow dies and starts again once the fifth trial was drawn.
    wait_until(lambda: len(sweep_of(store, sweep_id).trials) >= 5, "a fifth trial", timeout=600)
    components = list(deployment.cluster.processes)
    for component in components:
        deployment.cluster.kill(component, signal.SIGKILL)
    for component in components:
        deployment.cluster.start(component)
    deployment.cluster.wait_healthy()

    def ended() -> SweepRecord | None:
        record = sweep_of(store, sweep_id)
        return None if record.state is SweepState.RUNNING else record

    final = wait_until(ended, "the sweep to end", timeout=1500)

    assert final.state is SweepState.SUCCEEDED
    trial_ids = [f"{sweep_id}.t{n}" for n in range(1, TRIALS + 1)]
    assert sorted(t.job_id for t in final.trials) == sorted(trial_ids)
    # Each trial is one run of the tenant's DAG, under its own job id: none ran twice.
    runs = [
        str(run["dag_run_id"])
        for run in client.list_runs(dag_id_for_tenant(TENANT), limit=100)
        if str(run["dag_run_id"]).startswith(sweep_id)
    ]
    assert sorted(runs) == sorted(trial_ids)
    # The controller is a new process at each look: each trial still drew its own rate.
    assert len({t.values["lr"] for t in final.trials}) == TRIALS, final.trials
    states = {t.job_id: t.state for t in final.trials}
    # A trial that learns nothing and that ASHA let pass (one that led the sweep: the killed
    # first trial lagged behind it) trains to its end and fails the example's threshold.
    assert set(states.values()) <= {"succeeded", "pruned", "failed"}, states
    assert "pruned" in states.values(), states  # ASHA stopped a trailing trial early

    killed = load_record(store, first)
    assert killed is not None
    assert killed.attempts[0].failure_class == "platform_fault"
    assert killed.state in (JobState.SUCCEEDED, JobState.PRUNED)
    for job_id, state in states.items():
        record = load_record(store, job_id)
        assert record is not None
        if state == "pruned":
            assert record.attempts[-1].failure_class == "pruned"
            assert committed(store, job_id), f"{job_id} left no final checkpoint"
            assert record.model_version is None  # nothing after the learner ran
        if state == "failed":  # its model missed the threshold: the user's gate, no fault
            assert record.evaluation is not None, job_id
            assert record.evaluation["accuracy"] < THRESHOLD, job_id

    best = load_record(store, final.best_job_id or "")
    assert best is not None
    assert best.evaluation is not None
    default = wait_for_end(client, deployment.stores["globex"], baseline)
    assert default.evaluation is not None
    # At least the default's accuracy (within the 0.01 two runs of one setting differ by).
    assert best.evaluation["accuracy"] >= default.evaluation["accuracy"] - 0.01
    assert best.evaluation["accuracy"] >= THRESHOLD
    versions = ModelRegistry(store, NAME).versions()
    assert final.best_job_id in [version.job_id for version in versions]

    shown = json.loads(deployment.cluster.trainyard("sweep", "show", sweep_id, "--json").stdout)
    assert shown["trials"][0]["job_id"] == final.best_job_id
    assert len(shown["trials"]) == TRIALS

    # The sweep page in headless Chromium: every trial, the best one marked, pruned ones too,
    # and the metric of every trial that reported one in the chart.
    env, base = deployment.cluster.env, deployment.cluster.api_url
    user = (env["TRAINYARD_USERNAME"], env["TRAINYARD_PASSWORD"])
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1400})
        context.add_cookies([{"name": "_token", "value": token(deployment, user), "url": base}])
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{base}/trainyard/tenants/{TENANT}/sweeps/{sweep_id}")
        page.locator('body[data-loaded="succeeded"]').wait_for()
        rows = page.locator("tr.trial")
        assert rows.count() == TRIALS
        assert page.locator("tr.trial.best").get_attribute("data-job") == final.best_job_id
        assert page.locator('tr.trial[data-state="pruned"]').count() >= 1
        assert page.locator("#trials-chart canvas").count() == 1
        labels = page.locator("#trials-chart .u-legend .u-series .u-label").all_inner_texts()
        assert any("(pruned)" in label for label in labels), labels
        context.close()
    assert errors == []


def test_a_cancelled_sweep_starts_no_more_trials_and_cancels_the_running_ones(
    deployment: Deployment, client: AirflowClient
) -> None:
    store = deployment.stores[TENANT]
    manifest = deployment.write_manifest(
        TENANT,
        "long-sweep.yaml",
        name="long-sweep",
        command="python train.py --epochs 300 --lr {lr}",
        checkpoint={"interval": "2s", "keep": 3},
        evaluation=None,
        sweep={**SWEEP, "trials": 4, "early_stopping": {"rule": "none"}},
    )
    sweep_id = deployment.submit(manifest)
    running = [f"{sweep_id}.t1", f"{sweep_id}.t2"]
    for job_id in running:
        wait_until(partial(committed, store, job_id), f"{job_id} to train", timeout=600)

    said = deployment.cluster.trainyard("cancel", sweep_id).stdout.split()
    assert all(job_id in said for job_id in running), said

    for job_id in running:
        assert wait_for_end(client, store, job_id).state is JobState.CANCELLED
    assert sweep_of(store, sweep_id).state is SweepState.CANCELLED
    assert client.get_run(dag_id_for_sweeps(TENANT), sweep_id)["state"] == "failed"
    trials = [
        run["dag_run_id"]
        for run in client.list_runs(dag_id_for_tenant(TENANT), limit=100)
        if str(run["dag_run_id"]).startswith(sweep_id)
    ]
    assert sorted(trials) == running  # no trial was started after the cancel


def test_a_paused_sweep_holds_its_trials_and_resumed_finishes_every_trial(
    deployment: Deployment, client: AirflowClient
) -> None:
    store = deployment.stores[TENANT]
    manifest = deployment.write_manifest(
        TENANT,
        "paused-sweep.yaml",
        name="paused-sweep",
        command=f"python train.py --epochs 6 --lr {{lr}} {PACE}",  # still training when paused
        checkpoint={"interval": "2s", "keep": 3},
        evaluation=None,
        sweep={**SWEEP, "trials": 3, "early_stopping": {"rule": "none"}},
    )
    sweep_id = deployment.submit(manifest)
    running = [f"{sweep_id}.t1", f"{sweep_id}.t2"]
    for job_id in running:
        wait_until(partial(committed, store, job_id), f"{job_id} to train", timeout=600)

    said = deployment.cluster.trainyard("pause", sweep_id).stdout.split()
    assert all(job_id in said for job_id in running), said

    def paused(job_id: str) -> bool:
        return job_status(client, store, job_id).state is JobState.PAUSED

    for job_id in running:
        wait_until(partial(paused, job_id), f"{job_id} to be paused")
    assert sweep_of(store, sweep_id).state is SweepState.PAUSED

    deployment.cluster.trainyard("resume", sweep_id)

    def ended() -> SweepRecord | None:
        record = sweep_of(store, sweep_id)
        return record if record.state in (SweepState.SUCCEEDED, SweepState.FAILED) else None

    final = wait_until(ended, "the resumed sweep to end", timeout=900)
    assert final.state is SweepState.SUCCEEDED
    assert sorted(t.job_id for t in final.trials) == [*running, f"{sweep_id}.t3"]
    assert {t.state for t in final.trials} == {"succeeded"}
    for job_id in running:  # each went on from the checkpoint its pause committed
        record = load_record(store, job_id)
        assert record is not None
        assert [a.failure_class for a in record.attempts] == ["paused", None]
