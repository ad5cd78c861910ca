"""The Kubernetes learner backend through real Airflow and the provider's real operator.

Tenant `acme` runs its learners on Kubernetes (a per-tenant override; the deployment's default
stays local): the fake API server of devkit/kube_server.py, reached through a kubeconfig
file, runs each pod's container as a local process. Storage is moto's S3 server; pods read the
keys from a Secret in the tenant's namespace. All jobs are submitted at once, so the module
pays for their Airflow overhead once; each test then injects its fault and checks the outcome.

The executor has 4 slots (parallelism 4) for more concurrent learners than that: learner tasks
defer while their pods train. Once six jobs and a 2-learner group train at once, every other job
has ended and no task runs on a worker, the triggerer and then the scheduler (with the
LocalExecutor's workers) are SIGKILLed and restarted while the pods train; the group is
reattached as a group. A 2-learner job is cancelled while it trains: its pods stop in their
grace period; another is paused (no pod or Service left) and resumed.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devkit.deployment import Deployment, deploy
from devkit.kube_server import (
    FakeKubernetes,
    FakeNode,
    FakePod,
    container_processes,
    running_kube_server,
)
from devkit.learners import wait_for_end, wait_until
from devkit.s3_server import S3Server, free_port, running_s3_server
from trainyard.backends.base import FINAL_UPLOAD_SECONDS
from trainyard.backends.kubernetes.pods import JOB_ID_LABEL, RANK_LABEL, TENANT_LABEL, label_value
from trainyard.cli.client import AirflowClient
from trainyard.cli.status import job_status
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.jobs.progress import read_metrics
from trainyard.jobs.records import JobRecord, JobState, load_record
from trainyard.jobs.state import TERMINAL_STATES
from trainyard.storage import ObjectStore

pytestmark = pytest.mark.e2e

IMAGE = "registry.test/trainyard/pytorch:2.13.0-cuda"
UNKNOWN_IMAGE = "registry.test/nobody/learner:404"
NAMESPACE = "trainyard-acme"
GPU_SELECTOR = {"gpu.test/type": "t4"}
STARTUP_TIMEOUT = 15
LONG_TRAINING = "python train.py --epochs 150"
PARALLELISM = 4
#: Six jobs that train at once on PARALLELISM worker slots, through the triggerer's and the
#: scheduler's crash (they train until the crashes are over).
STEADY = tuple(f"steady-{number}" for number in range(1, 7))
#: A 2-learner group that trains through the same crashes (the trigger watches both ranks).
STEADY_GROUP = "steady-group"
DDP_JOB = Path(__file__).resolve().parents[1] / "support" / "ddp_job"
GATED_JOB = Path(__file__).resolve().parents[1] / "support" / "gated_job"
#: The steady jobs train until this file exists (the crashes create it once they are over).
GATE = Path(tempfile.gettempdir()) / f"trainyard-k8s-gate-{os.getpid()}"
#: Seventeen jobs share four executor slots: each job's tasks wait their turn. Every wait of
#: the module ends this long after the jobs were submitted (`Deadline`): a stuck job fails the
#: tests that wait on it then, not a full timeout later each.
END_TIMEOUT = 900
JOBS: dict[str, dict[str, Any]] = {
    "gpu": {"resources": {"gpus": 1, "gpu_type": "t4", "cpus": 1, "memory": "2Gi"}},
    "evicted": {"command": LONG_TRAINING, "checkpoint": {"interval": "1s", "keep": 5}},
    # Holds 1 GiB, written so that it is resident: the fake kubelet OOM-kills it (no injection).
    "oom": {
        "command": "python -c \"import time; blob = b'x' * 2**30; time.sleep(300)\"",
        "resources": {"memory": "512Mi"},
    },
    "bad-image": {"framework": {"name": "custom", "version": "1", "image": UNKNOWN_IMAGE}},
    "no-fit": {"resources": {"gpus": 4}},
    "ddp": {
        "code": {"path": str(DDP_JOB)},
        "command": "python train.py",
        "resources": {"learners": 2},
        "checkpoint": {"interval": "2s", "keep": 5},
        "evaluation": None,
    },
    # Trains (both ranks, independently) until it is cancelled; rank 0 checkpoints.
    "cancelled": {
        "command": "python train.py --epochs 3000",
        "resources": {"learners": 2},
        "checkpoint": {"interval": "1s", "keep": 5},
        "evaluation": None,
    },
    # A 2-learner group paused while it trains, then resumed.
    "paused": {
        "command": "python train.py --epochs 800",
        "resources": {"learners": 2},
        "checkpoint": {"interval": "1s", "keep": 5},
        "evaluation": None,
    },
    **{
        name: {
            "code": {"path": str(GATED_JOB)},
            "command": f"python train.py --until {GATE}",
            "data": None,
            "evaluation": None,
            "resources": {"learners": 2 if name == STEADY_GROUP else 1},
        }
        for name in (*STEADY, STEADY_GROUP)
    },
}


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto server of this module's own: the session's holds every other module's buckets,
    users and objects by now, and this module writes more than any (its faults, or its
    seventeen jobs, need the storage to answer as fast as a fresh server does)."""
    with running_s3_server(tmp_path_factory.mktemp("own-s3"), authenticate=True) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[FakeKubernetes]:
    """One node with one (pretend) GPU; the learner image runs the runtime on CPU."""
    images = {IMAGE: [sys.executable, "-m", "trainyard.runtime"]}
    node = FakeNode(labels=GPU_SELECTOR, gpus=1)
    with running_kube_server(tmp_path_factory.mktemp("kube"), images, node) as api:
        api.add_secret(
            NAMESPACE,
            "trainyard-storage",
            {"access_key": s3_server.access_key, "secret_key": s3_server.secret_key},
        )
        yield api


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server, cluster: FakeKubernetes
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deployment")
    kubernetes = {
        "images": {"pytorch:2.13": IMAGE},
        "gpu_node_selectors": {"t4": GPU_SELECTOR},
        "startup_timeout_seconds": STARTUP_TIMEOUT,
        "rendezvous_port": free_port(),
        "in_cluster": False,
        "config_file": str(cluster.write_kubeconfig(root / "kubeconfig")),
    }
    # Every job runs at once: faults are injected while the others run. The quotas leave room
    # for all of them (the GPU jobs take 1 + 4 GPUs; the CPU jobs 15 learners).
    acme = {
        "learner_backend": "kubernetes",
        "max_running_jobs": len(JOBS),
        "gpu_quota": 8,
        "cpu_quota": 24,
    }
    airflow = {
        "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
        # Seventeen jobs on a loaded 2-core machine can starve the scheduler's loop past the
        # dev default of 15 s, and it then resets its own running tasks as orphans (a learner
        # retried for nothing). The crashes below strike when no task runs, so nothing here
        # waits for an orphan to be reset or a task heartbeat to time out.
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "120",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "120",
    }
    with deploy(root, s3_server, {"acme": acme}, kubernetes, airflow) as deployed:
        # The embedded default's own settings once overrode these (its 15 s threshold then
        # reset running learner tasks on a loaded machine: retried for nothing).
        assert airflow.items() <= deployed.cluster.env.items()
        yield deployed


