"""The local backend: the runtime's environment contract, isolation, real runs, stop, memory."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

from devkit.learners import learner_processes, wait_until
from tests.support.gpus import FAKE_NVML_ENV, StandInGpus, stand_in_gpu
from tests.support.paths import path_without
from tests.support.processes import still_running
from trainyard.backends import OOM_KILLED, LearnerEnd, LearnerExit, LearnerSpec, RunMode
from trainyard.backends.base import GANG_STOPPED, GPU_FAILED
from trainyard.backends.local.backend import LocalProcessBackend
from trainyard.backends.local.environments import Environments, FrameworkEnv
from trainyard.failures import PlatformFault, Preemption, ResourceError, UserError
from trainyard.jobs.attempts import judge_attempt
from trainyard.jobs.layout import JobLayout
from trainyard.manifest.schema import parse_manifest
from trainyard.manifest.submission import example_manifest
from trainyard.runtime.sandbox import SandboxNetwork
from trainyard.storage import join_key
from trainyard.storage.config import (
    LocalStorageConfig,
    S3StorageConfig,
    StorageConfig,
    StorageCredentials,
)
from trainyard.storage.local import LocalStore
from trainyard.tenancy.config import TrainyardConfig

JOB_ID = "acme.tiny.20261124-215908-abcd"


def make_spec(
    storage: StorageConfig, work_dir: Path, command: str = "python main.py", **changes: object
) -> LearnerSpec:
    fields: dict[str, object] = {
        "job_id": JOB_ID,
        "tenant": "acme",
        "mode": RunMode.TRAIN,
        "command": command,
        "attempt": 2,
        "num_learners": 3,
        "checkpoint_interval": 15.0,
        "checkpoint_keep": 4,
        "watchdog": 600.0,
        "watchdog_startup": 600.0,
        "storage": storage,
        "work_dir": work_dir,
        "cpus": 2.0,
        "memory_bytes": 2**30,
        "gpus": 0,
        "sandbox_network": SandboxNetwork.STORAGE,  # as the tests' deployments run learners
    }
    fields.update(changes)
    return LearnerSpec(**fields)  # type: ignore[arg-type]


def local_backend(root: Path) -> LocalProcessBackend:
    """Tenant acme's local backend, in a deployment with its scratch and storage under `root`."""
    config = TrainyardConfig.model_validate(
        {
            "work_dir": str(root / "work"),
            "tenants": [{"name": "acme", "storage": {"kind": "local", "root": str(root / "s")}}],
        }
    )
    return LocalProcessBackend(config, "acme")


def ends(exits: list[LearnerExit]) -> list[LearnerEnd]:
    return [LearnerEnd(rank, learner) for rank, learner in enumerate(exits)]


def test_runtime_environment_carries_the_contract(tmp_path: Path) -> None:
    storage = LocalStorageConfig(root=tmp_path / "storage")
    spec = make_spec(storage, tmp_path / "work", command="python train.py --epochs 3")

    env = spec.runtime_environment(rank=1)

    assert env == {
        "TRAINYARD_JOB_ID": JOB_ID,
        "TRAINYARD_TENANT": "acme",
        "TRAINYARD_COMMAND": "python train.py --epochs 3",
        "TRAINYARD_ATTEMPT": "2",
        "TRAINYARD_LEARNER_RANK": "1",
        "TRAINYARD_NUM_LEARNERS": "3",
        "TRAINYARD_CHECKPOINT_INTERVAL": "15.0",
        "TRAINYARD_CHECKPOINT_KEEP": "4",
        "TRAINYARD_WATCHDOG": "600.0",
        "TRAINYARD_WATCHDOG_STARTUP": "600.0",
        "TRAINYARD_WORK_DIR": str(tmp_path / "work"),
        "TRAINYARD_STOP_GRACE": "30",
        "TRAINYARD_STORAGE": json.dumps({"kind": "local", "root": str(tmp_path / "storage")}),
    }


