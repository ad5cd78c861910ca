"""The Kubernetes backend's pure half: pod pieces from a job, and failure classes from a pod."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import models as k8s

from trainyard.backends import LearnerExit, LearnerSpec, RunMode
from trainyard.backends.base import FINAL_UPLOAD_SECONDS
from trainyard.backends.kubernetes.pods import (
    ATTEMPT_LABEL,
    JOB_ID_LABEL,
    KUEUE_QUEUE_LABEL,
    MAX_LABEL_VALUE,
    POD_WORK_DIR,
    RANK_LABEL,
    TENANT_LABEL,
    classify_pod_failure,
    gpu_placement,
    label_value,
    learner_env,
    learner_exit,
    learner_image,
    learner_pod,
    learner_resources,
    rendezvous_service,
)
from trainyard.failures import PlatformFault, Preemption, ResourceError, TrainyardFailure
from trainyard.manifest.schema import (
    Framework,
    FrameworkName,
    JobManifest,
    Resources,
    parse_manifest,
)
from trainyard.runtime.settings import RuntimeSettings
from trainyard.storage.config import LocalStorageConfig, S3StorageConfig
from trainyard.tenancy.config import KubernetesConfig, TenantConfig

JOB_ID = "acme.digits-mlp.20261124-215908-abcd"
S3 = S3StorageConfig(endpoint="minio:9000", bucket="acme", credentials_env="TRAINYARD_S3_ACME")
CLUSTER = KubernetesConfig(
    images={
        "pytorch:2.12": "registry.example/trainyard/pytorch:2.12.1-cuda",
        "pytorch:2.13": "registry.example/trainyard/pytorch:2.13.0-cuda",
        "tensorflow:2.21": "registry.example/trainyard/tensorflow:2.21.0-cuda",
        "jax:0.12": "registry.example/trainyard/jax:0.12.0.1-cuda",
    },
    gpu_node_selectors={"a100": {"gpu.example/type": "a100"}, "t4": {"gpu.example/type": "t4"}},
)
TENANT = TenantConfig(name="acme", storage=S3, storage_secret="acme-s3")
DEFAULT_TOLERATION = k8s.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")


def make_spec(**changes: Any) -> LearnerSpec:
    fields: dict[str, Any] = {
        "job_id": JOB_ID,
        "tenant": "acme",
        "mode": RunMode.TRAIN,
        "command": "python train.py",
        "attempt": 2,
        "num_learners": 1,
        "checkpoint_interval": 30.0,
        "checkpoint_keep": 3,
        "watchdog": 600.0,
        "watchdog_startup": 600.0,
        "storage": S3,
        "work_dir": Path("/airflow/scratch"),
        "cpus": 1.5,
        "memory_bytes": 3 * 2**30,
        "gpus": 0,
    }
    return LearnerSpec(**(fields | changes))


def make_manifest(**changes: Any) -> JobManifest:
    return parse_manifest(
        {
            "name": "digits-mlp",
            "tenant": "acme",
            "framework": {"name": "pytorch", "version": "2.13"},
            "code": {"uri": "code/digits"},
            "command": "python train.py",
        }
        | changes
    )


@pytest.mark.parametrize(
    ("framework", "image"),
    [
        pytest.param(
            {"name": "pytorch", "version": "2.13"},
            "registry.example/trainyard/pytorch:2.13.0-cuda",
            id="pytorch",
        ),
        pytest.param(
            {"name": "tensorflow", "version": "2.21"},
            "registry.example/trainyard/tensorflow:2.21.0-cuda",
            id="tensorflow",
        ),
        pytest.param(
            {"name": "jax", "version": "0.12"},
            "registry.example/trainyard/jax:0.12.0.1-cuda",
            id="jax",
        ),
        pytest.param(
            {"name": "custom", "version": "1.0", "image": "team.example/learner:1.0"},
            "team.example/learner:1.0",
            id="custom-takes-the-manifests-image",
        ),
        pytest.param(
            {"name": "pytorch", "version": "2.13", "image": "team.example/torch-extra:3"},
            "team.example/torch-extra:3",
            id="an-explicit-image-wins",
        ),
    ],
)
def test_learner_image(framework: dict[str, str], image: str) -> None:
    assert learner_image(Framework.model_validate(framework), CLUSTER) == image


@pytest.mark.parametrize(
    ("framework", "cause"),
    [
        pytest.param(
            {"name": "pytorch", "version": "2.99"},
            "framework.version: this deployment has no image for pytorch 2.99; "
            "known pytorch versions: 2.12, 2.13",
            id="unknown-version-lists-the-known-ones",
        ),
        pytest.param(
            {"name": "jax", "version": "0.4"},
            "known jax versions: 0.12",
            id="other-frameworks-versions-are-not-listed",
        ),
    ],
)
def test_unknown_framework_version_is_a_resource_error(
    framework: dict[str, str], cause: str
) -> None:
    with pytest.raises(ResourceError) as caught:
        learner_image(Framework.model_validate(framework), CLUSTER)

    assert cause in caught.value.cause
    assert "framework {name: custom" in caught.value.fix


def test_a_framework_without_images_says_none() -> None:
    with pytest.raises(ResourceError, match="known tensorflow versions: none"):
        learner_image(Framework(name=FrameworkName.TENSORFLOW, version="2.21"), KubernetesConfig())


@pytest.mark.parametrize(
    ("cpus", "memory", "gpus", "requests", "limits"),
    [
        pytest.param(
            1.5,
            3 * 2**30,
            0,
            {"cpu": "1500m", "memory": "3Gi"},
            {"cpu": "1500m", "memory": "3Gi"},
            id="cpu-job-has-no-gpu-limit",
        ),
        pytest.param(
            8.0,
            64 * 2**30,
            4,
            {"cpu": "8000m", "memory": "64Gi"},
            {"cpu": "8000m", "memory": "64Gi", "nvidia.com/gpu": "4"},
            id="gpu-job-has-a-gpu-limit",
        ),
        pytest.param(
            0.0001,
            10**9,
            0,
            {"cpu": "1m", "memory": "1000000000"},
            {"cpu": "1m", "memory": "1000000000"},
            id="tiny-cpu-rounds-up-and-odd-memory-stays-exact",
        ),
    ],
)
def test_requests_equal_limits(
    cpus: float, memory: int, gpus: int, requests: dict[str, str], limits: dict[str, str]
) -> None:
    resources = learner_resources(make_spec(cpus=cpus, memory_bytes=memory, gpus=gpus))

    assert resources.requests == requests
    assert resources.limits == limits


@pytest.mark.parametrize(
    ("resources", "selector", "tolerations"),
    [
        pytest.param(Resources(gpus=0), {}, [], id="cpu-job-goes-anywhere"),
        pytest.param(Resources(gpus=1), {}, [DEFAULT_TOLERATION], id="any-gpu"),
        pytest.param(
            Resources(gpus=2, gpu_type="a100"),
            {"gpu.example/type": "a100"},
            [DEFAULT_TOLERATION],
            id="gpu-type-selects-its-nodes",
        ),
    ],
)
def test_gpu_placement(
    resources: Resources, selector: dict[str, str], tolerations: list[k8s.V1Toleration]
) -> None:
    assert gpu_placement(resources, CLUSTER) == (selector, tolerations)


def test_configured_tolerations_are_used() -> None:
    cluster = KubernetesConfig.model_validate(
        {"gpu_tolerations": [{"key": "gpu", "operator": "Equal", "value": "yes"}]}
    )

    _, tolerations = gpu_placement(Resources(gpus=1), cluster)

    assert tolerations == [
        k8s.V1Toleration(key="gpu", operator="Equal", value="yes", effect="NoSchedule")
    ]


def test_unknown_gpu_type_is_a_resource_error_listing_the_known_ones() -> None:
    with pytest.raises(ResourceError) as caught:
        gpu_placement(Resources(gpus=1, gpu_type="h100"), CLUSTER)

    assert caught.value.cause == (
        "resources.gpu_type: this deployment has no 'h100' GPU nodes; known GPU types: a100, t4"
    )


def as_mapping(env: list[k8s.V1EnvVar]) -> dict[str, Any]:
    return {var.name: var.value if var.value_from is None else var.value_from for var in env}


def test_env_is_the_runtime_contract_with_keys_from_the_tenants_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The worker may hold the keys (a local learner would get them): the pod must not.
    monkeypatch.setenv("TRAINYARD_S3_ACME_ACCESS_KEY", "AKIA-WORKER-ACCESS")
    monkeypatch.setenv("TRAINYARD_S3_ACME_SECRET_KEY", "worker-secret-value")

    env = as_mapping(learner_env(make_spec(), TENANT, CLUSTER))

    for variable, key in [
        ("TRAINYARD_STORAGE_ACCESS_KEY", "access_key"),
        ("TRAINYARD_STORAGE_SECRET_KEY", "secret_key"),
    ]:
        assert env.pop(variable) == k8s.V1EnvVarSource(
            secret_key_ref=k8s.V1SecretKeySelector(name="acme-s3", key=key)
        )
    storage = json.loads(env.pop("TRAINYARD_STORAGE"))
    assert storage == S3.model_dump(mode="json") | {"credentials_env": "TRAINYARD_STORAGE"}
    assert env == {
        "TRAINYARD_JOB_ID": JOB_ID,
        "TRAINYARD_TENANT": "acme",
        "TRAINYARD_COMMAND": "python train.py",
        "TRAINYARD_ATTEMPT": "2",
        "TRAINYARD_LEARNER_RANK": "0",
        "TRAINYARD_NUM_LEARNERS": "1",
        "TRAINYARD_CHECKPOINT_INTERVAL": "30.0",
        "TRAINYARD_CHECKPOINT_KEEP": "3",
        "TRAINYARD_WATCHDOG": "600.0",
        "TRAINYARD_WATCHDOG_STARTUP": "600.0",
        "TRAINYARD_WORK_DIR": POD_WORK_DIR,
        "TRAINYARD_STOP_GRACE": "30",
        # torch.distributed's contract, as on the local backend: a world of one.
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
        "WORLD_SIZE": "1",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "OMP_NUM_THREADS": "1",
        # jax.distributed.initialize's and MultiWorkerMirroredStrategy's: a world of one too.
        "JAX_COORDINATOR_ADDRESS": "127.0.0.1:29500",
        "JAX_NUM_PROCESSES": "1",
        "JAX_PROCESS_ID": "0",
        "TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1:29500"]}, "task": {"type": "worker", '
        '"index": 0}}',
    }
    assert "AKIA-WORKER-ACCESS" not in repr(env)
    assert "worker-secret-value" not in repr(env)


def test_the_runtime_accepts_the_pod_env_once_the_kubelet_fills_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The contract check that matters: the runtime's own settings parse the pod's env."""
    secret = {"access_key": "from-the-secret", "secret_key": "also-from-the-secret"}
    pod_env = {
        var.name: var.value if var.value_from is None else secret[var.value_from.secret_key_ref.key]
        for var in learner_env(make_spec(), TENANT, CLUSTER)
    }

    settings = RuntimeSettings.from_env(pod_env)
    for name, value in pod_env.items():
        monkeypatch.setenv(name, value)

    assert settings.work_dir == Path(POD_WORK_DIR)
    assert isinstance(settings.storage, S3StorageConfig)
    assert settings.storage.credentials() == ("from-the-secret", "also-from-the-secret")


