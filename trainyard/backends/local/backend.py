"""Local backend: each learner is a child process running the learner runtime, in its
framework's environment (`environments.py`) and, when the deployment sandboxes user code, in
its sandbox.

This is the embedded default. Learners get a minimal environment (no Airflow or other tenants'
variables) plus the runtime's contract, and die with their parent: if the Airflow task process
is killed, the kernel sends them SIGTERM, so they still write a final checkpoint. With no kubelet
to enforce resources.memory, the backend does it itself, as a container's cgroup would.

GPUs are assigned like a device plugin would (`gpus.py`): each learner of a GPU job leases
`resources.gpus` healthy GPUs of its own (CUDA_VISIBLE_DEVICES by UUID, its sandbox binds only
their device nodes) and runs in its framework's CUDA build; a job whose GPUs this machine lacks
is refused at validate, never run on the CPU. A CPU job sees no GPU and keeps the CPU build.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import psutil

from trainyard.backends.base import (
    GANG_STOPPED,
    GPU_FAILED,
    OOM_KILLED,
    LearnerExit,
    LearnerSpec,
    ProcessBackend,
    distributed_environment,
)
from trainyard.backends.local.environments import Accelerator, check_framework, learner_python
from trainyard.backends.local.gpus import (
    NO_GPU_FIX,
    GpuLease,
    GpuMachine,
    check_gpus,
    detect_gpus,
    lease_dir,
)
from trainyard.failures import PlatformFault
from trainyard.jobs.layout import RunMode
from trainyard.manifest.schema import JobManifest, Resources
from trainyard.manifest.units import format_bytes
from trainyard.runtime.process import die_with_parent
from trainyard.runtime.sandbox import UNSANDBOXED
from trainyard.runtime.workspace import Workspace
from trainyard.storage.config import StorageCredentials
from trainyard.tenancy.config import TrainyardConfig

#: Variables of the parent environment a learner may see; everything else is withheld.
INHERITED_VARIABLES = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "TZ",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
)
#: How often the gang is looked at for a learner that ended.
GANG_POLL_SECONDS = 0.2
#: How often each learner's memory is sampled; an allocation between samples goes unseen.
MEMORY_SAMPLE_SECONDS = 0.2


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM (a graceful stop) when the task process dies."""
    die_with_parent(signal.SIGTERM)


def _process_tree(root: psutil.Process) -> list[psutil.Process]:
    """`root` and all its descendants: what a learner's container (its cgroup) would hold."""
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _resident_bytes(processes: list[psutil.Process]) -> int:
    """Summed RSS: pages shared between processes count once per process, erring strict."""
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def _free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held open together, so none repeats)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