def test_s3_credentials_are_copied_under_the_runtime_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keys in the worker's environment are not the ones a learner gets: the spec's are, and
    # they come from the tenant's Airflow connection.
    monkeypatch.setenv("TRAINYARD_S3_GLOBEX_ACCESS_KEY", "worker-env-access")
    monkeypatch.setenv("TRAINYARD_S3_GLOBEX_SECRET_KEY", "worker-env-secret")
    storage = S3StorageConfig(
        endpoint="minio:9000",
        bucket="globex",
        prefix="trainyard",
        credentials_env="TRAINYARD_S3_GLOBEX",
    )
    credentials = StorageCredentials("globex-access", "globex-secret")

    env = make_spec(storage, tmp_path / "work", credentials=credentials).runtime_environment(0)

    assert env["TRAINYARD_STORAGE_ACCESS_KEY"] == "globex-access"
    assert env["TRAINYARD_STORAGE_SECRET_KEY"] == "globex-secret"
    assert not any(name.startswith("TRAINYARD_S3_GLOBEX") for name in env)
    assert not any("worker-env" in value for value in env.values())
    described = json.loads(env["TRAINYARD_STORAGE"])
    assert described == {
        "kind": "s3",
        "endpoint": "minio:9000",
        "bucket": "globex",
        "prefix": "trainyard",
        "secure": False,
        "region": None,
        "credentials_env": "TRAINYARD_STORAGE",
    }
    # The keys travel in their own variables, never inside the storage description.
    assert "globex-secret" not in env["TRAINYARD_STORAGE"]


def test_s3_storage_without_credentials_is_refused(tmp_path: Path) -> None:
    storage = S3StorageConfig(endpoint="minio:9000", bucket="globex")
    with pytest.raises(ValueError, match="no storage credentials for tenant 'acme'"):
        make_spec(storage, tmp_path / "work").runtime_environment(rank=0)


def test_a_cpu_job_sees_no_gpu_whatever_the_worker_sees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    spec = make_spec(LocalStorageConfig(root=tmp_path / "storage"), tmp_path / "work")

    env = local_backend(tmp_path).learner_environment(spec, rank=0, ports=[29511])

    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert "TRAINYARD_GPU_DEVICES" not in env


def test_a_gpu_learner_sees_exactly_its_leased_gpus(
    stand_in_gpus: StandInGpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    backend = local_backend(tmp_path)
    spec = make_spec(LocalStorageConfig(root=tmp_path / "storage"), tmp_path / "work", gpus=2)
    machine = backend.gpus()
    assert machine is not None
    other_job = machine.lease(1)  # another job's learner holds GPU 0
    lease = machine.lease(2)

    env = backend.learner_environment(spec, rank=0, ports=[29511], lease=lease)
    other_job.close()

    uuids = [stand_in_gpu(index)["uuid"] for index in (1, 3)]  # GPU 2 has an XID
    assert env["CUDA_VISIBLE_DEVICES"] == ",".join(uuids)
    assert json.loads(env["TRAINYARD_GPU_DEVICES"]) == [1, 3]


def test_learner_environment_withholds_the_parents_other_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://airflow:pw@db/airflow")
    monkeypatch.setenv("TRAINYARD_S3_OTHER_SECRET_KEY", "another-tenants-secret")
    monkeypatch.setenv("TRAINYARD_S3_OTHER_ACCESS_KEY", "another-tenants-access")
    monkeypatch.setenv("AIRFLOW_CONN_TRAINYARD_STORAGE_OTHER", '{"password": "another-tenants"}')
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "airflows-own-secret")
    monkeypatch.setenv("PATH", "/opt/bin:/usr/bin")
    spec = make_spec(LocalStorageConfig(root=tmp_path / "storage"), tmp_path / "work")

    env = local_backend(tmp_path).learner_environment(spec, rank=2, ports=[29511, 29512, 29513])

    assert not any(name.startswith("AIRFLOW") for name in env)
    assert "airflows-own-secret" not in env.values()
    assert "TRAINYARD_S3_OTHER_SECRET_KEY" not in env
    assert "TRAINYARD_S3_OTHER_ACCESS_KEY" not in env
    assert not any("another-tenants" in value for value in env.values())
    assert env["PATH"] == "/opt/bin:/usr/bin"
    assert env.items() >= spec.runtime_environment(rank=2).items()
    # torch.distributed's env:// rendezvous
    assert env["MASTER_ADDR"] == "127.0.0.1"
    assert env["MASTER_PORT"] == "29511"
    assert env["WORLD_SIZE"] == "3"
    assert env["RANK"] == "2"
    assert env["LOCAL_RANK"] == "2"
    assert env["OMP_NUM_THREADS"] == "2"
    # jax.distributed.initialize's coordinator, and TensorFlow's MultiWorkerMirroredStrategy
    assert env["JAX_COORDINATOR_ADDRESS"] == "127.0.0.1:29511"
    assert (env["JAX_NUM_PROCESSES"], env["JAX_PROCESS_ID"]) == ("3", "2")
    assert json.loads(env["TF_CONFIG"]) == {
        "cluster": {"worker": ["127.0.0.1:29511", "127.0.0.1:29512", "127.0.0.1:29513"]},
        "task": {"type": "worker", "index": 2},
    }