def test_local_storage_is_refused() -> None:
    tenant = TenantConfig(name="acme", storage=LocalStorageConfig(root=Path("/srv/acme")))

    with pytest.raises(ResourceError, match="local storage, which learner pods cannot reach"):
        learner_env(make_spec(storage=tenant.storage), tenant, CLUSTER)


LONG_RUN_ID = "acme.digits-mlp.manual__2026-11-24T21-59-08.123456-00-00-retrained-by-hand"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(JOB_ID, JOB_ID, id="a-cli-job-id-is-a-valid-label-value"),
        pytest.param("acme", "acme", id="tenant"),
        pytest.param(LONG_RUN_ID, None, id="too-long-gets-cut-with-a-hash"),
        pytest.param("acme.x+y:z", None, id="invalid-characters-get-replaced-with-a-hash"),
        pytest.param("-" * 70, None, id="nothing-valid-left-is-just-the-hash"),
    ],
)
def test_label_value(text: str, expected: str | None) -> None:
    value = label_value(text)

    if expected is not None:
        assert value == expected
        return
    assert len(value) <= MAX_LABEL_VALUE
    assert value[0].isalnum()
    assert value[-1].isalnum()
    assert set(value) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def test_long_job_ids_differing_past_the_cut_get_distinct_labels() -> None:
    assert label_value(LONG_RUN_ID + "-1") != label_value(LONG_RUN_ID + "-2")


