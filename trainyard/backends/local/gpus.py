"""The local backend's GPUs: what the machine has, which are healthy, and which learner holds each.

Like a device plugin on one machine. NVML (`nvidia-ml-py`, imported as `pynvml` only when asked)
lists the NVIDIA GPUs; a machine without the library or without a driver has none. A GPU is
handed out only while healthy: NVML answers for it, it has no failed or pending row remapping,
and no hardware XID error has been seen on it (an XID seen during an attempt quarantines the GPU
in a file beside its lease until an operator resets it and deletes the file).

The lease is one lock file per GPU under the deployment's work dir, held with `flock` by the
learner task and, through an inherited descriptor, by the learner process itself: the kernel
drops it when the last holder dies, so a GPU held by a dead attempt is free again, and two
jobs (or two ranks of one gang) never hold the same GPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import IO, Any

from trainyard.failures import PlatformFault, ResourceError
from trainyard.manifest.schema import Resources

#: The module that speaks NVML (nvidia-ml-py); tests put a stand-in of the same name first.
NVML_MODULE = "pynvml"
#: Under the deployment's work dir: one `<uuid>.lock` per GPU, and `<uuid>.unhealthy` markers.
LEASE_DIR_NAME = "gpu-leases"
#: XID errors that mean the hardware failed (double-bit ECC, row remapping, NVLink, fallen off
#: the bus, ...), as DCGM's health checks read them; others (13, 31, 43: a program's own
#: illegal access) say nothing of the GPU.
HARDWARE_XIDS = frozenset({48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120, 140})
QUARANTINE_FIX = (
    "reset the GPU (nvidia-smi -r -i <index>, or reboot) and, once nvidia-smi shows it healthy, "
    "delete its file {marker}"
)
NO_GPU_FIX = (
    "set resources.gpus: 0 to train on the CPU, or run the tenant's learners on a machine with "
    "NVIDIA GPUs and their driver (or learner_backend: kubernetes with GPU nodes)"
)


@dataclass(frozen=True)
class Gpu:
    """One GPU as NVML reports it; `problem` says why it is not handed out (None: healthy)."""

    index: int
    minor: int  # its device node is /dev/nvidia<minor>
    uuid: str
    name: str
    memory_bytes: int
    problem: str | None = None

    @property
    def healthy(self) -> bool:
        return self.problem is None

    def is_type(self, gpu_type: str | None) -> bool:
        """Whether `resources.gpu_type` names this GPU: a word of its name (`a100` for "NVIDIA
        A100-SXM4-80GB", `t4` for "Tesla T4") or the whole name, any case."""
        if gpu_type is None:
            return True
        wanted, name = gpu_type.lower(), self.name.lower()
        return wanted == name or wanted in re.split(r"[^a-z0-9]+", name)


@dataclass
class GpuLease:
    """GPUs held for one learner, as long as this or any process given `fds` keeps them open."""

    gpus: tuple[Gpu, ...]
    _files: list[IO[str]] = field(default_factory=list, repr=False)

    @property
    def fds(self) -> tuple[int, ...]:
        """The lock descriptors to pass to the learner, so the lease lives as long as it."""
        return tuple(handle.fileno() for handle in self._files)

    @property
    def visible_devices(self) -> str:
        """CUDA_VISIBLE_DEVICES: by UUID, so no renumbering can point at another job's GPU."""
        return ",".join(gpu.uuid for gpu in self.gpus)

    def close(self) -> None:
        """Let go of this process's hold (a learner given `fds` still holds them until it dies)."""
        for handle in self._files:
            handle.close()
        self._files.clear()


class GpuMachine:
    """This machine's GPUs, through `nvml` (the pynvml module, or a stand-in with its API).

    Made once per task process: it listens for XID errors from then on, so a GPU that fails
    while a learner runs is seen when the attempt is judged (`inventory` after the learners end).
    """

    def __init__(self, nvml: ModuleType, lease_dir: Path) -> None:
        self.nvml = nvml
        self.lease_dir = lease_dir
        self._events: Any = None
        with contextlib.suppress(nvml.NVMLError):
            self._events = nvml.nvmlEventSetCreate()
            for index in range(nvml.nvmlDeviceGetCount()):
                with contextlib.suppress(nvml.NVMLError):
                    nvml.nvmlDeviceRegisterEvents(
                        nvml.nvmlDeviceGetHandleByIndex(index),
                        nvml.nvmlEventTypeXidCriticalError,
                        self._events,
                    )

    def marker(self, uuid: str) -> Path:
        """The quarantine file of a GPU that failed; it names the failure and the fix."""
        return self.lease_dir / f"{uuid}.unhealthy"

    def inventory(self) -> list[Gpu]:
        """Every GPU, by index, with its health now (hardware XIDs seen so far quarantine it)."""
        nvml = self.nvml
        self._quarantine_xids()
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                gpu = Gpu(
                    index=index,
                    minor=int(nvml.nvmlDeviceGetMinorNumber(handle)),
                    uuid=uuid,
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    memory_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                )
            except nvml.NVMLError as error:
                gpus.append(Gpu(index, -1, f"index-{index}", "unknown", 0, f"NVML: {error}"))
                continue
            gpus.append(replace(gpu, problem=self._problem(handle, uuid)))
        return gpus

    def _problem(self, handle: Any, uuid: str) -> str | None:
        marker = self.marker(uuid)
        if marker.is_file():
            return marker.read_text(encoding="utf-8").strip() or f"quarantined ({marker})"
        try:
            _, _, pending, failed = self.nvml.nvmlDeviceGetRemappedRows(handle)
        except self.nvml.NVMLError:  # not supported on this GPU
            return None
        if failed:
            return "its memory's row remapping failed"
        if pending:
            return "a memory row remapping is pending (the GPU needs a reset)"
        return None

    def _quarantine_xids(self) -> None:
        """Drain the XID events seen since the last look; quarantine GPUs with hardware ones."""
        nvml = self.nvml
        if self._events is None:
            return
        while True:
            try:
                event = nvml.nvmlEventSetWait_v2(self._events, 0)
            except nvml.NVMLError:  # a timeout: no more events
                return
            xid = int(event.eventData)
            if xid not in HARDWARE_XIDS:
                continue
            uuid = _text(nvml.nvmlDeviceGetUUID(event.device))
            self.lease_dir.mkdir(parents=True, exist_ok=True)
            marker = self.marker(uuid)
            marker.write_text(
                f"XID {xid} (a hardware error); fix: {QUARANTINE_FIX.format(marker=marker)}\n",
                encoding="utf-8",
            )

    def lease(self, count: int, gpu_type: str | None = None) -> GpuLease:
        """Hold `count` free healthy GPUs (of `gpu_type`) for one learner.

        Raises:
            PlatformFault: fewer are free now (held by other jobs, or unhealthy); retried, since
                they free up as those end. Never a CPU run in their place.
        """
        gpus = [gpu for gpu in self.inventory() if gpu.is_type(gpu_type)]
        self.lease_dir.mkdir(parents=True, exist_ok=True)
        taken: list[Gpu] = []
        files: list[IO[str]] = []
        for gpu in (gpu for gpu in gpus if gpu.healthy):
            if len(taken) == count:
                break
            handle = (self.lease_dir / f"{gpu.uuid}.lock").open("a", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            files.append(handle)
            taken.append(gpu)
        lease = GpuLease(tuple(taken), files)
        if len(taken) < count:
            lease.close()
            unhealthy = [f"{gpu.index} ({gpu.problem})" for gpu in gpus if not gpu.healthy]
            of_type = f" of type {gpu_type}" if gpu_type else ""
            raise PlatformFault(
                f"resources.gpus: a learner needs {count} GPU(s){of_type} but only {len(taken)} "
                f"of this machine's {len(gpus)} are free and healthy (unhealthy: "
                f"{', '.join(unhealthy) or 'none'}; the rest are held by running learners)",
                "none needed: the retry waits for a GPU; if it keeps happening, the tenants' GPU "
                "pools promise more GPUs than this machine has (trainyard tenants sync warns): "
                "lower their gpu_quota",
            )
        return lease


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def detect_gpus(lease_dir: Path) -> GpuMachine | None:
    """This machine's GPUs, or None where NVML is missing (no library, no driver)."""
    try:
        nvml = importlib.import_module(NVML_MODULE)
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
    except (nvml.NVMLError, OSError):
        return None
    return GpuMachine(nvml, lease_dir)


def lease_dir(work_dir: Path) -> Path:
    """Where the deployment keeps its GPU leases (one machine, one work dir)."""
    return work_dir / LEASE_DIR_NAME


def gpu_count(work_dir: Path) -> int:
    """How many GPUs this machine has (healthy or not); 0 without NVML."""
    machine = detect_gpus(lease_dir(work_dir))
    return 0 if machine is None else len(machine.inventory())


def check_gpus(resources: Resources, machine: GpuMachine | None) -> None:
    """Validate time: a job's GPUs exist here, of its type, as many as its gang needs at once.

    Raises:
        ResourceError: naming resources.gpus or resources.gpu_type and the fix.
    """
    if resources.gpus == 0:
        return
    gpus = [] if machine is None else machine.inventory()
    if not gpus:
        raise ResourceError(
            f"resources.gpus: the job asks for {resources.gpus} GPU(s) per learner, but this "
            "machine, where the tenant's learners run (learner_backend: local), has no NVIDIA "
            "GPU (NVML finds no driver or no device)",
            NO_GPU_FIX,
        )
    matching = [gpu for gpu in gpus if gpu.is_type(resources.gpu_type)]
    if not matching:
        types = ", ".join(sorted({gpu.name for gpu in gpus}))
        raise ResourceError(
            f"resources.gpu_type: this machine has no {resources.gpu_type} GPU; it has {types}",
            "set resources.gpu_type to a word of one of those names, or remove it",
        )
    needed = resources.gpus * resources.learners
    if needed > len(matching):
        of_type = f" {resources.gpu_type}" if resources.gpu_type else ""
        raise ResourceError(
            f"resources.gpus: the job needs gpus x learners = {resources.gpus} x "
            f"{resources.learners} = {needed} GPUs at once, more than the {len(matching)}"
            f"{of_type} GPU(s) of this machine",
            f"ask for at most {len(matching)} GPUs in all (resources.gpus x resources.learners)",
        )
