"""The real learner operator against the fake API server, without Airflow.

The learner "image" only sleeps (SIGTERM ends it), so these tests show in seconds what the
operator makes of a pod's end (eviction, OOM kill) and what a multi-learner group does with its
pods (gang start, deletion); real jobs on pods are tests/e2e/test_kubernetes.py.

The task defers once its pods run; the tests then do what Airflow does: serialize the trigger,
run it as the triggerer would (from its classpath and kwargs), and resume a fresh task with its
one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from airflow.sdk import Connection, Context
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    TaskDeferred,
)
from airflow.sdk.module_loading import import_string
from airflow.triggers.base import BaseTrigger, TriggerEvent
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.config import new_client_from_config

from devkit.kube_server import (
    FakeKubernetes,
    FakeNode,
    FakePod,
    container_processes,
    running_kube_server,
)
from devkit.learners import wait_until
from operators.hooks.storage import TenantStorageHook, storage_connection
from operators.tasks.kubernetes_learner import KubernetesLearnerOperator
from operators.triggers import learner_group
from trainyard.backends.kubernetes.pods import RANK_LABEL, classify_pod_failure
from trainyard.failures import Preemption, ResourceError
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.records import JobRecord, JobState, load_record, save_record
from trainyard.manifest.schema import parse_manifest
from trainyard.storage import StorageCredentials
from trainyard.storage.local import LocalStore
from trainyard.sweeps import trials
from trainyard.sweeps.record import SweepRecord, write_sweep
from trainyard.sweeps.search import SweepSearch, TrialEnd
from trainyard.sweeps.trials import trial_job_id, trial_manifest
from trainyard.tenancy.config import CONFIG_ENV, load_config

JOB_ID = "acme.ddp.20261125-020000-abcd"
IMAGE = "registry.test/trainyard/pytorch:2.13"
#: A learner that holds 1 GiB of memory (written, so resident) and then sleeps.
HOG_IMAGE = "registry.test/acme/memory-hog:1"
STARTUP_TIMEOUT = 3
SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture(autouse=True)
def no_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """No scheduler takes in these tests' deferrals, so their triggers need not wait for one
    (20 s a test; tests/operators/triggers/test_learner_group.py holds the settle itself)."""
    monkeypatch.setattr(learner_group, "DEFER_SETTLE_SECONDS", 0.0)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeKubernetes]:
    """One node with one GPU; the learner only sleeps (deleted pods get SIGTERM)."""
    hog = [sys.executable, "-c", "import time; blob = b'x' * 2**30; time.sleep(120)"]
    images = {IMAGE: SLEEP, HOG_IMAGE: hog}
    with running_kube_server(tmp_path / "kube", images, FakeNode(gpus=1)) as api:
        api.add_secret(
            "trainyard-acme", "trainyard-storage", {"access_key": "a", "secret_key": "s"}
        )
        yield api


@pytest.fixture
def config(tmp_path: Path, cluster: FakeKubernetes, monkeypatch: pytest.MonkeyPatch) -> None:
    config = {
        "learner_backend": "kubernetes",
        "work_dir": "work",
        "tenants": [
            {
                "name": "acme",
                "storage": {"kind": "s3", "endpoint": "127.0.0.1:9", "bucket": "acme"},
            }
        ],
        "kubernetes": {
            "images": {"pytorch:2.13": IMAGE},
            "startup_timeout_seconds": STARTUP_TIMEOUT,
            "in_cluster": False,
            "config_file": str(cluster.write_kubeconfig(tmp_path / "kubeconfig")),
        },
    }
    path = tmp_path / "trainyard.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(path))
    # The task reads the job's records with the keys of the tenant's Airflow connection.
    connection = storage_connection(
        load_config(path).tenant("acme"), StorageCredentials("access", "secret")
    )
    monkeypatch.setenv(f"AIRFLOW_CONN_{connection.conn_id.upper()}", connection.as_json())


def learner_task(
    local_store: LocalStore, resources: dict[str, Any], image: str | None = None
) -> KubernetesLearnerOperator:
    """The task of a new job with `resources` (and a custom `image`), its record saved."""
    framework = {"name": "pytorch", "version": "2.13"}
    if image is not None:
        framework = {"name": "custom", "version": "1", "image": image}
    manifest = parse_manifest(
        {
            "name": "ddp",
            "tenant": "acme",
            "framework": framework,
            "code": {"uri": "code"},
            "command": "python train.py",
            "resources": resources,
        }
    )
    save_record(
        local_store,
        JobRecord(
            job_id=JOB_ID,
            tenant="acme",
            dag_id="trainyard_acme",
            dag_run_id=JOB_ID,
            manifest=manifest.model_dump(mode="json"),
        ),
    )
    return task_of(local_store)


def task_of(local_store: LocalStore) -> KubernetesLearnerOperator:
    """A fresh task of the job (as Airflow builds one to resume a deferred task)."""
    task = KubernetesLearnerOperator(task_id="learner", tenant="acme", job_id=JOB_ID)
    task.store = local_store
    return task


def context(try_number: int = 1) -> Context:
    ti = SimpleNamespace(
        dag_id="trainyard_acme",
        task_id="learner",
        run_id=JOB_ID,
        try_number=try_number,
        map_index=-1,
        xcom_push=lambda **_: None,
    )
    return cast(Context, {"ti": ti, "run_id": JOB_ID, "dag": SimpleNamespace()})


def running_pod(cluster: FakeKubernetes, rank: int) -> FakePod:
    def running() -> FakePod | None:
        pods = cluster.pods_of(**{RANK_LABEL: str(rank)})
        return next((pod for pod in pods if container_processes(pod)), None)

    return wait_until(running, f"rank {rank} to run", timeout=30)


def run_with_fault(
    operator: KubernetesLearnerOperator, fault: Callable[[], None], local_store: LocalStore
) -> tuple[AirflowException, KubernetesLearnerOperator]:
    """Execute the task while `fault` strikes from another thread, until it defers; run its
    trigger, resume a fresh task with the event; return what that raised, and that task."""
    striker = threading.Thread(target=fault)
    striker.start()
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context())
    assert deferred.value.method_name == "resume_learners"
    [event] = run_trigger(deferred.value.trigger)
    striker.join()
    resumed = task_of(local_store)
    with pytest.raises(AirflowException) as caught:
        resumed.resume_learners(context(), event.payload)
    return caught.value, resumed


def run_trigger(trigger: BaseTrigger) -> list[TriggerEvent]:
    """Every event of the trigger rebuilt from its serialized form, as the triggerer runs it."""
    classpath, kwargs = trigger.serialize()
    restored = import_string(classpath)(**kwargs)

    async def events() -> list[TriggerEvent]:
        return [event async for event in restored.run()]

    return asyncio.run(events())


def test_an_evicted_pod_is_a_preemption_to_retry(
    cluster: FakeKubernetes, config: None, local_store: LocalStore
) -> None:
    operator = learner_task(local_store, {"learners": 1})

    raised, _ = run_with_fault(
        operator, lambda: cluster.evict(running_pod(cluster, 0)), local_store
    )

    assert type(raised) is AirflowException  # retried
    assert isinstance(raised.__cause__, Preemption)
    assert "TerminationByKubelet" in str(raised)
    assert no_pod_left(cluster)


def test_a_pod_deleted_before_its_learner_wrote_an_outcome_is_a_preemption(
    cluster: FakeKubernetes, config: None, local_store: LocalStore, tmp_path: Path
) -> None:
    """`kubectl delete pod` as the learner starts (as the chaos soak once did, before the
    runtime could write how it ended): the pod is gone and no outcome says anything. Only a
    deletion removes a pod, the cluster's graceful stop: a preemption, retried."""
    operator = learner_task(local_store, {"learners": 1})

    def delete() -> None:
        pod = running_pod(cluster, 0)
        core_api(cluster, tmp_path).delete_namespaced_pod(pod.name, pod.namespace)

    raised, _ = run_with_fault(operator, delete, local_store)

    assert type(raised) is AirflowException  # retried
    assert isinstance(raised.__cause__, Preemption)
    assert "deleted before its runtime wrote how it ended" in str(raised)
    assert no_pod_left(cluster)