@pytest.fixture(scope="module")
def jobs(deployment: Deployment) -> dict[str, str]:
    """Scenario -> job id, every job submitted at once."""
    manifests = {
        name: deployment.write_manifest("acme", f"{name}.yaml", name=name, **changes)
        for name, changes in JOBS.items()
    }
    with ThreadPoolExecutor(max_workers=len(manifests)) as pool:
        submitted = {name: pool.submit(deployment.submit, path) for name, path in manifests.items()}
    return {name: future.result() for name, future in submitted.items()}


@dataclass(frozen=True)
class Deadline:
    """The module's one deadline (time.monotonic) for every wait."""

    at: float

    def left(self) -> float:
        return max(1.0, self.at - time.monotonic())


@pytest.fixture(scope="module")
def deadline(jobs: dict[str, str]) -> Deadline:
    """END_TIMEOUT after every job was submitted."""
    return Deadline(time.monotonic() + END_TIMEOUT)


@pytest.fixture(scope="module", autouse=True)
def crashes(
    cluster: FakeKubernetes,
    deployment: Deployment,
    jobs: dict[str, str],
    client: AirflowClient,
    deadline: Deadline,
) -> Iterator[Future[list[str]]]:
    """Once the STEADY jobs and both ranks of STEADY_GROUP all train at once, their learner
    tasks deferred, every other job has ended with no pod left, and no task runs on a worker
    (so that the crash interrupts nothing but the watch: no task on a worker, no cancel that
    the triggerer has yet to act on), SIGKILL the triggerer, then the scheduler (the
    LocalExecutor's workers are its children), each restarted at once. Then the steady jobs
    may finish. The result: the learner pods that trained meanwhile."""
    store = deployment.stores["acme"]

    def learner_state(job_id: str) -> str | None:
        record = load_record(store, job_id)
        instances = client.task_instances(record.dag_id, record.dag_run_id) if record else []
        return next((ti["state"] for ti in instances if ti["task_id"] == "learner"), None)

    def busy_workers() -> int:
        busy = client.request(
            "GET",
            "/dags/~/dagRuns/~/taskInstances",
            params={"state": ["running", "queued"], "limit": 1},
        )
        return int(busy["total_entries"])

    others = [job_id for name, job_id in jobs.items() if name not in (*STEADY, STEADY_GROUP)]

    def others_ended() -> bool:
        if any(cluster.pods_of(**{JOB_ID_LABEL: label_value(job_id)}) for job_id in others):
            return False
        return all(job_status(client, store, job_id).state in TERMINAL_STATES for job_id in others)

    def training_at_once() -> list[str] | None:
        if not others_ended():
            return None
        pods = [running_pod(cluster, jobs[name]) for name in STEADY]
        pods += [running_pod(cluster, jobs[STEADY_GROUP], rank) for rank in (0, 1)]
        if not all(pods) or busy_workers():
            return None
        if any(learner_state(jobs[name]) != "deferred" for name in (*STEADY, STEADY_GROUP)):
            return None
        return [pod.name for pod in pods if pod is not None]

    def not_yet() -> str:
        """What training_at_once still waits for, for the failure's message."""
        ended = {job_id: str(job_status(client, store, job_id).state) for job_id in others}
        pods = {
            name: len(cluster.pods_of(**{JOB_ID_LABEL: label_value(jobs[name])})) for name in jobs
        }
        learners = {name: learner_state(jobs[name]) for name in (*STEADY, STEADY_GROUP)}
        return (
            f"other jobs: {ended}; pods per job: {pods}; steady learner tasks: {learners}; "
            f"busy workers: {busy_workers()}"
        )

    def crash() -> list[str]:
        try:
            running = wait_until(
                training_at_once, "seven jobs training at once, the others ended", deadline.left()
            )
        except AssertionError as timed_out:
            GATE.touch()  # the steady jobs end anyway: no later test waits on them for nothing
            raise AssertionError(f"{timed_out}: {not_yet()}") from None
        for component in ("triggerer", "scheduler"):
            deployment.cluster.kill(component, signal.SIGKILL)
            deployment.cluster.start(component)
        GATE.touch()
        return running

    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            yield pool.submit(crash)
    finally:
        GATE.unlink(missing_ok=True)


