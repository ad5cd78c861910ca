"""Kubernetes backend: the pieces of a learner pod, and what the end of a failed pod means.

Pure functions of the learner spec, the manifest, the tenant and the cluster config, so that the
pod a job gets can be checked without a cluster. The pod itself is run by the learner task,
`operators.tasks.kubernetes_learner.KubernetesLearnerOperator` (the provider's
KubernetesPodOperator).
The Kubernetes client is imported inside the functions: the DAG processor imports this package
through the DAG factory, and parsing DAGs must not pay for it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainyard.backends.base import (
    RUNTIME_CREDENTIALS_ENV,
    LearnerExit,
    LearnerSpec,
    distributed_environment,
)
from trainyard.failures import (
    RESUME_FIX,
    PlatformFault,
    Preemption,
    ResourceError,
    TrainyardFailure,
    out_of_memory,
)
from trainyard.manifest.schema import Framework, JobManifest, Resources
from trainyard.manifest.units import format_bytes
from trainyard.storage.config import LocalStorageConfig, S3StorageConfig
from trainyard.tenancy.config import KubernetesConfig, TenantConfig

if TYPE_CHECKING:
    from kubernetes.client import models as k8s

TENANT_LABEL = "trainyard.io/tenant"
JOB_ID_LABEL = "trainyard.io/job-id"
ATTEMPT_LABEL = "trainyard.io/attempt"
RANK_LABEL = "trainyard.io/rank"
#: Kueue admits a pod labelled with a LocalQueue of its namespace against that queue's quota.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GPU_RESOURCE = "nvidia.com/gpu"
#: The KubernetesPodOperator's name for the container it runs and follows.
LEARNER_CONTAINER = "base"
#: The learner's scratch space in its pod: an emptyDir, gone with the pod.
POD_WORK_DIR = "/scratch"
#: Writable scratch besides the work dir: the root filesystem is read-only.
POD_TMP_DIR = "/tmp"
#: The learner images' user (images/*/Dockerfile); pods run as it, never as root.
LEARNER_UID = 10001
#: Keys of the tenant's storage Secret, by the runtime variable each one fills.
STORAGE_SECRET_KEYS = {
    f"{RUNTIME_CREDENTIALS_ENV}_ACCESS_KEY": "access_key",
    f"{RUNTIME_CREDENTIALS_ENV}_SECRET_KEY": "secret_key",
}
MAX_LABEL_VALUE = 63
_LABEL_VALUE_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_IMAGE_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
#: Pull errors that a later try can get past: the registry was busy or briefly unreachable.
_TRANSIENT_PULL_ERRORS = (
    "rate limit",
    "too many requests",
    "timeout",
    "temporarily unavailable",
    "service unavailable",
    "bad gateway",
    "connection refused",
)


@dataclass(frozen=True)
class LearnerPod:
    """What the learner task sets on the KubernetesPodOperator for one attempt of a job."""

    name: str
    image: str
    namespace: str
    service_account: str
    arguments: list[str]
    env: list[k8s.V1EnvVar]
    resources: k8s.V1ResourceRequirements
    labels: dict[str, str]
    # Kept out of `labels`: the provider looks for a pod to reattach to by `labels`, and the
    # pod of an interrupted try carries that try's attempt number.
    attempt_labels: dict[str, str]
    annotations: dict[str, str]
    node_selector: dict[str, str]
    tolerations: list[k8s.V1Toleration]
    volumes: list[k8s.V1Volume]
    volume_mounts: list[k8s.V1VolumeMount]
    termination_grace_seconds: int
    security_context: k8s.V1PodSecurityContext
    container_security_context: k8s.V1SecurityContext
    # No Kubernetes API token in the pod: user code has no business with the cluster.
    automount_service_account_token: bool = False


def learner_pod(
    spec: LearnerSpec,
    manifest: JobManifest,
    tenant: TenantConfig,
    cluster: KubernetesConfig,
    rank: int = 0,
) -> LearnerPod:
    """The pod of learner `rank` in one attempt; raises ResourceError for a job this cluster
    cannot run.

    Rank 0 is the pod the task follows (and reattaches to); the other ranks differ only in their
    rank (env and label), and reach rank 0 through `rendezvous_service`.
    """
    from kubernetes.client import models as k8s

    node_selector, tolerations = gpu_placement(manifest.resources, cluster)
    pod_security, container_security = learner_security()
    return LearnerPod(
        name=f"{manifest.name}-{spec.mode.value}",
        image=learner_image(manifest.framework, cluster),
        namespace=tenant.namespace,
        service_account=tenant.service_account,
        arguments=[spec.mode.value],
        env=learner_env(spec, tenant, cluster, rank),
        resources=learner_resources(spec),
        labels=learner_labels(spec) | kueue_labels(tenant) | {RANK_LABEL: str(rank)},
        attempt_labels={ATTEMPT_LABEL: str(spec.attempt)},
        annotations={JOB_ID_LABEL: spec.job_id},  # in full: the label may be shortened
        node_selector=node_selector,
        tolerations=tolerations,
        volumes=[
            k8s.V1Volume(name=name, empty_dir=k8s.V1EmptyDirVolumeSource())
            for name in ("scratch", "tmp")
        ],
        volume_mounts=[
            k8s.V1VolumeMount(name="scratch", mount_path=POD_WORK_DIR),
            k8s.V1VolumeMount(name="tmp", mount_path=POD_TMP_DIR),
        ],
        termination_grace_seconds=spec.learner_grace,
        security_context=pod_security,
        container_security_context=container_security,
    )


def learner_security() -> tuple[k8s.V1PodSecurityContext, k8s.V1SecurityContext]:
    """The pod's and the container's security contexts: the learner's counterpart of the
    local backend's sandbox (non-root, read-only root filesystem, no privilege escalation, no
    capabilities, the runtime's default seccomp profile)."""
    from kubernetes.client import models as k8s

    seccomp = k8s.V1SeccompProfile(type="RuntimeDefault")
    return (
        k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=LEARNER_UID,
            run_as_group=LEARNER_UID,
            fs_group=LEARNER_UID,
            seccomp_profile=seccomp,
        ),
        k8s.V1SecurityContext(
            run_as_non_root=True,
            run_as_user=LEARNER_UID,
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            privileged=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
            seccomp_profile=seccomp,
        ),
    )