def test_the_pod_of_an_attempt() -> None:
    manifest = make_manifest(resources={"gpus": 1, "gpu_type": "t4", "cpus": 4, "memory": "16Gi"})
    spec = make_spec(gpus=1, cpus=4.0, memory_bytes=16 * 2**30, attempt=3)

    pod = learner_pod(spec, manifest, TENANT, CLUSTER)

    assert pod.name == "digits-mlp-train"
    assert pod.image == "registry.example/trainyard/pytorch:2.13.0-cuda"
    assert (pod.namespace, pod.service_account) == ("trainyard-acme", "trainyard-learner")
    assert pod.arguments == ["train"]
    assert pod.labels == {TENANT_LABEL: "acme", JOB_ID_LABEL: JOB_ID, RANK_LABEL: "0"}
    assert pod.attempt_labels == {ATTEMPT_LABEL: "3"}
    assert pod.annotations == {JOB_ID_LABEL: JOB_ID}
    assert pod.node_selector == {"gpu.example/type": "t4"}
    assert pod.tolerations == [DEFAULT_TOLERATION]
    assert pod.termination_grace_seconds == 30 + FINAL_UPLOAD_SECONDS  # stop_grace_seconds
    assert [m.mount_path for m in pod.volume_mounts] == [POD_WORK_DIR, "/tmp"]
    assert all(volume.empty_dir is not None for volume in pod.volumes)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        pytest.param("pod.run_as_non_root", True, id="pod-non-root"),
        pytest.param("pod.run_as_user", 10001, id="pod-user-of-the-image"),
        pytest.param("pod.seccomp_profile.type", "RuntimeDefault", id="pod-seccomp"),
        pytest.param("container.run_as_non_root", True, id="container-non-root"),
        pytest.param("container.run_as_user", 10001, id="container-user"),
        pytest.param("container.read_only_root_filesystem", True, id="read-only-root"),
        pytest.param("container.allow_privilege_escalation", False, id="no-escalation"),
        pytest.param("container.privileged", False, id="unprivileged"),
        pytest.param("container.capabilities.drop", ["ALL"], id="no-capabilities"),
        pytest.param("container.seccomp_profile.type", "RuntimeDefault", id="container-seccomp"),
        pytest.param("automount_service_account_token", False, id="no-api-token"),
    ],
)
def test_learner_pods_are_locked_down(setting: str, expected: object) -> None:
    pod = learner_pod(make_spec(), make_manifest(), TENANT, CLUSTER, rank=1)
    value: Any = {
        "pod": pod.security_context,
        "container": pod.container_security_context,
        "automount_service_account_token": pod.automount_service_account_token,
    }
    for part in setting.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    assert value == expected