def test_an_oom_killed_pod_is_a_resource_error_without_retry(
    cluster: FakeKubernetes, config: None, local_store: LocalStore
) -> None:
    operator = learner_task(local_store, {"learners": 1, "memory": "3Gi"})

    raised, _ = run_with_fault(
        operator, lambda: cluster.oom_kill(running_pod(cluster, 0)), local_store
    )

    assert isinstance(raised, AirflowFailException)
    assert isinstance(raised.__cause__, ResourceError)
    assert "resources.memory = 3Gi" in str(raised)
    assert no_pod_left(cluster)


def no_pod_left(cluster: FakeKubernetes) -> bool:
    """Deleted pods go once their container has stopped (SIGTERM ends the sleeping learner)."""
    wait_until(lambda: not cluster.pods_of(), "the group's pods to be deleted", timeout=30)
    return cluster.services == {}


def test_a_group_whose_rank_cannot_start_fails_and_leaves_no_pod(
    cluster: FakeKubernetes, config: None, local_store: LocalStore
) -> None:
    # Rank 0 takes the node's one GPU: rank 1 cannot be scheduled (gang start).
    operator = learner_task(local_store, {"gpus": 1, "learners": 2})

    with pytest.raises(AirflowFailException) as caught:
        operator.execute(context())

    assert isinstance(caught.value.__cause__, ResourceError)
    assert "no node can fit resources.gpus = 1" in str(caught.value)
    created: list[dict[str, Any]] = cluster.created
    assert sorted(body["metadata"]["labels"][RANK_LABEL] for body in created) == ["0", "1"]
    assert [body["metadata"]["name"] for body in created][1].endswith("-rank-1")
    # Rank 0 was running: deleting the group stopped it too, and the Service went with it.
    assert no_pod_left(cluster)
    record = load_record(local_store, JOB_ID)
    assert record is not None
    assert [a.failure_class for a in record.attempts] == ["resource_error"]