def learner_image(framework: Framework, cluster: KubernetesConfig) -> str:
    """The manifest's own image if it names one (a custom framework must), else the cluster's."""
    if framework.image is not None:
        return framework.image
    name = framework.name.value
    image = cluster.images.get(f"{name}:{framework.version}")
    if image is None:
        known = sorted(
            key.partition(":")[2] for key in cluster.images if key.startswith(f"{name}:")
        )
        raise ResourceError(
            f"framework.version: this deployment has no image for {name} {framework.version}; "
            f"known {name} versions: {', '.join(known) or 'none'}",
            "use one of the known versions, or framework {name: custom, image: <your image>}",
        )
    return image


def learner_resources(spec: LearnerSpec) -> k8s.V1ResourceRequirements:
    """Requests equal to limits (Guaranteed QoS).

    The learner is then the last pod evicted under node pressure, and an OOM kill means the job
    outgrew its own resources.memory, never that a neighbour took the node's memory.
    """
    from kubernetes.client import models as k8s

    requests = {
        "cpu": f"{max(1, round(spec.cpus * 1000))}m",
        "memory": format_bytes(spec.memory_bytes),
    }
    limits = {**requests, GPU_RESOURCE: str(spec.gpus)} if spec.gpus else dict(requests)
    return k8s.V1ResourceRequirements(requests=requests, limits=limits)


def gpu_placement(
    resources: Resources, cluster: KubernetesConfig
) -> tuple[dict[str, str], list[k8s.V1Toleration]]:
    """Node selector (per gpu_type) and tolerations of GPU nodes' taints, for GPU jobs only."""
    from kubernetes.client import models as k8s

    if resources.gpus == 0:
        return {}, []
    selector: dict[str, str] = {}
    if resources.gpu_type is not None:
        if resources.gpu_type not in cluster.gpu_node_selectors:
            raise ResourceError(
                f"resources.gpu_type: this deployment has no {resources.gpu_type!r} GPU nodes; "
                f"known GPU types: {', '.join(sorted(cluster.gpu_node_selectors)) or 'none'}",
                "use a known GPU type, or leave gpu_type out to take any GPU",
            )
        selector = dict(cluster.gpu_node_selectors[resources.gpu_type])
    tolerations = [
        k8s.V1Toleration(**toleration.model_dump()) for toleration in cluster.gpu_tolerations
    ]
    return selector, tolerations


def rendezvous_service_name(spec: LearnerSpec) -> str:
    """The headless Service of one attempt's learners: a DNS label unique per job and attempt."""
    digest = hashlib.sha256(f"{spec.job_id}/{spec.attempt}".encode()).hexdigest()[:12]
    return f"trainyard-{digest}"