# Real runs of the learner runtime in a child process.

HELLO = """\
import os
import pathlib

print("hello from learner", os.environ["TRAINYARD_LEARNER_RANK"], flush=True)
result_dir = pathlib.Path(os.environ["TRAINYARD_RESULT_DIR"])
(result_dir / "model.txt").write_text("weights of " + os.environ["TRAINYARD_JOB_ID"])
"""

SLEEPER = """\
import time

print("ready", flush=True)
time.sleep(120)
"""


def job_with_code(store: LocalStore, script: str) -> JobLayout:
    layout = JobLayout(JOB_ID)
    store.put_bytes(join_key(layout.code, "main.py"), script.encode())
    return layout


def test_run_executes_the_command_and_publishes_results(
    local_store: LocalStore, tmp_path: Path
) -> None:
    layout = job_with_code(local_store, HELLO)
    spec = make_spec(LocalStorageConfig(root=local_store.root), tmp_path / "work", num_learners=1)
    lines: list[str] = []

    exits = local_backend(tmp_path).run(spec, on_output=lines.append)

    assert exits == [LearnerExit(0)], "\n".join(lines)
    assert "hello from learner 0" in lines
    model = local_store.get_bytes(join_key(layout.results, "model.txt"))
    assert model == f"weights of {JOB_ID}".encode()
    assert judge_attempt(local_store, spec, ends(exits)) is None


PARAMETERS_SCRIPT = """
import json, os, sys
print("argv " + json.dumps(sys.argv[1:]), flush=True)
given = {k: v for k, v in os.environ.items() if k.startswith("TRAINYARD_PARAM_")}
print("env " + json.dumps(given, sort_keys=True), flush=True)
"""


def test_a_jobs_hyperparameters_reach_its_command_filled_in_and_as_variables(
    local_store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Environments, "prepare", lambda self, framework, on_output: Path("/x"))
    manifest = parse_manifest(
        example_manifest("acme")
        | {
            "command": "python main.py --lr {lr} --name {name}",
            "hyperparameters": {"lr": 0.01, "name": "two words; ls", "fast": False},
        }
    )
    planned = local_backend(tmp_path).learner_spec(
        manifest, job_id=JOB_ID, mode=RunMode.TRAIN, attempt=1, credentials=None, on_output=print
    )
    job_with_code(local_store, PARAMETERS_SCRIPT)
    spec = make_spec(
        LocalStorageConfig(root=local_store.root),
        tmp_path / "work",
        command=planned.command,
        parameters=planned.parameters,
        num_learners=1,
    )
    lines: list[str] = []

    exits = local_backend(tmp_path).run(spec, on_output=lines.append)

    assert exits == [LearnerExit(0)], "\n".join(lines)
    assert 'argv ["--lr", "0.01", "--name", "two words; ls"]' in lines
    expected = {
        "TRAINYARD_PARAM_FAST": "false",
        "TRAINYARD_PARAM_LR": "0.01",
        "TRAINYARD_PARAM_NAME": "two words; ls",
    }
    assert f"env {json.dumps(expected, sort_keys=True)}" in lines


