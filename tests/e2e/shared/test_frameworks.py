"""Every framework through real Airflow, in its own environment: the Keras and JAX examples
train, evaluate and register a model; a 2-learner PyTorch DDP job runs as a gang; a framework
version the deployment does not provide is refused at validate.

One Airflow for the module; each test submits its own jobs, so none depends on another.
"""

from __future__ import annotations

import re
import signal

import pytest

from devkit.deployment import EXAMPLE, EXAMPLES, Deployment
from devkit.learners import learner_processes, wait_for_end, wait_until
from trainyard.backends.local.environments import Environments, provided_frameworks
from trainyard.cli.client import AirflowClient
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.jobs.records import JobState, load_record
from trainyard.jobs.registry import ModelRegistry
from trainyard.storage import ObjectStore
from trainyard.tenancy.config import EnvironmentsConfig

pytestmark = pytest.mark.e2e

#: Framework -> (its example's training script, the model file it leaves in the results).
SCRIPTS = {
    "tensorflow": ("keras_train.py", "model.keras"),
    "jax": ("jax_train.py", "params.npz"),
}


@pytest.mark.parametrize(("framework", "tenant"), [("tensorflow", "acme"), ("jax", "globex")])
def test_the_example_trains_evaluates_and_registers_in_its_frameworks_environment(
    deployment: Deployment, client: AirflowClient, framework: str, tenant: str
) -> None:
    store = deployment.stores[tenant]
    script, model_file = SCRIPTS[framework]
    job_id = deployment.submit(
        deployment.write_manifest(
            tenant,
            f"{framework}.yaml",
            example=EXAMPLES[framework],
            checkpoint={"interval": "2s"},
        )
    )

    final = wait_for_end(client, store, job_id, timeout=600)

    assert final.state is JobState.SUCCEEDED, final.failure
    assert final.evaluation is not None
    assert final.evaluation["accuracy"] >= 0.9
    layout = JobLayout(job_id)
    results = {info.key.removeprefix(layout.results + "/") for info in store.list(layout.results)}
    assert model_file in results
    assert CheckpointStore(store, layout).committed_steps()
    record = load_record(store, job_id)
    assert record is not None
    [version] = ModelRegistry(store, record.manifest["name"]).versions()
    assert version.job_id == job_id
    # It ran on the interpreter of the framework's environment, not the worker's.
    [env] = [e for e in provided_frameworks().values() if e.name.value == framework]
    python = Environments(EnvironmentsConfig().dir).python(env)
    task_log = "\n".join(client.task_log(final.dag_id, final.dag_run_id, "learner", 1))
    assert f"learner runtime: {python}" in task_log
    assert "held-out accuracy" in learner_log(store, job_id, attempt=1, rank=0)
    assert script in str(record.manifest["command"])


def learner_log(store: ObjectStore, job_id: str, *, attempt: int, rank: int) -> str:
    return store.get_bytes(JobLayout(job_id).learner_log(RunMode.TRAIN, attempt, rank)).decode()


def test_a_framework_version_not_provided_fails_at_validate_once_with_the_fix(
    deployment: Deployment, client: AirflowClient
) -> None:
    store = deployment.stores["globex"]
    job_id = deployment.submit(
        deployment.write_manifest(
            "globex", "old-tf.yaml", framework={"name": "tensorflow", "version": "2.9"}
        )
    )

    final = wait_for_end(client, store, job_id)

    assert final.state is JobState.FAILED
    assert final.failure is not None
    assert (final.failure.failure_class, final.failure.task) == ("resource_error", "validate")
    assert "provides no tensorflow:2.9" in final.failure.message
    assert "tensorflow:2.21" in final.failure.message
    assert "trainyard envs prepare" in final.failure.message
    tries = {
        ti["task_id"]: ti["try_number"]
        for ti in client.task_instances(final.dag_id, final.dag_run_id)
    }
    assert tries["validate"] == 1  # once: no retry can provide it


def test_a_two_learner_ddp_job_stops_as_a_gang_and_resumes_from_the_newest_checkpoint(
    deployment: Deployment, client: AirflowClient
) -> None:
    store = deployment.stores["globex"]
    job_id = deployment.submit(
        deployment.write_manifest(
            "globex",
            "ddp.yaml",
            example=EXAMPLE,
            name="digits-ddp",
            command="python ddp_train.py --epochs 150",
            resources={"learners": 2, "cpus": 1},
            checkpoint={"interval": "2s", "keep": 5},
        )
    )
    wait_until(
        lambda: CheckpointStore(store, JobLayout(job_id)).committed_steps(),
        "a committed checkpoint of the DDP job",
        timeout=300,
    )
    [rank_0] = wait_until(
        lambda: learner_processes(job_id, user_code=True, rank=0), "rank 0's training"
    )
    [rank_1] = learner_processes(job_id, user_code=False, rank=1)
    newest = CheckpointStore(store, JobLayout(job_id)).committed_steps()[-1]

    rank_1.send_signal(signal.SIGKILL)  # rank 1's learner is lost, as with its node

    wait_until(lambda: not rank_0.is_running(), "rank 0 to be stopped with its gang", timeout=60)
    final = wait_for_end(client, store, job_id, timeout=600)
    assert final.state is JobState.SUCCEEDED, final.failure
    record = load_record(store, job_id)
    assert record is not None
    assert [a.failure_class for a in record.attempts] == ["platform_fault", None]
    task_log = "\n".join(client.task_log(final.dag_id, final.dag_run_id, "learner", 1))
    assert "learner 1 exited with code -9: stopping learners 0 of its gang" in task_log
    # The whole group restarted from one step: the newest committed one (at least the newest
    # when rank 1 was lost; rank 0's final checkpoint when stopped may be newer).
    resumed = {
        rank: re.search(
            r"resumed from step-(\d+)", learner_log(store, job_id, attempt=2, rank=rank)
        )
        for rank in (0, 1)
    }
    assert all(resumed.values()), resumed
    steps = {int(match.group(1)) for match in resumed.values() if match}
    assert len(steps) == 1
    assert steps.pop() >= newest
    assert final.evaluation is not None
    assert final.evaluation["accuracy"] >= 0.9
