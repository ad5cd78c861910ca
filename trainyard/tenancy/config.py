"""The deployment config: learner backend, scratch directory, tenants and their storage.

Read from `TRAINYARD_CONFIG`, else the embedded default `config/trainyard.yaml`. Relative
paths in the file are relative to the file, so a config works from any working directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trainyard.limits import LimitError, check_document, shorten
from trainyard.manifest.schema import (
    MAX_NAME_LENGTH,
    DnsLabel,
    FrameworkName,
    JobManifest,
    ManifestError,
    Seconds,
    read_manifest_file,
    validation_problems,
)
from trainyard.runtime.sandbox import (
    INSTALL_FIX,
    UNSANDBOXED,
    SandboxNetwork,
    bwrap_available,
    require_bwrap,
)
from trainyard.safe_yaml import load_yaml
from trainyard.storage.config import LocalStorageConfig, StorageConfig
from trainyard.tenancy.names import dag_id_for_job

CONFIG_ENV = "TRAINYARD_CONFIG"
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "trainyard.yaml"


class ConfigError(ValueError):
    """The deployment config cannot be read or is invalid; the message names file and field."""


class UnknownTenantError(KeyError):
    """No tenant of that name is configured."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown tenant {shorten(name)}: known tenants are {', '.join(known)}")

    def __str__(self) -> str:
        # KeyError would render the message with quotes around it.
        return str(self.args[0])


def _resolve(path: Path, info: ValidationInfo) -> Path:
    """Expand `~`, then anchor a relative path at `base_dir` from the validation context."""
    path = path.expanduser()
    base_dir = (info.context or {}).get("base_dir")
    if base_dir is not None and not path.is_absolute():
        path = (Path(base_dir) / path).resolve()
    return path


#: The `learner_backend` settings; `trainyard.backends.backend_for` says what each one means.
LearnerBackendName = Literal["local", "kubernetes", "bare"]

#: Kubernetes object names: a namespace is a DNS-1123 label, other names DNS-1123 subdomains.
K8sLabelName = Annotated[
    str, StringConstraints(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
K8sName = Annotated[
    str,
    StringConstraints(
        max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ),
]
#: Frameworks whose learner image comes from the deployment's image map (custom brings its own).
IMAGE_FRAMEWORKS = tuple(name.value for name in FrameworkName if name is not FrameworkName.CUSTOM)


class Toleration(BaseModel):
    """A pod toleration, with the field names of the Kubernetes client's V1Toleration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"
    toleration_seconds: int | None = None


class KubernetesConfig(BaseModel):
    """The cluster that runs learners of tenants with `learner_backend: kubernetes`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: dict[str, str] = Field(
        default_factory=dict,
        description="learner image per framework and version, keyed '<framework>:<version>' "
        "such as 'pytorch:2.13'; a custom framework brings its own image",
    )
    gpu_node_selectors: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="node selector of GPU jobs per resources.gpu_type"
    )
    gpu_tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu")],
        description="tolerations of GPU jobs, for the taints that keep other pods off GPU nodes",
    )
    startup_timeout_seconds: int = Field(
        default=600,
        gt=0,
        description="how long a learner pod may take to be scheduled, and then to start, "
        "before the job fails (long enough for a node to be added and a large image pulled)",
    )
    rendezvous_port: int = Field(
        default=29500,
        gt=0,
        lt=65536,
        description="port of rank 0's torch.distributed rendezvous in multi-learner jobs "
        "(MASTER_PORT), reached through the job's headless Service",
    )
    in_cluster: bool = Field(
        default=True, description="Airflow runs in the cluster: use its service account"
    )
    config_file: Path | None = Field(
        default=None, description="kubeconfig file, when Airflow runs outside the cluster"
    )

    @field_validator("images", mode="after")
    @classmethod
    def _image_keys(cls, images: dict[str, str]) -> dict[str, str]:
        for key in images:
            framework, _, version = key.partition(":")
            if framework not in IMAGE_FRAMEWORKS or not version:
                raise ValueError(
                    f"invalid key {shorten(key)}: use <framework>:<version> with framework "
                    f"{', '.join(IMAGE_FRAMEWORKS)}, such as pytorch:2.13"
                )
        return images

    @field_validator("config_file", mode="after")
    @classmethod
    def _config_file(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is not None and info.data.get("in_cluster"):
            raise ValueError("set in_cluster: false to use a kubeconfig file instead")
        return None if path is None else _resolve(path, info)


class TenantSandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    network: SandboxNetwork | None = Field(
        default=None, description="network of its sandboxed user code (default: the deployment's)"
    )


class SandboxConfig(BaseModel):
    """The sandbox of local learners' user code (trainyard/runtime/sandbox.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: Literal["auto"] | bool = Field(
        default="auto",
        description="run user code of local learners in a bubblewrap sandbox: auto (the "
        "default) and true both sandbox it and refuse jobs where bwrap is missing; only false "
        "runs it unsandboxed",
    )
    network: SandboxNetwork = Field(
        default=SandboxNetwork.STORAGE,
        description="none | storage (user code gets no network either way: the runtime "
        "does the storage I/O) | all",
    )


class EnvironmentsConfig(BaseModel):
    """Local learners' framework environments (trainyard/backends/local/environments.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: Path = Field(
        default=Path("~/.cache/trainyard/envs"),
        validate_default=True,
        description="where the environment of each framework version is created and reused",
    )
    custom: dict[str, str] = Field(
        default_factory=dict,
        description="custom images' local environments: image -> '<framework>:<version>' of a "
        "provided framework, such as 'pytorch:2.13'",
    )

    @field_validator("dir", mode="after")
    @classmethod
    def _resolve_dir(cls, directory: Path, info: ValidationInfo) -> Path:
        return _resolve(directory, info)