@pytest.mark.parametrize(
    ("queue", "expected"),
    [
        pytest.param("team-acme", {KUEUE_QUEUE_LABEL: "team-acme"}, id="tenant-names-a-queue"),
        pytest.param(None, {}, id="no-queue-no-label"),
    ],
)
def test_learner_pods_carry_the_tenants_kueue_queue(
    queue: str | None, expected: dict[str, str]
) -> None:
    tenant = TENANT.model_copy(update={"kueue_queue": queue})

    pod = learner_pod(make_spec(), make_manifest(), tenant, CLUSTER)

    assert pod.labels == {TENANT_LABEL: "acme", JOB_ID_LABEL: JOB_ID, RANK_LABEL: "0"} | expected


@pytest.mark.parametrize(
    ("rank", "expected"),
    [
        pytest.param(0, {"RANK": "0", "TRAINYARD_LEARNER_RANK": "0"}, id="rank-0-hosts-it"),
        pytest.param(2, {"RANK": "2", "TRAINYARD_LEARNER_RANK": "2"}, id="rank-2-joins"),
    ],
)
def test_multi_learner_pods_rendezvous_through_the_attempts_headless_service(
    rank: int, expected: dict[str, str]
) -> None:
    spec = make_spec(num_learners=3)

    pod = learner_pod(spec, make_manifest(), TENANT, CLUSTER, rank=rank)
    service = rendezvous_service(spec, TENANT, CLUSTER)

    env = as_mapping(pod.env)
    name = service.metadata.name
    assert {key: env[key] for key in expected} == expected
    assert env["MASTER_ADDR"] == f"rank-0.{name}.trainyard-acme.svc.cluster.local"
    assert env["JAX_COORDINATOR_ADDRESS"] == f"rank-0.{name}.trainyard-acme.svc.cluster.local:29500"
    assert (env["JAX_NUM_PROCESSES"], env["JAX_PROCESS_ID"]) == ("3", str(rank))
    assert json.loads(env["TF_CONFIG"]) == {
        "cluster": {
            "worker": [f"rank-{r}.{name}.trainyard-acme.svc.cluster.local:29500" for r in range(3)]
        },
        "task": {"type": "worker", "index": rank},
    }
    assert (env["MASTER_PORT"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("29500", "3", "0")
    assert env["TRAINYARD_NUM_LEARNERS"] == "3"
    assert pod.labels[RANK_LABEL] == str(rank)
    assert service.spec.cluster_ip == "None"
    assert service.spec.selector == {
        TENANT_LABEL: "acme",
        JOB_ID_LABEL: JOB_ID,
        ATTEMPT_LABEL: "2",
    }
    assert [port.port for port in service.spec.ports] == [29500]
    assert len(name) <= 63
    assert name != rendezvous_service(replace(spec, attempt=3), TENANT, CLUSTER).metadata.name


# Pod statuses, built with the client's models so that their dict form is the real one.


def container(
    *, waiting: tuple[str, str] | None = None, terminated: tuple[int, str] | None = None
) -> k8s.V1ContainerStatus:
    state = k8s.V1ContainerState(
        waiting=k8s.V1ContainerStateWaiting(reason=waiting[0], message=waiting[1])
        if waiting
        else None,
        terminated=k8s.V1ContainerStateTerminated(exit_code=terminated[0], reason=terminated[1])
        if terminated
        else None,
        running=None if waiting or terminated else k8s.V1ContainerStateRunning(),
    )
    return k8s.V1ContainerStatus(
        name="base",
        image="registry.example/trainyard/pytorch:2.13.0-cuda",
        image_id="",
        ready=False,
        restart_count=0,
        state=state,
    )


def pod_status(
    phase: str,
    *containers: k8s.V1ContainerStatus,
    conditions: tuple[tuple[str, str, str, str], ...] = (),
    reason: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    status = k8s.V1PodStatus(
        phase=phase,
        reason=reason,
        message=message,
        container_statuses=list(containers) or None,
        conditions=[
            k8s.V1PodCondition(type=kind, status=state, reason=why, message=text)
            for kind, state, why, text in conditions
        ],
    )
    result: dict[str, Any] = status.to_dict()
    return result


UNSCHEDULABLE = "0/3 nodes are available: 3 {}. preemption: 0/3 nodes are available."
GPU_JOB = Resources(gpus=4, gpu_type="a100", cpus=16, memory=128 * 2**30)

POD_ENDS = [
    pytest.param(
        pod_status("Failed", container(terminated=(137, "OOMKilled"))),
        ResourceError,
        ["OOM-killed", "resources.memory = 128Gi"],
        id="oom-killed-is-a-resource-error-naming-the-limit",
    ),
    pytest.param(
        pod_status(
            "Failed",
            container(terminated=(143, "Error")),
            reason="Evicted",
            message="The node was low on resource: memory.",
        ),
        Preemption,
        ["evicted", "low on resource: memory"],
        id="evicted-is-a-preemption",
    ),
    pytest.param(
        pod_status(
            "Failed",
            container(terminated=(143, "Error")),
            conditions=(
                ("DisruptionTarget", "True", "PreemptionByScheduler", "preempted by a-pod"),
            ),
        ),
        Preemption,
        ["disrupted (PreemptionByScheduler)", "preempted by a-pod"],
        id="disruption-target-is-a-preemption",
    ),
    pytest.param(
        pod_status(
            "Pending",
            container(waiting=("ErrImagePull", 'manifest for "pytorch:2.13.0-cuda" not found')),
        ),
        ResourceError,
        ["cannot be pulled (ErrImagePull)", "pytorch:2.13.0-cuda", "not found"],
        id="missing-image-is-a-resource-error",
    ),
    pytest.param(
        pod_status("Pending", container(waiting=("ImagePullBackOff", "Back-off pulling image"))),
        ResourceError,
        ["cannot be pulled (ImagePullBackOff)"],
        id="image-pull-back-off-is-a-resource-error",
    ),
    pytest.param(
        pod_status(
            "Pending", container(waiting=("InvalidImageName", 'couldn\'t parse image "x::y"'))
        ),
        ResourceError,
        ["cannot be pulled (InvalidImageName)"],
        id="invalid-image-name-is-a-resource-error",
    ),
    pytest.param(
        pod_status(
            "Pending",
            container(waiting=("ErrImagePull", "429 Too Many Requests: pull rate limit reached")),
        ),
        PlatformFault,
        ["cannot be pulled", "rate limit"],
        id="registry-rate-limit-is-retried",
    ),
    pytest.param(
        pod_status(
            "Pending",
            container(waiting=("CreateContainerConfigError", 'secret "acme-s3" not found')),
        ),
        ResourceError,
        ["cannot be created", 'secret "acme-s3" not found'],
        id="missing-secret-is-a-resource-error",
    ),
    pytest.param(
        pod_status(
            "Pending",
            conditions=(
                (
                    "PodScheduled",
                    "False",
                    "Unschedulable",
                    UNSCHEDULABLE.format("Insufficient nvidia.com/gpu"),
                ),
            ),
        ),
        ResourceError,
        ["no node can fit resources.gpus = 4:", "Insufficient nvidia.com/gpu"],
        id="unschedulable-names-the-gpus",
    ),
    pytest.param(
        pod_status(
            "Pending",
            conditions=(
                (
                    "PodScheduled",
                    "False",
                    "Unschedulable",
                    UNSCHEDULABLE.format("Insufficient cpu, 3 Insufficient memory"),
                ),
            ),
        ),
        ResourceError,
        ["no node can fit resources.cpus = 16 and resources.memory = 128Gi"],
        id="unschedulable-names-cpus-and-memory",
    ),
    pytest.param(
        pod_status(
            "Pending",
            conditions=(
                (
                    "PodScheduled",
                    "False",
                    "Unschedulable",
                    UNSCHEDULABLE.format("node(s) didn't match Pod's node affinity/selector"),
                ),
            ),
        ),
        ResourceError,
        ["no node can fit resources.gpu_type = a100"],
        id="unschedulable-names-the-gpu-type",
    ),
    pytest.param(
        pod_status("Failed", container(terminated=(1, "Error"))),
        None,
        [],
        id="non-zero-exit-is-for-the-learners-outcome-to-classify",
    ),
    pytest.param(
        pod_status("Succeeded", container(terminated=(0, "Completed"))),
        None,
        [],
        id="success-is-no-failure",
    ),
    pytest.param(pod_status("Running", container()), None, [], id="running-is-no-failure"),
]


@pytest.mark.parametrize(("status", "expected", "fragments"), POD_ENDS)
def test_classify_pod_failure(
    status: dict[str, Any], expected: type[TrainyardFailure] | None, fragments: list[str]
) -> None:
    failure = classify_pod_failure(status, GPU_JOB)

    if expected is None:
        assert failure is None
        return
    assert type(failure) is expected
    assert failure is not None
    assert failure.fix
    for fragment in fragments:
        assert fragment in failure.cause


def test_unschedulable_fix_names_the_fields_to_lower() -> None:
    status = pod_status(
        "Pending",
        conditions=(
            ("PodScheduled", "False", "Unschedulable", UNSCHEDULABLE.format("Insufficient memory")),
        ),
    )

    failure = classify_pod_failure(status, GPU_JOB)

    assert failure is not None
    assert failure.fix.startswith("lower resources.memory, or ask the cluster's admins")


def test_without_resources_the_messages_stay_general() -> None:
    failure = classify_pod_failure(pod_status("Failed", container(terminated=(137, "OOMKilled"))))

    assert isinstance(failure, ResourceError)
    assert (failure.cause, failure.fix) == (
        "the learner was OOM-killed",
        "raise resources.memory, or use less memory per learner",
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(
            pod_status("Failed", container(terminated=(137, "OOMKilled"))),
            LearnerExit(137, reason="OOMKilled"),
            id="oom-killed",
        ),
        pytest.param(
            pod_status("Succeeded", container(terminated=(0, "Completed"))),
            LearnerExit(0, reason="Completed"),
            id="completed",
        ),
        pytest.param(pod_status("Running", container()), None, id="still-running"),
        pytest.param(pod_status("Pending"), None, id="no-container-yet"),
    ],
)
def test_learner_exit(status: dict[str, Any], expected: LearnerExit | None) -> None:
    assert learner_exit(status) == expected


def test_importing_the_backend_does_not_import_the_kubernetes_client() -> None:
    """The DAG processor imports it through the factory: parsing DAGs must not pay for it."""
    probe = "import sys, trainyard.backends.kubernetes.pods; print('kubernetes' in sys.modules)"

    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "False"