def test_stop_ends_a_running_learner_gracefully(local_store: LocalStore, tmp_path: Path) -> None:
    job_with_code(local_store, SLEEPER)
    spec = make_spec(LocalStorageConfig(root=local_store.root), tmp_path / "work", num_learners=1)
    backend = local_backend(tmp_path)
    lines: list[str] = []
    ready = threading.Event()
    exits: list[LearnerExit] = []

    def on_output(line: str) -> None:
        lines.append(line)
        if line == "ready":
            ready.set()

    runner = threading.Thread(target=lambda: exits.extend(backend.run(spec, on_output)))
    runner.start()
    try:
        assert ready.wait(timeout=30), "the learner never started:\n" + "\n".join(lines)
        backend.stop()
        runner.join(timeout=spec.learner_grace)
    finally:
        if runner.is_alive():  # do not leave a sleeping learner behind a failed test
            for process in backend._processes:
                process.kill()
            runner.join()

    assert not runner.is_alive(), "the learner outlived the grace period"
    # Ended by the forwarded SIGTERM (not a SIGKILL after the grace period): a preemption.
    assert exits == [LearnerExit(128 + signal.SIGTERM)], "\n".join(lines)
    failure = judge_attempt(local_store, spec, ends(exits))
    assert isinstance(failure, Preemption)


def test_stop_before_run_is_harmless(tmp_path: Path) -> None:
    local_backend(tmp_path).stop()


# Memory: the backend enforces resources.memory on each learner's whole process tree.

# Allocates (and touches) its first argument in MiB, then sleeps for its second in seconds.
HOG = """\
import sys
import time

hog = bytearray(int(sys.argv[1]) * 2**20)
print("allocated", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_learner_over_its_memory_limit_is_oom_killed(
    local_store: LocalStore, tmp_path: Path
) -> None:
    """300 MiB against 150 MiB: the runtime itself holds about 40 MiB, the job about 310 MiB."""
    job_with_code(local_store, HOG)
    spec = make_spec(
        LocalStorageConfig(root=local_store.root),
        tmp_path / "work",
        command="python main.py 300 60",
        num_learners=1,
        memory_bytes=150 * 2**20,
    )
    backend = local_backend(tmp_path)
    lines: list[str] = []

    started = time.monotonic()
    exits = backend.run(spec, on_output=lines.append)

    assert time.monotonic() - started < 30, "the learner was not killed before its sleep ended"
    assert exits == [LearnerExit(-signal.SIGKILL, reason=OOM_KILLED)], "\n".join(lines)
    [killed] = [line for line in lines if "killing it (OOMKilled)" in line]
    assert "learner 0 used" in killed
    assert "> its limit resources.memory = 150Mi" in killed
    assert still_running([backend._processes[0].pid]) == []
    # Nothing of its sandbox either (the kernel ends it with its init, a moment later).
    wait_until(lambda: not learner_processes(JOB_ID, user_code=True), "the command to end", 10)
    # The runtime, killed hard, left its workspace: the backend deleted it.
    assert not (tmp_path / "work" / JOB_ID).exists()


def test_learner_within_its_memory_limit_runs_to_completion(
    local_store: LocalStore, tmp_path: Path
) -> None:
    job_with_code(local_store, HOG)
    spec = make_spec(
        LocalStorageConfig(root=local_store.root),
        tmp_path / "work",
        command="python main.py 300 1",
        num_learners=1,
        memory_bytes=2**30,
    )
    lines: list[str] = []

    exits = local_backend(tmp_path).run(spec, on_output=lines.append)

    assert exits == [LearnerExit(0)], "\n".join(lines)
    assert not any("OOMKilled" in line for line in lines)


# Multi-learner jobs: the ranks run as a gang.

# Rank 1 fails at once; the other ranks would sleep for two minutes.
ONE_RANK_FAILS = """\
import os
import time