def test_a_failed_rank_stops_the_others_and_the_attempt_takes_its_class(
    cluster: FakeKubernetes, config: None, local_store: LocalStore
) -> None:
    operator = learner_task(local_store, {"learners": 3})

    raised, resumed = run_with_fault(
        operator, lambda: cluster.oom_kill(running_pod(cluster, 2)), local_store
    )

    assert isinstance(raised, AirflowFailException)
    assert isinstance(raised.__cause__, ResourceError)
    assert "OOM-killed" in str(raised)
    assert resumed.failed_rank == 2  # the trigger's event named it
    [rank_0] = [body for body in cluster.created if body["metadata"]["labels"][RANK_LABEL] == "0"]
    assert rank_0["metadata"]["name"] not in {pod.name for pod in cluster.pods_of()}
    assert no_pod_left(cluster)  # ranks 0 and 1 were stopped, not left running


def test_a_learner_past_its_memory_limit_is_oom_killed_by_the_kubelet(
    cluster: FakeKubernetes, config: None, local_store: LocalStore
) -> None:
    operator = learner_task(local_store, {"learners": 1, "memory": "256Mi"}, image=HOG_IMAGE)

    raised, _ = run_with_fault(operator, lambda: None, local_store)

    assert isinstance(raised, AirflowFailException)  # no retry
    assert isinstance(raised.__cause__, ResourceError)
    assert "OOM-killed: it needed more than resources.memory = 256Mi" in str(raised)
    record = load_record(local_store, JOB_ID)
    assert record is not None
    assert [a.failure_class for a in record.attempts] == ["resource_error"]
    assert no_pod_left(cluster)


def pod_body(**spec: Any) -> dict[str, Any]:
    container = {"name": "base", "image": IMAGE, **spec.pop("container", {})}
    return {"metadata": {"name": "checked"}, "spec": {"containers": [container], **spec}}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        pytest.param(
            pod_body(container={"resources": {"limits": {"memory": ["2Gi"]}}}),
            "spec.containers[0].resources.limits.memory",
            "is not valid under any of the given schemas",
            id="wrong-type",
        ),
        pytest.param(
            pod_body(restartPolicyy="Never"),
            "spec",
            "'restartPolicyy' was unexpected",
            id="unknown-field",
        ),
        pytest.param(
            pod_body(container={"env": [{"value": "no name"}]}),
            "spec.containers[0].env[0]",
            "'name' is a required property",
            id="missing-required-field",
        ),
    ],
)
def test_the_api_server_rejects_an_invalid_pod_naming_the_field(
    cluster: FakeKubernetes, tmp_path: Path, body: dict[str, Any], field: str, message: str
) -> None:
    api = core_api(cluster, tmp_path)

    with pytest.raises(ApiException) as caught:
        api.create_namespaced_pod(namespace="trainyard-acme", body=body)

    assert caught.value.status == 422
    status = json.loads(caught.value.body)
    assert status["reason"] == "Invalid"
    assert status["message"].startswith(f'Pod "checked" is invalid: {field}: ')
    assert message in status["message"]
    assert status["details"]["causes"][0]["field"] == field
    assert cluster.created == []  # nothing was created


def core_api(cluster: FakeKubernetes, tmp_path: Path) -> CoreV1Api:
    """A client of the fake cluster, as the operator's hook builds one from the kubeconfig."""
    config = cluster.write_kubeconfig(tmp_path / "client-kubeconfig")
    return CoreV1Api(new_client_from_config(config_file=str(config)))