class NotifyEvent(StrEnum):
    FAILURE = "failure"
    SUCCESS = "success"
    REJECTED = "rejected"  # the evaluation gate kept a model out of production


class NotifierConfig(BaseModel):
    """One notification channel of a tenant, sent with Airflow's notifier classes
    (operators/deployment/notify.py): `email` through an SMTP connection, `slack` through a Slack
    incoming-webhook connection. The connection (server, credentials, webhook URL) is an
    Airflow connection, like any other secret Airflow holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["email", "slack"]
    connection: str = Field(
        min_length=1,
        max_length=250,
        description="Airflow connection id: an smtp connection (email) or a slackwebhook one",
    )
    to: list[str] = Field(default_factory=list, description="recipients (email)")
    from_email: str | None = Field(
        default=None, description="sender (email; default: the connection's from_email)"
    )
    events: list[NotifyEvent] = Field(
        default_factory=lambda: [NotifyEvent.FAILURE, NotifyEvent.REJECTED],
        min_length=1,
        description="when to send: failure, success, rejected (the gate kept the model out)",
    )

    # validate_default on `to` would not see `kind` when it comes after it: check the whole.
    @model_validator(mode="after")
    def _recipients(self) -> NotifierConfig:
        if self.kind == "email" and not self.to:
            raise ValueError("an email notifier needs recipients: to: [someone@example.com]")
        return self


class TenantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: DnsLabel
    display_name: str = ""
    storage: StorageConfig
    allowed_frameworks: list[FrameworkName] = Field(default_factory=lambda: list(FrameworkName))
    max_running_jobs: int = Field(default=4, ge=1)
    gpu_quota: int = Field(
        default=0, ge=0, description="GPUs its running learners may hold at once (a pool)"
    )
    cpu_quota: int = Field(
        default=4, ge=0, description="CPU-only learners that may run at once (a pool)"
    )
    priority: int = Field(
        default=1,
        ge=1,
        description="weight of its tasks when tenants wait for the same executor slots "
        "(Airflow priority_weight)",
    )
    kueue_queue: K8sName | None = Field(
        default=None, description="Kueue LocalQueue its learner pods are labelled with"
    )
    default_watchdog: Seconds = Field(
        default=30 * 60.0,
        description="seconds a training job, once it has shown progress, may go without a new "
        "metric row or checkpoint before it is stopped as hung, unless its manifest sets watchdog",
    )
    default_watchdog_startup: Seconds = Field(
        default=10 * 60.0,
        description="seconds a training job may take to show its first metric row or "
        "checkpoint before it is stopped as hung at start-up, unless its manifest sets "
        "watchdog_startup",
    )
    default_max_runtime: Seconds | None = Field(
        default=None,
        description="learner time a job may use over all its attempts unless its manifest sets "
        "max_runtime (none: no limit)",
    )
    max_runtime: Seconds | None = Field(
        default=None, description="the most a manifest's max_runtime may be (none: no maximum)"
    )
    default_max_queued: Seconds | None = Field(
        default=None,
        description="how long a job may wait for the tenant's quota before its learners first "
        "start, unless its manifest sets max_queued (none: no limit)",
    )
    max_queued: Seconds | None = Field(
        default=None, description="the most a manifest's max_queued may be (none: no maximum)"
    )
    storage_wait_timeout: Seconds = Field(
        default=10 * 60.0,
        description="seconds a job waits, before staging and before commit, for its storage "
        "to answer (a storage outage) before the task fails as a platform fault",
    )
    publish_wait_timeout: Seconds = Field(
        default=2 * 60.0,
        description="seconds the commit waits for the learner's published results to be "
        "visible in storage",
    )
    learner_backend: LearnerBackendName | None = Field(
        default=None, description="where this tenant's learners run (default: the deployment's)"
    )
    # validate_default: the default is derived from the name (trainyard-<name>).
    namespace: K8sLabelName = Field(
        default=None, validate_default=True, description="Kubernetes namespace of its learner pods"
    )
    service_account: K8sName = Field(
        default="trainyard-learner", description="service account of its learner pods"
    )
    sandbox: TenantSandboxConfig = Field(default_factory=TenantSandboxConfig)
    notifications: list[NotifierConfig] = Field(
        default_factory=list, description="who hears of its jobs' failures and gate decisions"
    )
    storage_secret: K8sName = Field(
        default="trainyard-storage",
        description="Secret in its namespace with the storage credentials (keys access_key, "
        "secret_key); learner pods reference it, so the keys never pass through Airflow",
    )

    @field_validator("namespace", mode="before")
    @classmethod
    def _default_namespace(cls, namespace: Any, info: ValidationInfo) -> Any:
        if namespace is None:
            # Without a valid name, the tenant fails on its name alone.
            return f"trainyard-{info.data.get('name', 'tenant')}"
        return namespace

    @field_validator("storage", mode="after")
    @classmethod
    def _resolve_local_root(cls, storage: StorageConfig, info: ValidationInfo) -> StorageConfig:
        if isinstance(storage, LocalStorageConfig):
            return storage.model_copy(update={"root": _resolve(storage.root, info)})
        return storage


class TrainyardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    learner_backend: LearnerBackendName = "local"
    work_dir: Path = Field(description="scratch directory of local learners")
    stop_grace_seconds: int = Field(
        default=30,
        gt=0,
        description="time a stopped learner's command gets to write its final checkpoint (on "
        "cancel, a heartbeat kill, a drain, a gang stop or an eviction), on every backend; "
        "then it is killed and the runtime uploads what it committed",
    )
    jobs_dir: Path | None = Field(
        default=None,
        description="folder of scheduled job manifests, one subfolder per tenant "
        "(<jobs_dir>/<tenant>/<job>.yaml); each becomes its own DAG",
    )
    tenants: list[TenantConfig] = Field(min_length=1)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    environments: EnvironmentsConfig = Field(default_factory=EnvironmentsConfig)
    # validate_default: a deployment that runs learners on Kubernetes must describe the cluster.
    kubernetes: KubernetesConfig | None = Field(default=None, validate_default=True)

    @field_validator("work_dir", "jobs_dir", mode="after")
    @classmethod
    def _resolve_dirs(cls, directory: Path | None, info: ValidationInfo) -> Path | None:
        return None if directory is None else _resolve(directory, info)

    @field_validator("tenants", mode="after")
    @classmethod
    def _unique_names(cls, tenants: list[TenantConfig]) -> list[TenantConfig]:
        names = [tenant.name for tenant in tenants]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(
                f"duplicate tenant names: {', '.join(duplicates)}; names must be unique"
            )
        return tenants

    @field_validator("kubernetes", mode="after")
    @classmethod
    def _kubernetes_tenants(
        cls, kubernetes: KubernetesConfig | None, info: ValidationInfo
    ) -> KubernetesConfig | None:
        default = info.data.get("learner_backend", "local")
        on_kubernetes = [
            tenant
            for tenant in info.data.get("tenants", [])
            if (tenant.learner_backend or default) == "kubernetes"
        ]
        if on_kubernetes and kubernetes is None:
            names = ", ".join(tenant.name for tenant in on_kubernetes)
            raise ValueError(
                f"required: the learners of {names} run on Kubernetes; describe the cluster "
                "(images, gpu_node_selectors, ...)"
            )
        for tenant in on_kubernetes:
            if isinstance(tenant.storage, LocalStorageConfig):
                raise ValueError(
                    f"tenant {tenant.name!r} runs learners on Kubernetes, where pods cannot reach "
                    "its local storage directory: give it s3 storage"
                )
        return kubernetes

    def learner_backend_of(self, tenant: str) -> LearnerBackendName:
        """The `learner_backend` setting of `tenant`: its own, else the deployment's. Which
        backend it means is for `trainyard.backends.backend_for` alone to decide."""
        return self.tenant(tenant).learner_backend or self.learner_backend

    def sandbox_network_of(self, tenant: str) -> SandboxNetwork | None:
        """The network of `tenant`'s sandboxed user code on local learners (the local backend
        asks, at validate and for each attempt); None when the config says
        `sandbox.enabled: false`, deliberately unsandboxed.

        Raises:
            ResourceError: the deployment sandboxes user code but bwrap is missing here: the
                job is refused rather than run unsandboxed by accident.
        """
        if self.sandbox.enabled is False:
            return None
        require_bwrap()
        return self.tenant(tenant).sandbox.network or self.sandbox.network

    def sandbox_warning(self) -> str | None:
        """What to tell whoever starts the deployment or a command about its sandbox: None when
        local learners' code runs sandboxed here (or no tenant has local learners)."""
        if all(self.learner_backend_of(name) != "local" for name in self.tenant_names):
            return None
        if self.sandbox.enabled is False:
            return UNSANDBOXED
        if bwrap_available():
            return None
        return (
            "bubblewrap (bwrap) is not installed on this machine: jobs whose learners would "
            f"run here are refused at validate. Fix: {INSTALL_FIX}"
        )

    @property
    def tenant_names(self) -> list[str]:
        return [tenant.name for tenant in self.tenants]

    def tenant(self, name: str) -> TenantConfig:
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant
        raise UnknownTenantError(name, self.tenant_names)