if os.environ["TRAINYARD_LEARNER_RANK"] == "1":
    raise SystemExit("rank 1 lost its data shard")
print("ready", flush=True)
time.sleep(120)
"""


def test_a_rank_that_fails_stops_its_gang_and_is_judged_first(
    local_store: LocalStore, tmp_path: Path
) -> None:
    job_with_code(local_store, ONE_RANK_FAILS)
    spec = make_spec(LocalStorageConfig(root=local_store.root), tmp_path / "work", num_learners=3)
    lines: list[str] = []
    started = time.monotonic()

    exits = local_backend(tmp_path).run(spec, on_output=lines.append)

    assert time.monotonic() - started < spec.learner_grace + 30, "the gang was not stopped"
    assert exits[1].exit_code != 0
    assert exits[1].reason is None
    # The others were stopped with SIGTERM (a final checkpoint), not left to sleep: their
    # runtime exits 143, or dies of the signal when it came before its handler (a loaded
    # machine may still be starting a rank when rank 1 has already failed).
    for rank in (0, 2):
        assert exits[rank].reason == GANG_STOPPED, "\n".join(lines)
        assert exits[rank].exit_code in (128 + signal.SIGTERM, -signal.SIGTERM), "\n".join(lines)
    assert any("learner 1 exited with code 1: stopping learners 0, 2" in line for line in lines)
    failure = judge_attempt(local_store, spec, ends(exits))
    assert isinstance(failure, UserError)
    assert "learner 1" in failure.cause


# The check at validate.


def test_check_refuses_a_framework_without_an_environment_naming_the_field(
    tmp_path: Path,
) -> None:
    changes = {"framework": {"name": "pytorch", "version": "1.0"}}
    manifest = parse_manifest(example_manifest("acme") | changes)

    with pytest.raises(ResourceError) as refused:
        local_backend(tmp_path).check(manifest)

    assert refused.value.cause.startswith("framework.version: ")


def test_check_refuses_where_the_sandbox_the_config_asks_for_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validate fails rather than running the tenant's code unsandboxed by accident."""
    monkeypatch.setenv("PATH", path_without("bwrap", tmp_path / "bin"))
    config = TrainyardConfig.model_validate(
        {
            "work_dir": str(tmp_path / "work"),
            "sandbox": {"enabled": True},
            "tenants": [{"name": "acme", "storage": {"kind": "local", "root": str(tmp_path)}}],
        }
    )

    with pytest.raises(ResourceError, match="bubblewrap"):
        LocalProcessBackend(config, "acme").check(parse_manifest(example_manifest("acme")))


# GPUs: real learners on a machine of stand-in GPUs (tests/support/fake_nvml).

SHOW_GPUS = """\
import os

print("visible:", os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
"""


def test_each_rank_of_a_gpu_gang_runs_on_its_own_leased_gpu(
    stand_in_gpus: StandInGpus, local_store: LocalStore, tmp_path: Path
) -> None:
    job_with_code(local_store, SHOW_GPUS)
    spec = make_spec(
        LocalStorageConfig(root=local_store.root), tmp_path / "work", num_learners=2, gpus=1
    )
    backend = local_backend(tmp_path)
    lines: list[str] = []

    exits = backend.run(spec, on_output=lines.append)

    assert exits == [LearnerExit(0), LearnerExit(0)], "\n".join(lines)
    # Inside each sandboxed command: its own GPU's UUID, never GPU 2 (XID 79).
    for rank, gpu in enumerate((0, 1)):
        assert f"[learner {rank}] visible: {stand_in_gpu(gpu)['uuid']}" in lines
    machine = backend.gpus()
    assert machine is not None
    assert len(machine.lease(3).gpus) == 3  # the attempt's leases ended with it