@pytest.mark.parametrize(
    ("image_user", "pod_user", "container_user", "refused"),
    [
        pytest.param(0, None, None, True, id="root-image"),
        pytest.param(10001, 0, None, True, id="pod-asks-for-root"),
        pytest.param(10001, None, 0, True, id="container-asks-for-root"),
        pytest.param(0, 0, 1000, False, id="container-user-overrides"),
        pytest.param(10001, None, None, False, id="non-root-image"),
    ],
)
def test_a_run_as_non_root_pod_that_would_run_as_root_is_refused(
    tmp_path: Path,
    image_user: int,
    pod_user: int | None,
    container_user: int | None,
    refused: bool,
) -> None:
    with running_kube_server(tmp_path / "kube", {IMAGE: SLEEP}, FakeNode(), image_user) as fake:
        pod_context: dict[str, Any] = {"runAsNonRoot": True}
        if pod_user is not None:
            pod_context["runAsUser"] = pod_user
        container = {} if container_user is None else {"runAsUser": container_user}
        body = pod_body(securityContext=pod_context, container={"securityContext": container})
        core_api(fake, tmp_path).create_namespaced_pod(namespace="trainyard-acme", body=body)
        [pod] = fake.pods_of()

        def started_or_refused() -> str | None:
            state = (pod.status.get("containerStatuses") or [{}])[0].get("state") or {}
            return "running" if "running" in state else (state.get("waiting") or {}).get("reason")

        outcome = wait_until(started_or_refused, "the kubelet to start or refuse the pod")

    assert outcome == ("CreateContainerConfigError" if refused else "running")


@pytest.mark.parametrize("cancelled_again", [False, True], ids=["once", "again-in-on-kill"])
def test_a_cancelled_deferred_group_loses_every_pod_and_its_service(
    cluster: FakeKubernetes, config: None, local_store: LocalStore, cancelled_again: bool
) -> None:
    """A user's kill of the deferred task reaches the trigger (`on_kill`, Airflow 3.3): every
    rank is deleted with its grace period (SIGTERM first, so it can checkpoint) and the
    rendezvous Service with them. Airflow 3.3's triggerer cancels the trigger again at its next
    loop while on_kill runs: the deletions still all happen (CI once kept rank 1 running)."""
    operator = learner_task(local_store, {"learners": 2})
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context())
    classpath, kwargs = deferred.value.trigger.serialize()
    trigger = import_string(classpath)(**kwargs)
    assert cluster.services
    pods = cluster.pods_of()
    assert len(pods) == 2

    async def cancel() -> None:
        watch = asyncio.ensure_future(trigger.run().__anext__())
        await asyncio.sleep(1)  # the trigger watches the running group
        watch.cancel()
        killing = asyncio.ensure_future(trigger.on_kill())
        if cancelled_again:
            await asyncio.sleep(0)  # on_kill has begun
            killing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await killing
        deadline = time.monotonic() + 60  # the triggerer's event loop runs on meanwhile
        while not all(pod.signals for pod in pods) or cluster.services:
            assert time.monotonic() < deadline, "on_kill left a rank or the Service"
            await asyncio.sleep(0.1)

    asyncio.run(cancel())

    assert no_pod_left(cluster)  # the Service too
    assert [pod.signals[:1] for pod in pods] == [[signal.SIGTERM]] * 2  # graceful first


def test_a_retry_after_a_worker_crash_reattaches_to_the_running_group(
    cluster: FakeKubernetes, config: None, local_store: LocalStore
) -> None:
    """The worker died after the group started (its try is retried): the retry finds rank 0 by
    its labels, keeps the other ranks and the Service, and watches the same pods."""
    first = learner_task(local_store, {"learners": 2})
    with pytest.raises(TaskDeferred) as deferred:
        first.execute(context())
    running = {pod.name: pod.process for pod in cluster.pods_of()}
    services = dict(cluster.services)

    with pytest.raises(TaskDeferred) as retried:
        task_of(local_store).execute(context(try_number=2))

    assert len(cluster.created) == 2  # no pod created again
    assert {pod.name: pod.process for pod in cluster.pods_of()} == running  # still running
    assert cluster.services == services
    _, before = deferred.value.trigger.serialize()
    _, after = retried.value.trigger.serialize()
    assert (after["pod_name"], after["workers"]) == (before["pod_name"], before["workers"])
    assert after["trigger_kwargs"]["attempt"] == 1  # judged by the attempt the pods run