def config_path() -> Path:
    """Where the config is read from: `$TRAINYARD_CONFIG`, else the embedded default."""
    path = Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else DEFAULT_CONFIG_PATH
    return path.expanduser()


def load_config(path: Path | None = None) -> TrainyardConfig:
    """Load the config from `path`, else `config_path()`."""
    path = config_path() if path is None else Path(path).expanduser()
    try:
        document: Any = load_yaml(path.read_text(encoding="utf-8"))
        check_document(document)
    except OSError as error:
        raise ConfigError(
            f"cannot read the Trainyard config {path}: {error.strerror or error}; "
            f"point {CONFIG_ENV} at a config file"
        ) from error
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"the Trainyard config {path} is not UTF-8 text ({error.reason}): save it as UTF-8"
        ) from error
    except LimitError as error:
        raise ConfigError(f"invalid Trainyard config {path}: {error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(
            f"invalid YAML in the Trainyard config {path}: {shorten(str(error), 300)}"
        ) from error
    if not isinstance(document, dict):
        raise ConfigError(f"the Trainyard config {path} must be a mapping of fields")
    try:
        return TrainyardConfig.model_validate(document, context={"base_dir": path.parent.resolve()})
    except ValidationError as error:
        lines = [
            f"  {field}: {message}" if field else f"  {message}"
            for field, message in validation_problems(error, TrainyardConfig)
        ]
        raise ConfigError("\n".join([f"invalid Trainyard config {path}:", *lines])) from error