def rank_hostname(rank: int) -> str:
    """The pod hostname of learner `rank`; with the Service as subdomain, its DNS name."""
    return f"rank-{rank}"


def rank_address(spec: LearnerSpec, tenant: TenantConfig, rank: int) -> str:
    """Learner `rank`'s cluster DNS name: its hostname under the attempt's headless Service."""
    service = rendezvous_service_name(spec)
    return f"{rank_hostname(rank)}.{service}.{tenant.namespace}.svc.cluster.local"


def rendezvous_address(spec: LearnerSpec, tenant: TenantConfig) -> str:
    """Where learners find rank 0 (MASTER_ADDR, JAX's coordinator): rank 0's DNS name."""
    return rank_address(spec, tenant, 0)


def rendezvous_service(
    spec: LearnerSpec, tenant: TenantConfig, cluster: KubernetesConfig
) -> k8s.V1Service:
    """A headless Service selecting this attempt's learners, no proxy: each pod, whose
    subdomain it is, gets a DNS name (`rank_address`) for MASTER_ADDR and TF_CONFIG."""
    from kubernetes.client import models as k8s

    selector = {**learner_labels(spec), ATTEMPT_LABEL: str(spec.attempt)}
    return k8s.V1Service(
        metadata=k8s.V1ObjectMeta(
            name=rendezvous_service_name(spec),
            namespace=tenant.namespace,
            labels={**learner_labels(spec), ATTEMPT_LABEL: str(spec.attempt)},
        ),
        spec=k8s.V1ServiceSpec(
            cluster_ip="None",
            selector=selector,
            ports=[k8s.V1ServicePort(name="rendezvous", port=cluster.rendezvous_port)],
            publish_not_ready_addresses=True,  # ranks rendezvous before any pod is "ready"
        ),
    )


def learner_env(
    spec: LearnerSpec, tenant: TenantConfig, cluster: KubernetesConfig, rank: int = 0
) -> list[k8s.V1EnvVar]:
    """The runtime's environment contract, with the storage keys read from the tenant's Secret.

    `LearnerSpec.runtime_environment` would copy the key values from this process's environment;
    the pod gets references to the Secret in its namespace instead, so the values never pass
    through Airflow (DAG, XCom, rendered fields, logs).
    """
    from kubernetes.client import models as k8s

    storage = spec.storage
    if not isinstance(storage, S3StorageConfig):
        raise ResourceError(
            f"tenant {tenant.name!r} has local storage, which learner pods cannot reach",
            "give the tenant s3 storage, or run its learners locally",
        )
    # A placeholder storage keeps runtime_environment from reading the keys; the real storage
    # config replaces it, naming the variables that the Secret fills.
    pod_spec = replace(spec, work_dir=Path(POD_WORK_DIR), storage=LocalStorageConfig(root=Path()))
    values = pod_spec.runtime_environment(rank)
    port = cluster.rendezvous_port
    if spec.num_learners > 1:
        master = rendezvous_address(spec, tenant)
        workers = [f"{rank_address(spec, tenant, r)}:{port}" for r in range(spec.num_learners)]
    else:
        master, workers = "127.0.0.1", [f"127.0.0.1:{port}"]
    values.update(
        distributed_environment(
            spec, rank, master_addr=master, master_port=port, local_rank=0, workers=workers
        )
    )
    pod_storage = storage.model_copy(update={"credentials_env": RUNTIME_CREDENTIALS_ENV})
    values["TRAINYARD_STORAGE"] = json.dumps(pod_storage.model_dump(mode="json"))
    env = [k8s.V1EnvVar(name=name, value=value) for name, value in values.items()]
    for variable, key in STORAGE_SECRET_KEYS.items():
        selector = k8s.V1SecretKeySelector(name=tenant.storage_secret, key=key)
        env.append(
            k8s.V1EnvVar(name=variable, value_from=k8s.V1EnvVarSource(secret_key_ref=selector))
        )
    return env


def learner_labels(spec: LearnerSpec) -> dict[str, str]:
    """Labels that find a job's pods: `kubectl get pods -l trainyard.io/job-id=...`."""
    return {TENANT_LABEL: label_value(spec.tenant), JOB_ID_LABEL: label_value(spec.job_id)}


def kueue_labels(tenant: TenantConfig) -> dict[str, str]:
    """The Kueue queue label of the tenant's learner pods, when its config names a queue."""
    return {KUEUE_QUEUE_LABEL: tenant.kueue_queue} if tenant.kueue_queue else {}


