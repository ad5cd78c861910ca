"""The learner task on Kubernetes: the pod it asks for, and what it makes of the pod's end.

No cluster: the pod is the operator's own `build_pod_request_obj(context)` after it configured
itself from a job record, and the pod's end is a final status handed to the operator's
classification the way its `cleanup` does after a real run.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.utils.pod_manager import OnFinishAction
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from operators.hooks.storage import storage_connection
from operators.tasks.kubernetes_learner import KubernetesLearnerOperator
from trainyard.backends import RunMode
from trainyard.backends.base import FINAL_UPLOAD_SECONDS
from trainyard.backends.kubernetes.pods import ATTEMPT_LABEL, JOB_ID_LABEL, RANK_LABEL, TENANT_LABEL
from trainyard.failures import (
    PlatformFault,
    Preemption,
    ResourceError,
    TrainyardFailure,
    UserError,
)
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.records import JobRecord, load_record, save_record
from trainyard.manifest.schema import parse_manifest
from trainyard.runtime.outcome import Outcome
from trainyard.storage.config import StorageCredentials
from trainyard.storage.local import LocalStore
from trainyard.tenancy.config import CONFIG_ENV, load_config

JOB_ID = "acme.digits-mlp.20261124-215908-abcd"
ACCESS_KEY = "AKIA-TRAINYARD-WORKER-ONLY"
SECRET_KEY = "worker-only-secret-d41d8cd98f"
MANIFEST: dict[str, Any] = {
    "name": "digits-mlp",
    "tenant": "acme",
    "framework": {"name": "pytorch", "version": "2.13"},
    "code": {"uri": "examples/pytorch-digits"},
    "command": "python train.py --epochs 8",
    "resources": {"cpus": "1500m", "memory": "3Gi"},
}
KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "test", "cluster": {"server": "http://127.0.0.1:9"}}],
    "users": [{"name": "test", "user": {}}],
    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    "current-context": "test",
}


def s3_storage(bucket: str) -> dict[str, Any]:
    return {
        "kind": "s3",
        "endpoint": "minio:9000",
        "bucket": bucket,
        "credentials_env": "TRAINYARD_S3_ACME",
    }


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = {
        "learner_backend": "kubernetes",
        "work_dir": "scratch",
        "tenants": [
            {"name": "acme", "storage": s3_storage("acme")},
            {
                "name": "globex",
                "storage": s3_storage("globex"),
                "namespace": "ml-globex",
                "service_account": "globex-learner",
                "storage_secret": "globex-s3",
            },
        ],
        "kubernetes": {
            "images": {
                "pytorch:2.13": "registry.example/trainyard/pytorch:2.13.0-cuda",
                "tensorflow:2.21": "registry.example/trainyard/tensorflow:2.21.0-cuda",
                "jax:0.12": "registry.example/trainyard/jax:0.12.0.1-cuda",
            },
            "gpu_node_selectors": {"a100": {"gpu.example/type": "a100"}},
            "startup_timeout_seconds": 900,
            "in_cluster": False,
            "config_file": "kubeconfig",
        },
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(KUBECONFIG))
    path = tmp_path / "trainyard.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv(CONFIG_ENV, str(path))
    # Airflow holds the keys as the tenants' connections (a local learner would get them
    # copied): pods must not.
    for tenant in load_config(path).tenants:
        connection = storage_connection(tenant, StorageCredentials(ACCESS_KEY, SECRET_KEY))
        monkeypatch.setenv(f"AIRFLOW_CONN_{connection.conn_id.upper()}", connection.as_json())
    return tmp_path


def context(try_number: int = 2, tenant: str = "acme") -> Context:
    ti = SimpleNamespace(
        dag_id=f"trainyard_{tenant}", task_id="learner", try_number=try_number, map_index=-1
    )
    return cast(Context, {"ti": ti, "run_id": JOB_ID, "dag": SimpleNamespace()})


def learner_task(
    local_store: LocalStore, manifest_changes: dict[str, Any] | None = None, tenant: str = "acme"
) -> KubernetesLearnerOperator:
    """The task with a job record in `local_store` (standing in for the tenant's bucket)."""
    manifest = parse_manifest(MANIFEST | {"tenant": tenant} | (manifest_changes or {}))
    save_record(
        local_store,
        JobRecord(
            job_id=JOB_ID,
            tenant=tenant,
            dag_id=f"trainyard_{tenant}",
            dag_run_id=JOB_ID,
            manifest=manifest.model_dump(mode="json"),
        ),
    )
    operator = KubernetesLearnerOperator(task_id="learner", tenant=tenant, job_id=JOB_ID)
    operator.store = local_store
    return operator


def built_pod(operator: KubernetesLearnerOperator, try_number: int = 2) -> k8s.V1Pod:
    ctx = context(try_number, operator.tenant)
    _, manifest = operator.load_job()
    operator.configure(manifest, ctx)
    return operator.build_pod_request_obj(ctx)


def pod_facts(pod: k8s.V1Pod) -> dict[str, Any]:
    [learner] = pod.spec.containers
    return {
        "namespace": pod.metadata.namespace,
        "service_account": pod.spec.service_account_name,
        "image": learner.image,
        "args": learner.args,
        "requests": learner.resources.requests,
        "limits": learner.resources.limits,
        "node_selector": pod.spec.node_selector,
        "tolerations": [t.to_dict() for t in pod.spec.tolerations or []],
        "grace": pod.spec.termination_grace_period_seconds,
        "restart_policy": pod.spec.restart_policy,
        "secret": {
            var.name: (var.value_from.secret_key_ref.name, var.value_from.secret_key_ref.key)
            for var in learner.env
            if var.value_from is not None
        },
    }


GPU_TOLERATION = {
    "key": "nvidia.com/gpu",
    "operator": "Exists",
    "effect": "NoSchedule",
    "value": None,
    "toleration_seconds": None,
}
CPU_JOB = {"cpu": "1500m", "memory": "3Gi"}
ACME_SECRET = {
    "TRAINYARD_STORAGE_ACCESS_KEY": ("trainyard-storage", "access_key"),
    "TRAINYARD_STORAGE_SECRET_KEY": ("trainyard-storage", "secret_key"),
}

PODS = [
    pytest.param(
        "acme",
        {},
        {
            "namespace": "trainyard-acme",
            "service_account": "trainyard-learner",
            "image": "registry.example/trainyard/pytorch:2.13.0-cuda",
            "args": ["train"],
            "requests": CPU_JOB,
            "limits": CPU_JOB,
            "node_selector": {},
            "tolerations": [],
            "grace": 30 + FINAL_UPLOAD_SECONDS,  # stop_grace_seconds' default
            "restart_policy": "Never",
            "secret": ACME_SECRET,
        },
        id="cpu-job-in-the-tenants-namespace",
    ),
    pytest.param(
        "acme",
        {"resources": {"gpus": 2, "gpu_type": "a100", "cpus": 8, "memory": "64Gi"}},
        {
            "requests": {"cpu": "8000m", "memory": "64Gi"},
            "limits": {"cpu": "8000m", "memory": "64Gi", "nvidia.com/gpu": "2"},
            "node_selector": {"gpu.example/type": "a100"},
            "tolerations": [GPU_TOLERATION],
        },
        id="gpu-job-with-a-gpu-type",
    ),
    pytest.param(
        "acme",
        {"resources": {"gpus": 1}},
        {
            "limits": {"cpu": "1000m", "memory": "2Gi", "nvidia.com/gpu": "1"},
            "node_selector": {},
            "tolerations": [GPU_TOLERATION],
        },
        id="gpu-job-of-any-gpu-type",
    ),
    pytest.param(
        "acme",
        {"framework": {"name": "tensorflow", "version": "2.21"}},
        {"image": "registry.example/trainyard/tensorflow:2.21.0-cuda"},
        id="tensorflow-image",
    ),
    pytest.param(
        "acme",
        {"framework": {"name": "jax", "version": "0.12"}},
        {"image": "registry.example/trainyard/jax:0.12.0.1-cuda"},
        id="jax-image",
    ),
    pytest.param(
        "acme",
        {"framework": {"name": "custom", "version": "1", "image": "team.example/learner:1"}},
        {"image": "team.example/learner:1"},
        id="custom-image-from-the-manifest",
    ),
    pytest.param(
        "globex",
        {},
        {
            "namespace": "ml-globex",
            "service_account": "globex-learner",
            "secret": {
                "TRAINYARD_STORAGE_ACCESS_KEY": ("globex-s3", "access_key"),
                "TRAINYARD_STORAGE_SECRET_KEY": ("globex-s3", "secret_key"),
            },
        },
        id="another-tenants-namespace-account-and-secret",
    ),
]


@pytest.mark.parametrize(("tenant", "changes", "expected"), PODS)
def test_the_pod_of_a_job(
    config_dir: Path,
    local_store: LocalStore,
    tenant: str,
    changes: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    pod = built_pod(learner_task(local_store, changes, tenant))

    facts = pod_facts(pod)
    assert {key: facts[key] for key in expected} == expected


def test_the_built_pod_is_locked_down(config_dir: Path, local_store: LocalStore) -> None:
    pod = built_pod(learner_task(local_store, {}, "acme"))

    [container] = pod.spec.containers
    assert pod.spec.automount_service_account_token is False
    assert pod.spec.security_context.run_as_non_root is True
    assert pod.spec.security_context.run_as_user == 10001
    assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.capabilities.drop == ["ALL"]
    assert {m.mount_path for m in container.volume_mounts} >= {"/scratch", "/tmp"}


def test_labels_identify_tenant_job_and_attempt_but_reattaching_ignores_the_attempt(
    config_dir: Path, local_store: LocalStore
) -> None:
    operator = learner_task(local_store)

    pod = built_pod(operator, try_number=3)

    labels = pod.metadata.labels
    assert (labels[TENANT_LABEL], labels[JOB_ID_LABEL], labels[ATTEMPT_LABEL]) == (
        "acme",
        JOB_ID,
        "3",
    )
    assert pod.metadata.annotations == {JOB_ID_LABEL: JOB_ID}
    # The pod of an interrupted try must be found again by the next one, whose number differs.
    selector = operator._build_find_pod_label_selector(context(try_number=4))
    assert f"{TENANT_LABEL}=acme" in selector
    assert f"{JOB_ID_LABEL}={JOB_ID}" in selector
    assert ATTEMPT_LABEL not in selector


def test_the_provider_reattaches_logs_reports_events_and_deletes_the_pod(
    config_dir: Path, local_store: LocalStore
) -> None:
    operator = learner_task(local_store)

    pod = built_pod(operator)

    assert operator.reattach_on_restart is True
    assert operator.on_finish_action is OnFinishAction.DELETE_POD
    assert operator.log_events_on_failure is True
    assert operator.get_logs is True
    assert operator.deferrable is True  # the triggerer watches the pods
    assert (operator.startup_timeout_seconds, operator.schedule_timeout_seconds) == (900, 900)
    assert isinstance(operator.hook, KubernetesHook)
    assert operator.hook.config_file == str(config_dir / "kubeconfig")
    assert pod.spec.security_context.run_as_non_root is True
    assert pod.spec.containers[0].security_context.allow_privilege_escalation is False


def test_storage_keys_appear_nowhere(config_dir: Path, local_store: LocalStore) -> None:
    operator = learner_task(local_store)
    pod = built_pod(operator)
    operator.render_template_fields(context())

    places = [
        repr(pod.to_dict()),
        repr(vars(operator)),
        repr({name: getattr(operator, name) for name in operator.template_fields}),
    ]
    for place in places:
        assert ACCESS_KEY not in place
        assert SECRET_KEY not in place


@pytest.mark.parametrize("mode", [RunMode.TRAIN, RunMode.EVALUATE], ids=["learner", "evaluate"])
def test_every_template_field_renders(
    config_dir: Path, local_store: LocalStore, mode: RunMode
) -> None:
    """As Airflow does: render first (job_id from the validate task), then execute."""
    learner_task(local_store)
    operator = KubernetesLearnerOperator(
        task_id="learner", tenant="acme", job_id="{{ run_id }}", mode=mode
    )

    operator.render_template_fields(context())

    assert operator.job_id == JOB_ID
    for name in operator.template_fields:
        assert "{{" not in repr(getattr(operator, name)), name


def test_configured_fields_render_unchanged(config_dir: Path, local_store: LocalStore) -> None:
    operator = learner_task(local_store)
    operator.configure(operator.load_job()[1], context())
    before = {name: repr(getattr(operator, name)) for name in operator.template_fields}

    operator.render_template_fields(context())

    assert {name: repr(getattr(operator, name)) for name in operator.template_fields} == before


def test_a_command_that_looks_like_a_template_is_not_rendered(
    config_dir: Path, local_store: LocalStore
) -> None:
    command = "python train.py --config '{{\"lr\": 0.1}}' --tag {{ ds }}"
    operator = learner_task(local_store, {"command": command})
    operator.render_template_fields(context())  # Airflow renders before execute configures

    pod = built_pod(operator)

    env = {var.name: var.value for var in pod.spec.containers[0].env}
    assert env["TRAINYARD_COMMAND"] == command


def test_a_job_the_cluster_cannot_run_fails_without_retry(
    config_dir: Path, local_store: LocalStore
) -> None:
    operator = learner_task(local_store, {"framework": {"name": "pytorch", "version": "1.0"}})

    with pytest.raises(AirflowFailException) as caught:
        operator.execute(context())

    assert isinstance(caught.value.__cause__, ResourceError)
    assert "no image for pytorch 1.0; known pytorch versions: 2.13" in str(caught.value)


# The pod's end: a final status as `cleanup` keeps it, then the provider's exception (if any).


def pod_status(
    phase: str,
    *,
    exit_code: int | None = None,
    reason: str | None = None,
    waiting: tuple[str, str] | None = None,
    pod_reason: str | None = None,
    conditions: list[k8s.V1PodCondition] | None = None,
) -> k8s.V1PodStatus:
    state = k8s.V1ContainerState(
        terminated=k8s.V1ContainerStateTerminated(exit_code=exit_code, reason=reason)
        if exit_code is not None
        else None,
        waiting=k8s.V1ContainerStateWaiting(reason=waiting[0], message=waiting[1])
        if waiting
        else None,
    )
    containers = (
        [
            k8s.V1ContainerStatus(
                name="base",
                image="registry.example/trainyard/pytorch:2.13.0-cuda",
                image_id="",
                ready=False,
                restart_count=0,
                state=state,
            )
        ]
        if exit_code is not None or waiting
        else None
    )
    return k8s.V1PodStatus(
        phase=phase, reason=pod_reason, container_statuses=containers, conditions=conditions
    )


def final_status(phase: str, **fields: Any) -> dict[str, Any]:
    """A final status as the operator keeps it (`V1PodStatus.to_dict()`)."""
    result: dict[str, Any] = pod_status(phase, **fields).to_dict()
    return result


def run_with_pod_end(
    monkeypatch: pytest.MonkeyPatch,
    operator: KubernetesLearnerOperator,
    status: dict[str, Any] | None,
    *,
    pod_attempt: int | None = None,
    try_number: int = 2,
) -> None:
    """Run the task with the provider's run replaced: the pod ends with `status`."""

    def provider_run(self: KubernetesLearnerOperator, ctx: Context) -> None:
        self.pod = self.build_pod_request_obj(ctx)
        if pod_attempt is not None:  # reattached to the pod of an earlier attempt
            self.pod.metadata.labels[ATTEMPT_LABEL] = str(pod_attempt)
        self.final_status = status
        if status is None:
            raise AirflowException("(403) Forbidden: pods is forbidden")
        if status["phase"] != "Succeeded":
            raise AirflowException(f"Pod {self.pod.metadata.name} returned a failure.\nremote_pod")

    monkeypatch.setattr(KubernetesPodOperator, "execute", provider_run)
    operator.execute(context(try_number))


def write_outcome(store: LocalStore, outcome: Outcome, attempt: int = 2) -> None:
    store.put_json(JobLayout(JOB_ID).outcome(RunMode.TRAIN, attempt, 0), outcome.to_json())


USER_ERROR = Outcome(
    exit_code=1,
    signal=None,
    failure=UserError(
        "the command failed with ZeroDivisionError: division by zero (train.py:12)",
        "fix the code at the place named (the whole traceback: see the learner log)",
    ),
)
UNSCHEDULABLE = k8s.V1PodCondition(
    type="PodScheduled",
    status="False",
    reason="Unschedulable",
    message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
)
DISRUPTED = k8s.V1PodCondition(
    type="DisruptionTarget", status="True", reason="EvictionByEvictionAPI", message="drain"
)

POD_ENDS = [
    pytest.param(
        final_status("Failed", exit_code=137, reason="OOMKilled"),
        None,
        AirflowFailException,
        ResourceError,
        "resources.memory = 3Gi",
        id="oom-killed-fails-at-once",
    ),
    pytest.param(
        final_status("Failed", exit_code=143, reason="Error", pod_reason="Evicted"),
        None,
        AirflowException,
        Preemption,
        "evicted",
        id="evicted-is-retried",
    ),
    pytest.param(
        final_status("Failed", exit_code=143, reason="Error", conditions=[DISRUPTED]),
        None,
        AirflowException,
        Preemption,
        "EvictionByEvictionAPI",
        id="disruption-is-retried",
    ),
    pytest.param(
        final_status("Pending", waiting=("ErrImagePull", "not found")),
        None,
        AirflowFailException,
        ResourceError,
        "cannot be pulled (ErrImagePull)",
        id="image-pull-fails-at-once",
    ),
    pytest.param(
        final_status("Pending", conditions=[UNSCHEDULABLE]),
        None,
        AirflowFailException,
        ResourceError,
        "no node can fit resources.gpus = 1",
        id="unschedulable-past-the-timeout-fails-at-once",
    ),
    pytest.param(
        final_status("Failed", exit_code=1, reason="Error"),
        USER_ERROR,
        AirflowFailException,
        UserError,
        "ZeroDivisionError",
        id="user-code-traceback-fails-at-once",
    ),
    pytest.param(
        final_status("Failed", exit_code=137, reason="Error"),
        None,
        AirflowException,
        PlatformFault,
        "exited with code 137 without reporting an outcome",
        id="killed-without-outcome-is-retried",
    ),
    pytest.param(
        None,
        None,
        AirflowException,
        PlatformFault,
        "(403) Forbidden",
        id="pod-never-created-is-retried",
    ),
]


@pytest.mark.parametrize(("status", "outcome", "raised", "failure_type", "fragment"), POD_ENDS)
def test_a_failed_pod_raises_its_failure_class(
    config_dir: Path,
    local_store: LocalStore,
    monkeypatch: pytest.MonkeyPatch,
    status: dict[str, Any] | None,
    outcome: Outcome | None,
    raised: type[AirflowException],
    failure_type: type[TrainyardFailure],
    fragment: str,
) -> None:
    operator = learner_task(local_store, {"resources": {"gpus": 1, "memory": "3Gi"}})
    if outcome is not None:
        write_outcome(local_store, outcome)

    with pytest.raises(AirflowException) as caught:
        run_with_pod_end(monkeypatch, operator, status)

    assert type(caught.value) is raised
    assert isinstance(caught.value.__cause__, failure_type)
    assert fragment in str(caught.value)
    record = load_record(local_store, JOB_ID)
    assert record is not None
    [attempt] = record.attempts
    assert (attempt.attempt, attempt.failure_class) == (2, failure_type.failure_class.value)


def test_a_succeeded_pod_records_a_clean_attempt(
    config_dir: Path, local_store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = learner_task(local_store)
    write_outcome(local_store, Outcome(exit_code=0, signal=None))

    run_with_pod_end(monkeypatch, operator, final_status("Succeeded", exit_code=0))

    record = load_record(local_store, JOB_ID)
    assert record is not None
    assert [(a.attempt, a.failure_class) for a in record.attempts] == [(2, None)]


def test_user_errors_retry_only_as_often_as_the_manifest_opts_in(
    config_dir: Path, local_store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = learner_task(local_store, {"retries": {"user_errors": 1}})
    write_outcome(local_store, USER_ERROR)

    with pytest.raises(AirflowException) as first:
        run_with_pod_end(monkeypatch, operator, final_status("Failed", exit_code=1))
    assert type(first.value) is AirflowException
    assert "retrying: retries.user_errors is 1" in str(first.value)
    write_outcome(local_store, USER_ERROR, attempt=3)  # the retry fails the same way
    with pytest.raises(AirflowFailException):
        run_with_pod_end(monkeypatch, operator, final_status("Failed", exit_code=1), try_number=3)


def test_a_reattached_pod_is_judged_by_its_own_attempt(
    config_dir: Path, local_store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Try 3 found attempt 2's pod still running: attempt 2's outcome is the one to read."""
    operator = learner_task(local_store)
    write_outcome(local_store, USER_ERROR, attempt=2)

    with pytest.raises(AirflowFailException) as caught:
        run_with_pod_end(
            monkeypatch, operator, final_status("Failed", exit_code=1), pod_attempt=2, try_number=3
        )

    assert isinstance(caught.value.__cause__, UserError)
    record = load_record(local_store, JOB_ID)
    assert record is not None
    assert [a.attempt for a in record.attempts] == [2]


class FakePodManager:
    """The calls `cleanup` makes, answered with one final pod."""

    def __init__(self, final: k8s.V1Pod | None) -> None:
        self.final = final
        self.events_read = False
        self.deleted: list[str] = []

    def read_pod(self, pod: k8s.V1Pod) -> k8s.V1Pod:
        if self.final is None:
            raise ApiException(status=404, reason="Not Found")
        return self.final

    def read_pod_events(self, pod: k8s.V1Pod) -> SimpleNamespace:
        self.events_read = True
        return SimpleNamespace(items=[])

    def delete_pod(self, pod: k8s.V1Pod) -> None:
        self.deleted.append(pod.metadata.name)


def test_cleanup_keeps_the_fresh_final_status_then_the_provider_logs_and_deletes(
    config_dir: Path, local_store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = learner_task(local_store)
    pod = built_pod(operator)
    final = k8s.V1Pod(
        metadata=pod.metadata,
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base")]),
        status=pod_status("Failed", exit_code=137, reason="OOMKilled"),
    )
    pods = FakePodManager(final)
    monkeypatch.setattr(operator, "pod_manager", pods)
    monkeypatch.setattr(operator, "client", SimpleNamespace(patch_namespaced_pod=lambda **_: None))
    stale = k8s.V1Pod(metadata=pod.metadata, status=k8s.V1PodStatus(phase="Pending"))

    with pytest.raises(AirflowException, match="returned a failure"):
        operator.cleanup(pod, stale, context=context())

    assert operator.final_status == final.status.to_dict()
    assert pods.events_read
    assert pods.deleted == [pod.metadata.name]


def test_cleanup_keeps_the_last_status_seen_when_the_pod_cannot_be_read(
    config_dir: Path, local_store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = learner_task(local_store)
    pod = built_pod(operator)
    pods = FakePodManager(None)
    monkeypatch.setattr(operator, "pod_manager", pods)
    monkeypatch.setattr(operator, "client", SimpleNamespace(patch_namespaced_pod=lambda **_: None))
    last_seen = k8s.V1Pod(metadata=pod.metadata, status=pod_status("Failed", exit_code=1))

    with pytest.raises(AirflowException, match="returned a failure"):
        operator.cleanup(pod, last_seen, context=context())

    assert operator.final_status == last_seen.status.to_dict()
    assert pods.deleted == [pod.metadata.name]


def test_a_multi_learner_job_is_rank_0_plus_a_group_the_task_creates(
    config_dir: Path, local_store: LocalStore
) -> None:
    operator = learner_task(local_store, {"resources": {"learners": 3}})

    pod = built_pod(operator)

    assert pod.metadata.labels[RANK_LABEL] == "0"
    assert sorted(operator.rank_envs) == [1, 2]
    ranks = {
        rank: {var.name: var.value for var in env if var.value is not None}
        for rank, env in operator.rank_envs.items()
    }
    assert [(ranks[r]["RANK"], ranks[r]["TRAINYARD_LEARNER_RANK"]) for r in (1, 2)] == [
        ("1", "1"),
        ("2", "2"),
    ]
    assert operator.rendezvous is not None
    service = operator.rendezvous.metadata.name
    assert ranks[2]["MASTER_ADDR"] == f"rank-0.{service}.trainyard-acme.svc.cluster.local"
    # Each rank's DNS name is its hostname under the Service (TF_CONFIG names every rank).
    assert (pod.spec.hostname, pod.spec.subdomain) == ("rank-0", service)
    # Only rank 0 is the provider's pod: the others never match the reattach selector.
    assert f"{RANK_LABEL}=0" in operator._build_find_pod_label_selector(context())


def test_a_single_learner_job_has_no_group(config_dir: Path, local_store: LocalStore) -> None:
    operator = learner_task(local_store)

    built_pod(operator)

    assert operator.rank_envs == {}
    assert operator.rendezvous is None


def test_the_rank_that_stopped_the_group_is_judged_first(
    config_dir: Path, local_store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 1 failed in user code and the task stopped rank 0 (SIGTERM, a preemption)."""
    operator = learner_task(local_store, {"resources": {"learners": 2}})
    stopped = Outcome(
        exit_code=143, signal=None, failure=Preemption("stopped after SIGTERM", "none")
    )
    write_outcome(local_store, stopped)
    local_store.put_json(JobLayout(JOB_ID).outcome(RunMode.TRAIN, 2, 1), USER_ERROR.to_json())
    operator.worker_statuses = {1: final_status("Failed", exit_code=1, reason="Error")}
    operator.failed_rank = 1

    with pytest.raises(AirflowFailException) as caught:
        run_with_pod_end(monkeypatch, operator, final_status("Failed", exit_code=143))

    assert isinstance(caught.value.__cause__, UserError)
    assert "learner 1: the command failed with ZeroDivisionError" in str(caught.value)


def test_an_evicted_rank_makes_the_attempt_a_preemption(
    config_dir: Path, local_store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = learner_task(local_store, {"resources": {"learners": 2}})
    operator.worker_statuses = {
        1: final_status("Failed", exit_code=143, reason="Error", pod_reason="Evicted")
    }

    with pytest.raises(AirflowException) as caught:
        run_with_pod_end(monkeypatch, operator, final_status("Failed", exit_code=143))

    assert type(caught.value) is AirflowException  # retried
    assert isinstance(caught.value.__cause__, Preemption)


def test_the_evaluation_pod_runs_the_runtimes_evaluate_mode_alone(
    config_dir: Path, local_store: LocalStore
) -> None:
    evaluation = {"command": "python evaluate.py", "metric": "accuracy"}
    learner_task(local_store, {"resources": {"learners": 2, "gpus": 1}, "evaluation": evaluation})
    operator = KubernetesLearnerOperator(
        task_id="evaluate", tenant="acme", job_id=JOB_ID, mode=RunMode.EVALUATE
    )
    operator.store = local_store

    pod = built_pod(operator)

    [container] = pod.spec.containers
    env = {var.name: var.value for var in container.env}
    assert container.args == ["evaluate"]
    assert env["TRAINYARD_COMMAND"] == "python evaluate.py"
    assert env["TRAINYARD_NUM_LEARNERS"] == "1"
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert operator.rendezvous is None
