"""The seam between the training DAG and the place learners run: one `LearnerBackend` interface.

A backend checks a manifest against what it can run, builds the launch of an attempt (the
learner spec, then its own processes or pods) and reports how each learner ended
(`LearnerEnd`); `trainyard.jobs.attempts.judge_attempt` turns those ends into the attempt's
failure, the same way for every backend. `trainyard.backends.backend_for` chooses the backend.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from trainyard.failures import TrainyardFailure
from trainyard.jobs.layout import RunMode
from trainyard.manifest.schema import JobManifest
from trainyard.manifest.sweep import parameter_environment
from trainyard.runtime.process import DEFAULT_STOP_GRACE_S
from trainyard.runtime.sandbox import SandboxNetwork
from trainyard.storage.config import S3StorageConfig, StorageConfig, StorageCredentials
from trainyard.tenancy.config import LearnerBackendName, TenantConfig, TrainyardConfig

#: Name of the credential variables the runtime reads (TRAINYARD_STORAGE_ACCESS_KEY, ...).
RUNTIME_CREDENTIALS_ENV = "TRAINYARD_STORAGE"


#: What a stopped learner's runtime gets beyond its command's stop grace to upload the final
#: checkpoint, its log and its outcome.
FINAL_UPLOAD_SECONDS = 60


@dataclass(frozen=True)
class LearnerSpec:
    """Everything a backend needs to start the learner runtime for one attempt of a job."""

    job_id: str
    tenant: str
    mode: RunMode
    command: str
    attempt: int
    num_learners: int
    checkpoint_interval: float
    checkpoint_keep: int
    watchdog: float  # seconds without a new metric or checkpoint before a hang; 0 = off
    watchdog_startup: float  # seconds until the first metric or checkpoint; 0 = no limit
    storage: StorageConfig
    work_dir: Path
    cpus: float
    memory_bytes: int
    gpus: int
    # The type every GPU of a learner must be (resources.gpu_type); None: any.
    gpu_type: str | None = None
    # The tenant's S3 keys, from its Airflow connection; None for local storage.
    credentials: StorageCredentials | None = None
    # Seconds a stopped learner's command gets for its final checkpoint (stop_grace_seconds).
    stop_grace: float = DEFAULT_STOP_GRACE_S
    # Local learners: the network of the sandbox their command runs in; None: no sandbox.
    sandbox_network: SandboxNetwork | None = None
    # Local learners: the Python of the framework's environment (backends/local/environments.py);
    # None: the backend's own interpreter.
    python: Path | None = None
    # The job's hyper-parameters as the command gets them: TRAINYARD_PARAM_<NAME> -> value.
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def learner_grace(self) -> int:
        """Seconds a stopped learner may take in all before its backend kills it: its
        command's `stop_grace` (the runtime enforces that), then the final upload."""
        return int(self.stop_grace + FINAL_UPLOAD_SECONDS)

    def runtime_environment(self, rank: int) -> dict[str, str]:
        """The runtime's environment contract (docs/architecture.md) for learner `rank`.

        The tenant's S3 credentials (from its Airflow connection) go under the runtime's own
        variable names: the learner only ever sees its own tenant's keys.

        Raises:
            ValueError: the storage is S3 and the spec carries no credentials.
        """
        storage = self.storage
        env = {
            "TRAINYARD_JOB_ID": self.job_id,
            "TRAINYARD_TENANT": self.tenant,
            "TRAINYARD_COMMAND": self.command,
            "TRAINYARD_ATTEMPT": str(self.attempt),
            "TRAINYARD_LEARNER_RANK": str(rank),
            "TRAINYARD_NUM_LEARNERS": str(self.num_learners),
            "TRAINYARD_CHECKPOINT_INTERVAL": str(self.checkpoint_interval),
            "TRAINYARD_CHECKPOINT_KEEP": str(self.checkpoint_keep),
            "TRAINYARD_WATCHDOG": str(self.watchdog),
            "TRAINYARD_WATCHDOG_STARTUP": str(self.watchdog_startup),
            "TRAINYARD_WORK_DIR": str(self.work_dir),
            "TRAINYARD_STOP_GRACE": f"{self.stop_grace:g}",
            **self.parameters,
        }
        if isinstance(storage, S3StorageConfig):
            if self.credentials is None:
                raise ValueError(
                    f"no storage credentials for tenant {self.tenant!r}'s bucket {storage.bucket!r}"
                )
            access_key, secret_key = self.credentials
            storage = storage.model_copy(update={"credentials_env": RUNTIME_CREDENTIALS_ENV})
            env[f"{RUNTIME_CREDENTIALS_ENV}_ACCESS_KEY"] = access_key
            env[f"{RUNTIME_CREDENTIALS_ENV}_SECRET_KEY"] = secret_key
        env["TRAINYARD_STORAGE"] = json.dumps(storage.model_dump(mode="json"))
        return env