@pytest.fixture(scope="module", autouse=True)
def faults(
    cluster: FakeKubernetes,
    deployment: Deployment,
    jobs: dict[str, str],
) -> Iterator[dict[str, Future[int]]]:
    """Scenario -> its fault, injected as soon as its job is far enough (all run at once);
    autouse, so that the injections start with the module's first test.

    Each result is the newest committed checkpoint step when the fault struck (0 if none).
    """
    store = deployment.stores["acme"]

    def evict(job_id: str, rank: int) -> int:
        pod = running_learner(cluster, job_id, rank)
        steps = wait_until(CheckpointStore(store, JobLayout(job_id)).committed_steps, job_id)
        cluster.evict(pod)
        return steps[-1]

    with ThreadPoolExecutor(max_workers=3) as pool:
        yield {
            "evicted": pool.submit(evict, jobs["evicted"], 0),
            "ddp": pool.submit(evict, jobs["ddp"], 1),
        }


@pytest.fixture
def store(deployment: Deployment) -> ObjectStore:
    return deployment.stores["acme"]


def job_pods(cluster: FakeKubernetes, job_id: str, mode: RunMode = RunMode.TRAIN) -> list[FakePod]:
    pods = cluster.pods_of(**{JOB_ID_LABEL: label_value(job_id)})
    return [pod for pod in pods if pod.container.get("args") == [mode.value]]