def label_value(text: str) -> str:
    """`text` as a valid label value: unchanged if it is one, else cut to fit plus a hash.

    The hash is of the whole text, so two job ids that only differ past the cut stay distinct.
    """
    if len(text) <= MAX_LABEL_VALUE and _LABEL_VALUE_RE.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    kept = re.sub(r"[^-A-Za-z0-9_.]", "-", text)[: MAX_LABEL_VALUE - len(digest) - 1]
    kept = kept.strip("-_.")
    return f"{kept}-{digest}" if kept else digest


def classify_pod_failure(
    status: Mapping[str, Any], resources: Resources | None = None
) -> TrainyardFailure | None:
    """The failure class of a learner pod's end, from its status, or None if the pod has none.

    `status` is a pod status as `V1PodStatus.to_dict()` gives it. None means the pod itself did
    not fail: whether the learner did is for its exit code and outcome (a non-zero exit with a
    traceback is a user error) to say. `resources` lets the messages name the manifest's values.
    """
    containers = status.get("container_statuses") or []
    for container in containers:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason, message = waiting.get("reason"), waiting.get("message") or ""
        if reason in _IMAGE_PULL_REASONS:
            return _image_pull_failure(container.get("image") or "", reason, message)
        if reason == "CreateContainerConfigError":
            return ResourceError(
                f"the learner container cannot be created: {message}",
                "an admin must create what it names (such as the tenant's storage Secret) in "
                "the tenant's namespace",
            )
    for container in containers:
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated.get("reason") == "OOMKilled":
            return _oom_killed(resources)
    disruption = _condition(status, "DisruptionTarget")
    if disruption is not None and disruption.get("status") == "True":
        return Preemption(
            f"the learner pod was disrupted ({disruption.get('reason')}): "
            f"{disruption.get('message') or 'no message'}",
            RESUME_FIX,
        )
    if status.get("reason") == "Evicted":
        return Preemption(f"the learner pod was evicted: {status.get('message') or ''}", RESUME_FIX)
    scheduled = _condition(status, "PodScheduled")
    if scheduled is not None and scheduled.get("reason") == "Unschedulable":
        return _unschedulable(scheduled.get("message") or "", resources)
    return None


def learner_exit(status: Mapping[str, Any]) -> LearnerExit | None:
    """How the learner container ended, or None while it has not."""
    for container in status.get("container_statuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if container.get("name") == LEARNER_CONTAINER and terminated:
            return LearnerExit(terminated["exit_code"], reason=terminated.get("reason"))
    return None


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def _image_pull_failure(image: str, reason: str, message: str) -> TrainyardFailure:
    cause = f"the learner image {image} cannot be pulled ({reason}): {message}"
    if any(pattern in message.lower() for pattern in _TRANSIENT_PULL_ERRORS):
        return PlatformFault(
            cause, "none needed: the registry was unavailable; the retry pulls again"
        )
    return ResourceError(
        cause,
        "check framework.name and framework.version (or framework.image); the image must exist "
        "and the tenant's namespace must be allowed to pull it",
    )


def _oom_killed(resources: Resources | None) -> ResourceError:
    if resources is None:
        return out_of_memory("the learner was OOM-killed")
    limit = format_bytes(resources.memory)
    return out_of_memory(
        f"the learner was OOM-killed: it needed more than resources.memory = {limit}", limit
    )


def _unschedulable(message: str, resources: Resources | None) -> ResourceError:
    """Name the requests the scheduler says no node can fit (its message says which)."""
    requests = []
    if resources is not None:
        if f"Insufficient {GPU_RESOURCE}" in message:
            requests.append(f"resources.gpus = {resources.gpus}")
        if "Insufficient cpu" in message:
            requests.append(f"resources.cpus = {resources.cpus:g}")
        if "Insufficient memory" in message:
            requests.append(f"resources.memory = {format_bytes(resources.memory)}")
        if "node affinity/selector" in message and resources.gpu_type is not None:
            requests.append(f"resources.gpu_type = {resources.gpu_type}")
    named = " and ".join(requests) or "the learner's resources"
    fields = ", ".join(request.split(" = ")[0] for request in requests) or "resources"
    return ResourceError(
        f"no node can fit {named}: the learner pod stayed unschedulable ({message})",
        f"lower {fields}, or ask the cluster's admins for nodes that fit the request",
    )