def check_manifest_for_tenant(manifest: JobManifest, config: TrainyardConfig) -> TenantConfig:
    """Return the manifest's tenant, or raise ManifestError if it may not run this job."""
    try:
        tenant = config.tenant(manifest.tenant)
    except UnknownTenantError as error:
        raise ManifestError([("tenant", str(error))]) from error
    if manifest.framework.name not in tenant.allowed_frameworks:
        allowed = ", ".join(tenant.allowed_frameworks) or "none"
        raise ManifestError(
            [
                (
                    "framework.name",
                    f"framework {manifest.framework.name.value!r} is not allowed for tenant "
                    f"{tenant.name!r}: use one of {allowed}",
                )
            ]
        )
    for field in ("max_runtime", "max_queued"):
        wanted, most = getattr(manifest, field), getattr(tenant, field)
        if wanted is not None and most is not None and wanted > most:
            raise ManifestError(
                [
                    (
                        field,
                        f"{wanted:g}s is more than tenant {tenant.name!r} allows ({most:g}s): "
                        f"lower it, or ask the platform team to raise the tenant's {field}",
                    )
                ]
            )
    return tenant


@dataclass(frozen=True)
class ScheduledJob:
    """A scheduled job manifest file: the manifest, or why it cannot be used."""

    tenant: str
    path: Path
    manifest: JobManifest | None
    error: str | None = None

    @property
    def dag_id(self) -> str:
        # A broken file's stem may hold any character: Airflow takes letters, digits, '-_.'.
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.path.stem)[:MAX_NAME_LENGTH]
        return dag_id_for_job(self.tenant, self.manifest.name if self.manifest else stem)