def running_pod(cluster: FakeKubernetes, job_id: str, rank: int = 0) -> FakePod | None:
    """The job's training pod of `rank` if its container runs the runtime and user code."""
    for pod in job_pods(cluster, job_id):
        labels = pod.body["metadata"]["labels"]
        if labels.get(RANK_LABEL) == str(rank) and len(container_processes(pod)) >= 2:
            return pod
    return None


def running_learner(
    cluster: FakeKubernetes, job_id: str, rank: int = 0, timeout: float = 420
) -> FakePod:
    """The job's training pod of `rank` once its container runs the runtime and user code."""
    return wait_until(
        lambda: running_pod(cluster, job_id, rank),
        f"the running learner pod of rank {rank} of {job_id}",
        timeout=timeout,
    )


def record_of(store: ObjectStore, job_id: str) -> JobRecord:
    record = load_record(store, job_id)
    assert record is not None
    return record


def job_services(cluster: FakeKubernetes, job_id: str) -> list[str]:
    """Names of the job's Services that exist (a group's rendezvous Service)."""
    return [
        name
        for (_, name), body in cluster.services.items()
        if body["metadata"]["labels"].get(JOB_ID_LABEL) == label_value(job_id)
    ]


def assert_no_pod_left(cluster: FakeKubernetes, job_id: str) -> None:
    """Scenario 7: the operator deleted every pod of the job, whatever its end."""
    assert cluster.pods_of(**{JOB_ID_LABEL: label_value(job_id)}) == []
    assert cluster.created_pods(**{JOB_ID_LABEL: label_value(job_id)})


def test_cancel_of_a_learner_group_stops_its_pods_with_sigterm_and_a_final_checkpoint(
    cluster: FakeKubernetes,
    deployment: Deployment,
    jobs: dict[str, str],
    client: AirflowClient,
    store: ObjectStore,
    deadline: Deadline,
) -> None:
    """`trainyard cancel` while both ranks train: the deferred task's trigger deletes the pods
    with their grace period, rank 0 commits a final checkpoint, no pod or Service is left.
    First in the module: the group trains on CPU until it is cancelled."""
    job_id = jobs["cancelled"]
    pods = [running_learner(cluster, job_id, rank, deadline.left()) for rank in (0, 1)]
    checkpoints = CheckpointStore(store, JobLayout(job_id))
    before = wait_until(checkpoints.committed_steps, "a committed checkpoint", deadline.left())[-1]
    assert job_services(cluster, job_id)  # the group's rendezvous Service

    deployment.cluster.trainyard("cancel", job_id)

    final = wait_for_end(client, store, job_id, deadline.left())
    assert final.state is JobState.CANCELLED
    wait_until(
        lambda: not cluster.pods_of(**{JOB_ID_LABEL: label_value(job_id)}),
        "the group's pods to be gone",
        timeout=120,
    )
    for pod in pods:  # stopped within the grace period: no SIGKILL
        assert pod.signals == [signal.SIGTERM], (pod.name, pod.signals)
        assert pod.status["phase"] == "Failed"  # exit 143: stopped, not done
    committed = checkpoints.committed_steps()
    assert committed[-1] > before
    trained = [row["step"] for row in read_metrics(store, job_id)]
    assert committed[-1] >= max(trained)  # the final checkpoint holds the last step trained
    assert final.attempt == 1  # a cancelled job is not retried
    assert job_services(cluster, job_id) == []
    assert_no_pod_left(cluster, job_id)