class LocalProcessBackend(ProcessBackend):
    """Learners as child processes of the Airflow task (`learner_backend: local`)."""

    name = "local"

    def __init__(self, config: TrainyardConfig, tenant: str) -> None:
        super().__init__(config, tenant)
        self._processes: list[subprocess.Popen[str]] = []
        # How long a stopped learner of the gang may take: `LearnerSpec.learner_grace`.
        self._grace = 0

    def check(self, manifest: JobManifest) -> None:
        """The framework needs an environment this deployment can make (its CUDA build for a GPU
        job), the job's GPUs must be on this machine, and the tenant's learners need a sandbox
        as the config asks (a refused sandbox fails the job at validate)."""
        resources = manifest.resources
        if resources.gpus:
            check_gpus(resources, self.gpus())
        check_framework(manifest.framework, self.config.environments, self.accelerator(resources))
        self.config.sandbox_network_of(self.tenant.name)

    def gpus(self) -> GpuMachine | None:
        """This machine's GPUs and their leases (None: no NVIDIA driver here)."""
        return detect_gpus(lease_dir(self.config.work_dir))

    def machine_gpus(self) -> int:
        machine = self.gpus()
        return 0 if machine is None else len(machine.inventory())

    def accelerator(self, resources: Resources) -> Accelerator:
        """The framework build a job's learners run in: CUDA for a GPU job on a machine with
        GPUs. A GPU job where none are left gets the CPU build only to fail at its lease (a
        platform fault, retried), never to train on the CPU."""
        return Accelerator.CUDA if resources.gpus and self.machine_gpus() else Accelerator.CPU

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
        """The common spec, plus the framework environment's Python (made if missing; the CUDA
        build for a GPU job) and the sandbox's network."""
        spec = super().learner_spec(
            manifest,
            job_id=job_id,
            mode=mode,
            attempt=attempt,
            credentials=credentials,
            on_output=on_output,
        )
        return replace(
            spec,
            python=learner_python(
                manifest.framework,
                self.config.environments,
                on_output,
                self.accelerator(manifest.resources),
            ),
            sandbox_network=self.config.sandbox_network_of(self.tenant.name),
        )

    def learner_environment(
        self, spec: LearnerSpec, rank: int, ports: list[int], lease: GpuLease | None = None
    ) -> dict[str, str]:
        """The learner's whitelisted environment; `ports`: one per rank, rank 0's the master;
        `lease`: the GPUs the learner holds (only those are visible to it)."""
        env = {name: os.environ[name] for name in INHERITED_VARIABLES if name in os.environ}
        env.update(spec.runtime_environment(rank))
        # Multi-learner jobs on one machine: every learner is local to rank 0.
        env.update(
            distributed_environment(
                spec,
                rank,
                master_addr="127.0.0.1",
                master_port=ports[0],
                local_rank=rank,
                workers=[f"127.0.0.1:{port}" for port in ports],
            )
        )
        if spec.python is not None:
            env["VIRTUAL_ENV"] = str(spec.python.parent.parent)
        if spec.sandbox_network is not None:
            env["TRAINYARD_SANDBOX_NETWORK"] = spec.sandbox_network.value
        # A CPU job sees no GPU, so it cannot take one from the GPU jobs.
        env["CUDA_VISIBLE_DEVICES"] = "" if lease is None else lease.visible_devices
        if lease is not None:
            env["TRAINYARD_GPU_DEVICES"] = json.dumps([gpu.minor for gpu in lease.gpus])
        return env

    def _lease_gpus(
        self, machine: GpuMachine | None, spec: LearnerSpec, on_output: Callable[[str], None]
    ) -> list[GpuLease]:
        """One lease per rank of `spec.gpus` distinct GPUs, or none for a CPU job.

        Raises:
            PlatformFault: the GPUs are gone or held (retried; validate saw them).
        """
        if spec.gpus == 0:
            return []
        if machine is None:
            raise PlatformFault(
                "resources.gpus: NVML finds no NVIDIA GPU on this machine any more (it did at "
                "validate): the driver is not loaded or the GPUs are gone",
                f"check nvidia-smi on the machine; the retry runs once it shows them; or "
                f"{NO_GPU_FIX}",
            )
        leases: list[GpuLease] = []
        try:
            for rank in range(spec.num_learners):
                lease = machine.lease(spec.gpus, spec.gpu_type)
                leases.append(lease)
                names = ", ".join(f"{gpu.index} ({gpu.name}, {gpu.uuid})" for gpu in lease.gpus)
                on_output(f"trainyard: learner {rank} holds GPU {names}")
        except PlatformFault:
            for lease in leases:
                lease.close()
            raise
        return leases

    @staticmethod
    def _failed_gpus(
        machine: GpuMachine | None, leases: list[GpuLease], on_output: Callable[[str], None]
    ) -> set[int]:
        """The ranks whose GPUs NVML reports unhealthy now: `machine` has listened for XID
        errors since before the learners started."""
        if machine is None or not leases:
            return set()
        problems = {gpu.uuid: gpu.problem for gpu in machine.inventory() if not gpu.healthy}
        failed = set()
        for rank, lease in enumerate(leases):
            for gpu in lease.gpus:
                if gpu.uuid in problems:
                    on_output(
                        f"trainyard: learner {rank}'s GPU {gpu.index} ({gpu.uuid}) failed: "
                        f"{problems[gpu.uuid]}"
                    )
                    failed.add(rank)
        return failed

    def run(self, spec: LearnerSpec, on_output: Callable[[str], None]) -> list[LearnerExit]:
        """Start every rank at once and run them as a gang: the first rank to fail gets the
        others stopped (SIGTERM, so they may checkpoint), since a collective with a dead peer
        can only hang or fail, and the retry restarts the whole group."""
        self._processes = []  # a retry in the same task process is a new gang
        self._grace = spec.learner_grace
        machine = self.gpus() if spec.gpus else None
        leases = self._lease_gpus(machine, spec, on_output)
        try:
            exits = self._run_gang(spec, leases, on_output)
            gpu_failed = self._failed_gpus(machine, leases, on_output)
            return [
                replace(learner, reason=GPU_FAILED)
                if rank in gpu_failed and learner.exit_code != 0 and learner.reason != OOM_KILLED
                else learner
                for rank, learner in enumerate(exits)
            ]
        finally:
            for lease in leases:
                lease.close()

    def _run_gang(
        self, spec: LearnerSpec, leases: list[GpuLease], on_output: Callable[[str], None]
    ) -> list[LearnerExit]:
        ports = _free_ports(spec.num_learners)
        python = str(spec.python or sys.executable)
        on_output(f"trainyard: learner runtime: {python}")
        if spec.sandbox_network is None:
            on_output(f"trainyard: {UNSANDBOXED}")
        pumps = []
        learners: list[psutil.Process] = []
        for rank in range(spec.num_learners):
            lease = leases[rank] if leases else None
            process = subprocess.Popen(
                # -P: not the working directory first on sys.path, so the environment's own
                # copy of the runtime runs, whatever directory the worker runs in.
                [python, "-P", "-m", "trainyard.runtime", spec.mode.value],
                env=self.learner_environment(spec, rank, ports, lease),
                # The learner holds its GPUs' locks too: they outlive neither it nor this task.
                pass_fds=lease.fds if lease is not None else (),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            self._processes.append(process)
            learners.append(psutil.Process(process.pid))
            prefix = f"[learner {rank}] " if spec.num_learners > 1 else ""
            pump = threading.Thread(
                target=self._pump, args=(process, prefix, on_output), daemon=True
            )
            pump.start()
            pumps.append(pump)
        oom_killed: set[int] = set()
        ended = threading.Event()
        monitor = threading.Thread(
            target=self._enforce_memory,
            args=(learners, spec.memory_bytes, on_output, oom_killed, ended),
            name="trainyard-memory",
            daemon=True,
        )
        monitor.start()
        exit_codes, stopped = self._wait_as_gang(on_output)
        ended.set()
        monitor.join()
        for pump in pumps:
            pump.join()
        for rank in range(spec.num_learners):  # a runtime killed hard left its workspace
            Workspace.of(spec.work_dir, spec.job_id, spec.mode, spec.attempt, rank).remove()
        return [
            LearnerExit(
                code,
                reason=OOM_KILLED
                if rank in oom_killed
                else GANG_STOPPED
                if rank in stopped
                else None,
            )
            for rank, code in enumerate(exit_codes)
        ]

    def _wait_as_gang(self, on_output: Callable[[str], None]) -> tuple[list[int], set[int]]:
        """Wait for every learner; return their exit codes and the ranks stopped for another."""
        codes: dict[int, int] = {}
        stopped: set[int] = set()
        deadline: float | None = None
        while len(codes) < len(self._processes):
            for rank, process in enumerate(self._processes):
                code = process.poll()
                if rank in codes or code is None:
                    continue
                codes[rank] = code
                running = [r for r in range(len(self._processes)) if r not in codes]
                if code != 0 and running and not stopped:
                    on_output(
                        f"trainyard: learner {rank} exited with code {code}: stopping learners "
                        f"{', '.join(map(str, running))} of its gang; the retry restarts all"
                    )
                    stopped.update(running)
                    for other in running:
                        with contextlib.suppress(ProcessLookupError):
                            self._processes[other].send_signal(signal.SIGTERM)
                    deadline = time.monotonic() + self._grace
            if deadline is not None and time.monotonic() > deadline:
                for rank, process in enumerate(self._processes):
                    if rank not in codes:
                        with contextlib.suppress(ProcessLookupError):
                            process.kill()
                deadline = None
            if len(codes) < len(self._processes):
                time.sleep(GANG_POLL_SECONDS)
        return [codes[rank] for rank in range(len(self._processes))], stopped

    @staticmethod
    def _enforce_memory(
        learners: list[psutil.Process],
        limit: int,
        on_output: Callable[[str], None],
        oom_killed: set[int],
        ended: threading.Event,
    ) -> None:
        """SIGKILL every process of a learner whose tree holds more than `limit` bytes.

        Like the kernel's OOM killer in a cgroup: no grace and no final checkpoint, so that one
        learner cannot take the machine's memory (Airflow's included) from everything else.
        """
        while not ended.wait(MEMORY_SAMPLE_SECONDS):
            for rank, learner in enumerate(learners):
                if rank in oom_killed:
                    continue
                tree = _process_tree(learner)
                used = _resident_bytes(tree)
                if used <= limit:
                    continue
                oom_killed.add(rank)
                on_output(
                    f"trainyard: learner {rank} used {used / 2**20:.0f}Mi of memory > its limit "
                    f"resources.memory = {format_bytes(limit)}: killing it (OOMKilled)"
                )
                for process in tree:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        process.kill()

    @staticmethod
    def _pump(
        process: subprocess.Popen[str], prefix: str, on_output: Callable[[str], None]
    ) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            on_output(prefix + line.rstrip("\n"))

    def stop(self) -> None:
        running = [p for p in self._processes if p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout=self._grace)
            except subprocess.TimeoutExpired:
                process.kill()