def scheduled_jobs(config: TrainyardConfig, tenants: list[str] | None = None) -> list[ScheduledJob]:
    """Every manifest in `<jobs_dir>/<tenant>/` (of `tenants`, default all), each validated on
    its own.

    A broken file does not hide the others: it comes back with its error (naming the field),
    so the DAG factory can show it where the tenant looks.
    """
    if config.jobs_dir is None:
        return []
    jobs = []
    for tenant in config.tenants:
        if tenants is not None and tenant.name not in tenants:
            continue
        folder = config.jobs_dir / tenant.name
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml"), *folder.glob("*.json")]):
            try:
                manifest = read_manifest_file(path)
                _check_scheduled(manifest, tenant.name, config)
            except ManifestError as error:
                jobs.append(ScheduledJob(tenant.name, path, None, f"{path.name}: {error}"))
            else:
                jobs.append(ScheduledJob(tenant.name, path, manifest))
    return jobs


def _check_scheduled(manifest: JobManifest, tenant: str, config: TrainyardConfig) -> None:
    problems = []
    if manifest.tenant != tenant:
        problems.append(("tenant", f"must be {tenant!r}, the tenant whose folder holds the file"))
    if manifest.schedule is None:
        problems.append(("schedule", "a scheduled job needs a cron expression or on_new_data"))
    if manifest.code.uri is None:
        problems.append(("code", "scheduled jobs run code from the tenant's storage: set code.uri"))
    if problems:
        raise ManifestError(problems)
    check_manifest_for_tenant(manifest, config)