def test_a_paused_group_holds_no_pod_or_service_and_resumes_from_its_final_checkpoint(
    cluster: FakeKubernetes,
    deployment: Deployment,
    jobs: dict[str, str],
    client: AirflowClient,
    store: ObjectStore,
    deadline: Deadline,
) -> None:
    """`trainyard pause` while both ranks train: the group's pods stop with SIGTERM and rank 0
    commits a final checkpoint; while paused no pod or Service of the job is left; `trainyard
    resume` trains on in new pods of the same job from that checkpoint."""
    job_id = jobs["paused"]
    pods = [running_learner(cluster, job_id, rank, deadline.left()) for rank in (0, 1)]
    checkpoints = CheckpointStore(store, JobLayout(job_id))
    before = wait_until(checkpoints.committed_steps, "a committed checkpoint", deadline.left())[-1]

    assert f"{job_id}: paused" in deployment.cluster.trainyard("pause", job_id).stdout

    wait_until(
        lambda: not cluster.pods_of(**{JOB_ID_LABEL: label_value(job_id)}),
        "the paused group's pods to be gone",
        timeout=120,
    )
    assert job_services(cluster, job_id) == []
    for pod in pods:
        assert pod.signals == [signal.SIGTERM], (pod.name, pod.signals)
    paused_at = checkpoints.committed_steps()[-1]
    assert paused_at > before  # the final checkpoint on SIGTERM
    assert job_status(client, store, job_id).state is JobState.PAUSED
    assert [a.failure_class for a in record_of(store, job_id).attempts] == ["paused"]

    deployment.cluster.trainyard("resume", job_id)

    final = wait_for_end(client, store, job_id, deadline.left())
    assert final.state is JobState.SUCCEEDED, final.failure
    log = store.get_bytes(JobLayout(job_id).learner_log(RunMode.TRAIN, 2, 0)).decode()
    match = re.search(r"resumed from step-(\d+)", log)
    assert match, log[-2000:]
    assert int(match.group(1)) >= paused_at
    assert [a.failure_class for a in record_of(store, job_id).attempts] == ["paused", None]
    assert job_services(cluster, job_id) == []
    assert_no_pod_left(cluster, job_id)


def test_a_gpu_job_trains_and_evaluates_in_pods_that_carry_the_platforms_settings(
    cluster: FakeKubernetes,
    jobs: dict[str, str],
    client: AirflowClient,
    store: ObjectStore,
    deadline: Deadline,
) -> None:
    job_id = jobs["gpu"]

    final = wait_for_end(client, store, job_id, deadline.left())

    assert final.state is JobState.SUCCEEDED, final.failure
    assert final.evaluation is not None
    assert final.evaluation["accuracy"] >= 0.9
    assert final.model_version == 1
    created = cluster.created_pods(**{JOB_ID_LABEL: label_value(job_id)})
    assert sorted(body["spec"]["containers"][0]["args"][0] for body in created) == [
        "evaluate",
        "train",
    ]
    [train] = [body for body in created if body["spec"]["containers"][0]["args"] == ["train"]]
    metadata, spec = train["metadata"], train["spec"]
    [container] = spec["containers"]
    assert metadata["namespace"] == NAMESPACE
    assert metadata["labels"][TENANT_LABEL] == "acme"
    assert metadata["labels"][JOB_ID_LABEL] == label_value(job_id)
    assert container["image"] == IMAGE
    assert container["resources"]["limits"] == {
        "cpu": "1000m",
        "memory": "2Gi",
        "nvidia.com/gpu": "1",
    }
    assert spec["nodeSelector"] == GPU_SELECTOR
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert spec["serviceAccountName"] == "trainyard-learner"
    # stop_grace_seconds (the default 30), then the runtime's final upload.
    assert spec["terminationGracePeriodSeconds"] == 30 + FINAL_UPLOAD_SECONDS
    secret_refs = {
        var["name"]: var["valueFrom"]["secretKeyRef"]
        for var in container["env"]
        if "valueFrom" in var
    }
    assert secret_refs == {
        "TRAINYARD_STORAGE_ACCESS_KEY": {"name": "trainyard-storage", "key": "access_key"},
        "TRAINYARD_STORAGE_SECRET_KEY": {"name": "trainyard-storage", "key": "secret_key"},
    }
    assert "trainyard-test-secret" not in repr(train)
    log = "\n".join(client.task_log(final.dag_id, final.dag_run_id, "learner", 1))
    assert "held-out accuracy" in log  # the pod's log streamed into the task log
    assert_no_pod_left(cluster, job_id)


def test_an_evicted_learner_is_retried_and_resumes_from_the_newest_checkpoint(
    cluster: FakeKubernetes,
    jobs: dict[str, str],
    faults: dict[str, Future[int]],
    client: AirflowClient,
    store: ObjectStore,
    deadline: Deadline,
) -> None:
    job_id = jobs["evicted"]
    newest = faults["evicted"].result()  # evicted after a checkpoint was committed

    final = wait_for_end(client, store, job_id, deadline.left())
    assert final.state is JobState.SUCCEEDED, final.failure
    assert [a.failure_class for a in record_of(store, job_id).attempts] == ["preemption", None]
    # The evicted learner committed a final checkpoint in its grace period; no step is lost.
    first = [row for row in read_metrics(store, job_id) if row["attempt"] == 1]
    assert resumed_step(store, job_id, attempt=2) >= max(newest, first[-1]["step"])
    log = "\n".join(client.task_log(final.dag_id, final.dag_run_id, "learner", 1))
    assert "reason: Evicted" in log  # the provider logged the pod's end
    assert_no_pod_left(cluster, job_id)