def test_a_learner_whose_gpu_fails_mid_run_is_a_platform_fault_and_the_gpu_stays_out(
    stand_in_gpus: StandInGpus, local_store: LocalStore, tmp_path: Path
) -> None:
    job_with_code(local_store, SLEEPER)
    spec = make_spec(
        LocalStorageConfig(root=local_store.root), tmp_path / "work", num_learners=1, gpus=1
    )
    backend = local_backend(tmp_path)
    lines: list[str] = []
    ready = threading.Event()
    exits: list[LearnerExit] = []

    def on_output(line: str) -> None:
        lines.append(line)
        if line == "ready":
            ready.set()

    runner = threading.Thread(target=lambda: exits.extend(backend.run(spec, on_output)))
    runner.start()
    try:
        assert ready.wait(timeout=30), "the learner never started:\n" + "\n".join(lines)
        stand_in_gpus.fail(0, xid=79)  # GPU 0 falls off the bus, and its learner dies
        for process in backend._processes:
            process.kill()
    finally:
        runner.join(timeout=60)

    assert exits == [LearnerExit(-signal.SIGKILL, reason=GPU_FAILED)], "\n".join(lines)
    assert any("GPU 0" in line and "XID 79" in line for line in lines), "\n".join(lines)
    failure = judge_attempt(local_store, spec, ends(exits))
    assert isinstance(failure, PlatformFault)
    assert "GPU failed" in failure.cause
    machine = backend.gpus()
    assert machine is not None
    assert [gpu.index for gpu in machine.lease(2).gpus] == [1, 3]  # the retry's GPUs


def test_check_refuses_a_gpu_job_on_a_machine_without_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    StandInGpus(tmp_path / "gpus").install(monkeypatch)
    monkeypatch.delenv(FAKE_NVML_ENV)  # the stand-in without state: no driver
    manifest = parse_manifest(example_manifest("acme") | {"resources": {"gpus": 1}})

    with pytest.raises(ResourceError) as refused:
        local_backend(tmp_path).check(manifest)

    assert refused.value.cause.startswith("resources.gpus: ")
    assert "resources.gpus: 0" in refused.value.fix


def test_check_refuses_a_gpu_type_the_machine_lacks(
    stand_in_gpus: StandInGpus, tmp_path: Path
) -> None:
    manifest = parse_manifest(
        example_manifest("acme") | {"resources": {"gpus": 1, "gpu_type": "h100"}}
    )

    with pytest.raises(ResourceError) as refused:
        local_backend(tmp_path).check(manifest)

    assert refused.value.cause == (
        "resources.gpu_type: this machine has no h100 GPU; it has NVIDIA A100-SXM4-80GB"
    )


def test_check_passes_a_gpu_job_the_machine_can_run(
    stand_in_gpus: StandInGpus, tmp_path: Path
) -> None:
    manifest = parse_manifest(
        example_manifest("acme") | {"resources": {"gpus": 1, "gpu_type": "a100", "learners": 2}}
    )

    local_backend(tmp_path).check(manifest)
    assert local_backend(tmp_path).machine_gpus() == 4


@pytest.mark.parametrize(
    ("gpus", "build"), [pytest.param(1, "cuda", id="gpu-job"), pytest.param(0, "cpu", id="cpu-job")]
)
def test_a_gpu_job_on_a_gpu_machine_runs_in_the_cuda_build(
    stand_in_gpus: StandInGpus,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    gpus: int,
    build: str,
) -> None:
    prepared: list[FrameworkEnv] = []

    def prepare(self: Environments, framework: FrameworkEnv, on_output: object) -> Path:
        prepared.append(framework)  # never installs (the CUDA wheels are several GB)
        return self.python(framework)

    monkeypatch.setattr(Environments, "prepare", prepare)
    manifest = parse_manifest(example_manifest("acme") | {"resources": {"gpus": gpus}})

    spec = local_backend(tmp_path).learner_spec(
        manifest, job_id=JOB_ID, mode=RunMode.TRAIN, attempt=1, credentials=None, on_output=print
    )

    (framework,) = prepared
    assert framework.accelerator == build
    assert spec.python is not None
    assert ("pytorch-2.13-cuda-" in str(spec.python)) is (build == "cuda")