def test_a_drained_node_evicts_its_pods_through_the_eviction_api(
    cluster: FakeKubernetes, tmp_path: Path
) -> None:
    """`kubectl drain`, as the chaos soak injects it: each pod is disrupted (a preemption to
    the platform), gets SIGTERM and is removed once it has stopped."""
    core_api(cluster, tmp_path).create_namespaced_pod(namespace="trainyard-acme", body=pod_body())
    [pod] = cluster.pods_of()
    wait_until(lambda: pod.status.get("phase") == "Running", "the pod to run")

    assert cluster.drain() == [pod]

    wait_until(lambda: pod.gone, "the drained pod to be removed")
    assert pod.signals[:1] == [signal.SIGTERM]  # graceful first
    failure = classify_pod_failure(pod.status)
    assert isinstance(failure, Preemption)
    assert "EvictionByEvictionAPI" in failure.cause
    assert cluster.pods_of() == []


def test_a_trial_its_sweeps_rule_stops_is_pruned_gracefully_and_not_retried(
    cluster: FakeKubernetes,
    config: None,
    local_store: LocalStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The triggerer watches a trial's metric rows for its sweep's early-stopping rule: three
    trials reached a low loss; this one reports a high one, so the rule stops it. Its pod gets
    SIGTERM (its grace period for a final checkpoint), the trial is recorded `pruned`, and
    the task ends skipped: no failure, no retry."""
    sweep_id, trial_id = JOB_ID, f"{JOB_ID}.t4"
    study = Connection(conn_id="trainyard_sweeps", conn_type="sqlite", host=str(tmp_path / "s"))
    monkeypatch.setenv("AIRFLOW_CONN_TRAINYARD_SWEEPS", study.as_json())
    monkeypatch.setattr(TenantStorageHook, "get_store", lambda self: local_store)
    monkeypatch.setattr(trials, "EARLY_STOP_POLL_SECONDS", 0.2)
    document = {
        "name": "ddp",
        "tenant": "acme",
        "framework": {"name": "pytorch", "version": "2.13"},
        "code": {"uri": "code"},
        "command": "python train.py --lr {lr}",
        "sweep": {
            "parameters": {"lr": {"distribution": "log_uniform", "low": 1e-4, "high": 0.1}},
            "trials": 4,
            "metric": "loss",
            "goal": "minimize",
            "early_stopping": {"rule": "asha", "min_steps": 1, "reduction_factor": 2},
        },
    }
    sweep = parse_manifest(document)
    assert sweep.sweep is not None
    assert write_sweep(
        local_store,
        SweepRecord(
            sweep_id=sweep_id,
            tenant="acme",
            dag_id="trainyard_acme.sweeps",
            dag_run_id=sweep_id,
            manifest=sweep.model_dump(mode="json"),
        ),
        None,
    )
    search = SweepSearch(sweep.sweep, sweep_id, f"sqlite:///{tmp_path / 's'}")
    for final in (0.3, 0.2, 0.1):
        done = search.draw()
        for step in range(1, 5):
            search.report(done.number, step, final + 1 / step)
        search.finish(done.number, TrialEnd.COMPLETE, final)
    trailing = search.draw()
    assert trial_job_id(sweep_id, trailing.number) == trial_id
    manifest = parse_manifest(trial_manifest(sweep, trailing.values))
    save_record(
        local_store,
        JobRecord(
            job_id=trial_id,
            tenant="acme",
            dag_id="trainyard_acme",
            dag_run_id=trial_id,
            manifest=manifest.model_dump(mode="json"),
        ),
    )
    local_store.put_bytes(JobLayout(trial_id).metrics(1), b'{"step": 1, "loss": 9.0}\n')
    task = KubernetesLearnerOperator(task_id="learner", tenant="acme", job_id=trial_id)
    task.store = local_store

    with pytest.raises(TaskDeferred) as deferred:
        task.execute(context())
    pod = running_pod(cluster, 0)
    [event] = run_trigger(deferred.value.trigger)

    assert event.payload["pruned"] is True
    resumed = KubernetesLearnerOperator(task_id="learner", tenant="acme", job_id=trial_id)
    resumed.store = local_store
    with pytest.raises(AirflowSkipException):
        resumed.resume_learners(context(), event.payload)
    assert pod.signals == [signal.SIGTERM]  # stopped within its grace period
    record = load_record(local_store, trial_id)
    assert record is not None
    assert record.state is JobState.PRUNED
    assert [a.failure_class for a in record.attempts] == ["pruned"]
    assert "asha" in record.attempts[0].message
    assert no_pod_left(cluster)