def resumed_step(store: ObjectStore, job_id: str, attempt: int) -> int:
    log = store.get_bytes(JobLayout(job_id).learner_log(RunMode.TRAIN, attempt, 0)).decode()
    match = re.search(r"resumed from step-(\d+)", log)
    assert match, f"attempt {attempt} did not resume from a checkpoint:\n{log[-2000:]}"
    return int(match.group(1))


def test_a_learner_past_its_memory_limit_is_oom_killed_and_fails_once_as_a_resource_error(
    cluster: FakeKubernetes,
    jobs: dict[str, str],
    client: AirflowClient,
    store: ObjectStore,
    deadline: Deadline,
) -> None:
    job_id = jobs["oom"]

    final = wait_for_end(client, store, job_id, deadline.left())
    assert final.state is JobState.FAILED
    assert final.failure is not None
    assert (final.failure.failure_class, final.failure.task) == ("resource_error", "learner")
    assert "resources.memory = 512Mi" in final.failure.message
    [train] = [pod for pod in cluster.created_pods() if pod["metadata"]["name"].startswith("oom-")]
    assert train["spec"]["containers"][0]["resources"]["limits"]["memory"] == "512Mi"
    assert [a.failure_class for a in record_of(store, job_id).attempts] == ["resource_error"]
    assert final.attempt == 1
    assert_no_pod_left(cluster, job_id)


def test_an_unknown_image_fails_at_once_naming_the_image(
    cluster: FakeKubernetes,
    jobs: dict[str, str],
    client: AirflowClient,
    store: ObjectStore,
    deadline: Deadline,
) -> None:
    job_id = jobs["bad-image"]

    final = wait_for_end(client, store, job_id, deadline.left())

    assert final.state is JobState.FAILED
    assert final.failure is not None
    assert final.failure.failure_class == "resource_error"
    assert UNKNOWN_IMAGE in final.failure.message
    assert "ErrImagePull" in final.failure.message
    assert final.attempt == 1
    assert_no_pod_left(cluster, job_id)


def test_a_gpu_request_no_node_can_fit_fails_after_the_startup_timeout_naming_it(
    cluster: FakeKubernetes,
    jobs: dict[str, str],
    client: AirflowClient,
    store: ObjectStore,
    deadline: Deadline,
) -> None:
    job_id = jobs["no-fit"]

    final = wait_for_end(client, store, job_id, deadline.left())

    assert final.state is JobState.FAILED
    assert final.failure is not None
    assert final.failure.failure_class == "resource_error"
    assert "no node can fit resources.gpus = 4" in final.failure.message
    assert "Insufficient nvidia.com/gpu" in final.failure.message
    assert final.attempt == 1
    log = "\n".join(client.task_log(final.dag_id, final.dag_run_id, "learner", 1))
    assert f"More than {STARTUP_TIMEOUT}s" in log  # the provider's schedule timeout ran out
    assert_no_pod_left(cluster, job_id)