def distributed_environment(
    spec: LearnerSpec,
    rank: int,
    *,
    master_addr: str,
    master_port: int,
    local_rank: int,
    workers: list[str] | None = None,
) -> dict[str, str]:
    """The rendezvous variables of learner `rank`, the same on every backend.

    torch.distributed's `env://` (rank 0 listens on `master_addr:master_port`; `local_rank` is
    the learner's index on its machine: all learners share one machine locally, each pod is its
    own on Kubernetes); `jax.distributed.initialize`'s coordinator (the same address) and its
    process count and id; TensorFlow's `TF_CONFIG` for MultiWorkerMirroredStrategy, whose
    `workers` are every rank's `host:port` (default: rank 0's address only, a one-worker
    cluster, where ranks have no address of their own).
    """
    workers = workers or [f"{master_addr}:{master_port}"]
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}}
    return {
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "WORLD_SIZE": str(spec.num_learners),
        "RANK": str(rank),
        "LOCAL_RANK": str(local_rank),
        "OMP_NUM_THREADS": str(max(1, int(spec.cpus))),
        "JAX_COORDINATOR_ADDRESS": f"{master_addr}:{master_port}",
        "JAX_NUM_PROCESSES": str(spec.num_learners),
        "JAX_PROCESS_ID": str(rank),
        "TF_CONFIG": json.dumps(tf_config),
    }


#: Termination reason of a learner its backend killed for using more than resources.memory.
OOM_KILLED = "OOMKilled"


@dataclass(frozen=True)
class LearnerExit:
    """How one learner ended, as its backend saw it (the runtime's own view is its outcome)."""

    exit_code: int
    reason: str | None = None  # e.g. OOM_KILLED; Kubernetes' container termination reason


#: Reason of a failed learner whose GPU failed under it (an XID error, lost from the bus).
GPU_FAILED = "GPUFailed"

#: Reason of a learner its backend stopped because another rank of the gang failed first.
GANG_STOPPED = "GangStopped"


@dataclass(frozen=True)
class LearnerEnd:
    """How learner `rank` of an attempt ended, as its backend saw it.

    `exit` is None when the backend never saw the learner end (its pod vanished); `failure` is
    what the backend's view alone says, before any outcome file (a pod evicted or unschedulable).
    """

    rank: int
    exit: LearnerExit | None
    failure: TrainyardFailure | None = None


class LearnerBackend(ABC):
    """Where one tenant's learners run (like kubeflow/sdk's trainer backends).

    Made by `backend_for` for a deployment config and a tenant. Each backend checks manifests
    (`check`, at validate), builds each attempt's spec (`learner_spec`) and its own launch from
    it, and reports its learners' ends for `judge_attempt`.
    """

    #: The `learner_backend` setting that chooses this backend.
    name: ClassVar[LearnerBackendName]

    def __init__(self, config: TrainyardConfig, tenant: str) -> None:
        self.config = config
        self.tenant: TenantConfig = config.tenant(tenant)

    @abstractmethod
    def check(self, manifest: JobManifest) -> None:
        """Refuse, at validate, a job this backend cannot run (a framework version without an
        environment or image, an unknown GPU type).

        Raises:
            UserError, ResourceError: naming the manifest field and the fix.
        """

    def machine_gpus(self) -> int | None:
        """How many GPUs the machine that runs this backend's learners has, where that is the
        machine this runs on (None: the learners run elsewhere, such as Kubernetes nodes)."""
        return None

    def learner_spec(
        self,
        manifest: JobManifest,
        *,
        job_id: str,
        mode: RunMode,
        attempt: int,
        credentials: StorageCredentials | None,
        on_output: Callable[[str], None],
    ) -> LearnerSpec:
        """The spec of one attempt's learners, what every backend builds its launch from.

        `credentials` are the tenant's storage keys from its Airflow connection; `on_output`
        hears of slow preparations (a backend building an environment).
        """
        command = manifest.command
        if mode is RunMode.EVALUATE:
            assert manifest.evaluation is not None
            command = manifest.evaluation.command
        resources, tenant = manifest.resources, self.tenant
        return LearnerSpec(
            job_id=job_id,
            tenant=tenant.name,
            mode=mode,
            command=manifest.filled(command),
            attempt=attempt,
            num_learners=resources.learners_in(mode),
            checkpoint_interval=manifest.checkpoint.interval,
            checkpoint_keep=manifest.checkpoint.keep,
            storage=tenant.storage,
            work_dir=self.config.work_dir,
            cpus=resources.cpus,
            memory_bytes=resources.memory,
            gpus=resources.gpus,
            gpu_type=resources.gpu_type,
            watchdog=manifest.watchdog or tenant.default_watchdog,
            watchdog_startup=manifest.watchdog_startup or tenant.default_watchdog_startup,
            credentials=credentials,
            stop_grace=self.config.stop_grace_seconds,
            parameters=parameter_environment(manifest.hyperparameters),
        )


class ProcessBackend(LearnerBackend):
    """A backend whose learners are processes the Airflow task starts and waits for: the
    generic learner task runs any of them."""

    @abstractmethod
    def run(self, spec: LearnerSpec, on_output: Callable[[str], None]) -> list[LearnerExit]:
        """Run all learners of `spec` to completion; return how each ended, by rank.

        `on_output` receives each line the learners print, as they print it.
        """

    @abstractmethod
    def stop(self) -> None:
        """Ask running learners to stop gracefully (they may write a final checkpoint)."""