def test_a_ddp_job_trains_on_two_pods_and_a_failed_rank_restarts_the_group(
    cluster: FakeKubernetes,
    jobs: dict[str, str],
    faults: dict[str, Future[int]],
    client: AirflowClient,
    store: ObjectStore,
    deadline: Deadline,
) -> None:
    """Two learner pods rendezvous at rank 0's Service (gloo); evicting rank 1 mid-training
    stops rank 0 too, and the retry starts both from the newest committed checkpoint."""
    job_id = jobs["ddp"]
    newest = faults["ddp"].result()  # rank 1 evicted after a checkpoint was committed

    final = wait_for_end(client, store, job_id, deadline.left())
    assert final.state is JobState.SUCCEEDED, final.failure
    assert [a.failure_class for a in record_of(store, job_id).attempts] == ["preemption", None]
    for rank in (0, 1):
        log = store.get_bytes(JobLayout(job_id).learner_log(RunMode.TRAIN, 2, rank)).decode()
        resumed = re.search(rf"rank {rank} resumed from step-(\d+)", log)
        assert resumed, log[-2000:]
        assert int(resumed.group(1)) >= newest
        assert f"rank {rank} of 2: step 600 loss" in log  # each rank trained and reported
    assert {row["attempt"] for row in read_metrics(store, job_id)} == {1, 2}
    created = cluster.created_pods(**{JOB_ID_LABEL: label_value(job_id)})
    ranks = sorted(body["metadata"]["labels"][RANK_LABEL] for body in created)
    assert ranks == ["0", "0", "1", "1"]  # the whole group, twice
    env = {var["name"]: var.get("value") for var in created[-1]["spec"]["containers"][0]["env"]}
    assert env["MASTER_ADDR"].endswith(".trainyard-acme.svc.cluster.local")
    assert env["WORLD_SIZE"] == "2"
    assert job_services(cluster, job_id) == []
    assert_no_pod_left(cluster, job_id)


def test_six_jobs_train_at_once_on_four_worker_slots_and_survive_the_triggerer_and_worker(
    cluster: FakeKubernetes,
    jobs: dict[str, str],
    crashes: Future[list[str]],
    client: AirflowClient,
    store: ObjectStore,
    deadline: Deadline,
) -> None:
    """The learner tasks deferred while their pods trained, so six trained on four executor
    slots; SIGKILL of the triggerer and of the scheduler's task runners left the pods running,
    and the watch picked up again: each steady job ends with its one attempt and one pod."""
    running = crashes.result()
    assert len(running) == len(STEADY) + 2 > PARALLELISM  # and the group's two pods
    for name in STEADY:
        job_id = jobs[name]
        final = wait_for_end(client, store, job_id, deadline.left())
        assert final.state is JobState.SUCCEEDED, final.failure
        assert [a.failure_class for a in record_of(store, job_id).attempts] == [None]
        [train] = [
            body
            for body in cluster.created_pods(**{JOB_ID_LABEL: label_value(job_id)})
            if body["spec"]["containers"][0]["args"] == ["train"]
        ]
        assert train["metadata"]["name"] in running  # the pod that trained through the crashes
        log = store.get_bytes(JobLayout(job_id).learner_log(RunMode.TRAIN, 1, 0)).decode()
        assert log.count("training until") == 1  # the learner was never restarted
        assert_no_pod_left(cluster, job_id)


def test_a_two_learner_group_is_reattached_after_the_triggerer_and_worker_restart(
    cluster: FakeKubernetes,
    jobs: dict[str, str],
    crashes: Future[list[str]],
    client: AirflowClient,
    store: ObjectStore,
    deadline: Deadline,
) -> None:
    """Both ranks trained through the crashes: the restarted triggerer watched the group again
    (its trigger's serialized ranks), the task resumed and concluded it; no rank restarted."""
    running = crashes.result()
    job_id = jobs[STEADY_GROUP]
    final = wait_for_end(client, store, job_id, deadline.left())
    assert final.state is JobState.SUCCEEDED, final.failure
    assert [a.failure_class for a in record_of(store, job_id).attempts] == [None]
    created = cluster.created_pods(**{JOB_ID_LABEL: label_value(job_id)})
    train = [body for body in created if body["spec"]["containers"][0]["args"] == ["train"]]
    assert sorted(body["metadata"]["labels"][RANK_LABEL] for body in train) == ["0", "1"]
    assert {body["metadata"]["name"] for body in train} <= set(running)
    for rank in (0, 1):
        log = store.get_bytes(JobLayout(job_id).learner_log(RunMode.TRAIN, 1, rank)).decode()
        assert log.count("training until") == 1, log[-2000:]  # never restarted
    assert job_services(cluster, job_id) == []
    assert_no_pod_left(cluster, job_id)


def test_no_pod_is_left_after_every_scenario(
    cluster: FakeKubernetes,
    jobs: dict[str, str],
    client: AirflowClient,
    store: ObjectStore,
    deadline: Deadline,
) -> None:
    for job_id in jobs.values():
        assert wait_for_end(client, store, job_id, deadline.left()).state in TERMINAL_STATES
    assert [pod.name for pod in cluster.pods_of()] == []
    assert cluster.services == {}
    assert len(cluster.created) >= len(jobs)
