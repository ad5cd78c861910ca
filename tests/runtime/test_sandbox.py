"""A hostile job on the local backend, sandboxed: real runtime, real bubblewrap, no Airflow.

The worker's environment and disk hold what a learner must never reach: an AIRFLOW_HOME with
airflow.cfg, the metadata DB and the API's signing secret, the deployment config, Airflow's
secrets in the environment, another tenant's storage directory and bucket, another job's work
directory. The job (tests/runtime/hostile_job.py) tries each, reports every attempt in its
results, and still trains; the tenant's storage is an S3 server that checks keys, and the
learner has only its own tenant's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devkit.s3_server import S3Server, running_s3_server
from tests.support.paths import path_without
from trainyard.backends import LearnerSpec, RunMode
from trainyard.backends.local.backend import LocalProcessBackend
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JobLayout
from trainyard.runtime.sandbox import SHARED_GPU_DEVICES, UNSANDBOXED, Sandbox, SandboxNetwork
from trainyard.storage import ObjectStore, StorageCredentials
from trainyard.storage.local import LocalStore
from trainyard.storage.s3 import S3Store
from trainyard.tenancy.config import TenantConfig, TrainyardConfig, load_config

JOB = "acme.hostile.20261202-010000-abcd"
OTHER_JOB = "acme.victim.20261202-000000-ef01"
LAYOUT = JobLayout(JOB)
HOSTILE_JOB = Path(__file__).with_name("hostile_job.py")
#: Secrets of the machine; none may show up anywhere the job can write.
JWT_SECRET = "jwt-signing-secret-7f3a9c"
FERNET_KEY = "fernet-key-of-airflow-2b8d"
CONNECTION = "aws://AKIA-GLOBEX:globex-secret-in-airflow@"


@dataclass
class HostileRun:
    network: SandboxNetwork
    report: dict[str, dict[str, Any]]
    store: ObjectStore
    keys: StorageCredentials
    exit_code: int
    output: list[str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_s3_server(tmp_path_factory.mktemp("s3-auth"), authenticate=True) as server:
        yield server


def machine(root: Path) -> dict[str, Any]:
    """What the worker holds besides the job: returns the job's targets.json."""
    home = root / "airflow"
    home.mkdir()
    (home / "airflow.cfg").write_text(f"[core]\nfernet_key = {FERNET_KEY}\n")
    (home / "airflow.db").write_bytes(b"SQLite format 3\x00" + CONNECTION.encode())
    (home / "trainyard-secrets.json").write_text(json.dumps({"jwt": JWT_SECRET}))
    (root / "trainyard.yaml").write_text("tenants: [acme, globex]\n")
    other_storage = root / "storage" / "globex"
    (other_storage / "datasets").mkdir(parents=True)
    (other_storage / "datasets" / "secret.csv").write_text("globex's data")
    other_job = root / "work" / OTHER_JOB
    (other_job / "attempt-1-rank-0" / "data").mkdir(parents=True)
    (other_job / "attempt-1-rank-0" / "data" / "secret.csv").write_text("victim's data")
    return {
        "airflow_home": str(home),
        "config": str(root / "trainyard.yaml"),
        "other_storage": str(other_storage),
        "other_job": str(other_job),
        "work_dir": str(root / "work"),
        "outside_pid": os.getpid(),  # this test: the Airflow worker, with its secrets
    }


def run_hostile_job(
    server: S3Server, root: Path, network: SandboxNetwork, monkeypatch: pytest.MonkeyPatch
) -> HostileRun:
    targets = machine(root)
    admin = StorageCredentials(server.access_key, server.secret_key)
    acme, other = server.config(f"acme-{network}"), server.config(f"initech-{network}")
    for bucket in (acme, other):
        S3Store.from_config(bucket, credentials=admin).ensure_bucket()
    keys = server.tenant_keys(f"acme-{network}", acme)
    other_keys = server.tenant_keys(f"initech-{network}", other)
    S3Store.from_config(other, credentials=other_keys).put_bytes("datasets/own.csv", b"initech")
    store = S3Store.from_config(acme, credentials=keys)
    targets.update(s3_endpoint=server.endpoint, other_bucket=other.bucket)
    store.put_bytes(f"{LAYOUT.code}/train.py", HOSTILE_JOB.read_bytes())
    store.put_bytes(f"{LAYOUT.code}/targets.json", json.dumps(targets).encode())
    store.put_bytes(f"{LAYOUT.data}/rows.csv", b"42 rows")
    # The worker's own environment, as Airflow's task process has it.
    monkeypatch.setenv("AIRFLOW_HOME", targets["airflow_home"])
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("AIRFLOW_CONN_TRAINYARD_STORAGE_GLOBEX", CONNECTION)
    monkeypatch.setenv("TRAINYARD_S3_GLOBEX_SECRET_KEY", "globex-secret-in-worker-env")
    spec = LearnerSpec(
        job_id=JOB,
        tenant="acme",
        mode=RunMode.TRAIN,
        command="python train.py",
        attempt=1,
        num_learners=1,
        checkpoint_interval=5.0,
        checkpoint_keep=3,
        watchdog=0.0,
        watchdog_startup=0.0,
        storage=acme.model_copy(update={"credentials_env": "TRAINYARD_S3_ACME"}),
        work_dir=root / "work",
        cpus=1.0,
        memory_bytes=2**30,
        gpus=0,
        credentials=keys,
        sandbox_network=network,
    )
    output: list[str] = []
    config = TrainyardConfig(
        work_dir=root / "work", tenants=[TenantConfig(name="acme", storage=spec.storage)]
    )
    [learner] = LocalProcessBackend(config, "acme").run(spec, on_output=output.append)
    report = json.loads(store.get_bytes(f"{LAYOUT.results}/report.json"))
    return HostileRun(network, report, store, keys, learner.exit_code, output)


@pytest.fixture(scope="module", params=[SandboxNetwork.STORAGE, SandboxNetwork.ALL], ids=str)
def hostile(
    request: pytest.FixtureRequest, server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileRun]:
    assert shutil.which("bwrap"), "make services installs bubblewrap"
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield run_hostile_job(server, tmp_path_factory.mktemp("worker"), request.param, monkeypatch)


ATTEMPTS = [
    "read airflow.cfg",
    "read the metadata DB",
    "read the API's signing secret",
    "list AIRFLOW_HOME",
    "read the deployment config",
    "list another tenant's storage",
    "read another tenant's data",
    "list another job's work dir",
    "read another job's data",
    "find other jobs in the work dir",
    "write to the framework environment",
    "write to the system",
    "credentials in its environment",
    "read /proc/1/environ",
    "read the environment of a process outside",
    "see processes outside in /proc",
    "signal a process outside",
    "make a user namespace",
    "read another tenant's bucket",
]


@pytest.mark.parametrize("name", ATTEMPTS)
def test_hostile_attempt_is_denied(hostile: HostileRun, name: str) -> None:
    entry = hostile.report[name]
    assert entry["denied"], f"{name}: {entry['tried']} gave {entry['detail']}"


def test_no_secret_anywhere_the_job_could_read(hostile: HostileRun) -> None:
    """Not in its environment, not in any /proc/*/environ it saw: not even its own keys."""
    seen = json.dumps(hostile.report)
    for secret in (
        JWT_SECRET,
        FERNET_KEY,
        CONNECTION,
        "globex-secret-in-worker-env",
        *hostile.keys,
    ):
        assert secret not in seen
    assert list(hostile.report["environments in /proc"]["detail"]) == ["1", "2"]


def test_network_is_cut_unless_the_tenant_allows_it(hostile: HostileRun) -> None:
    entry = hostile.report["reach the storage server"]
    assert entry["denied"] is (hostile.network is not SandboxNetwork.ALL), entry


def test_its_legitimate_work_succeeds(hostile: HostileRun) -> None:
    assert hostile.exit_code == 0, "\n".join(hostile.output)
    assert CheckpointStore(hostile.store, LAYOUT).committed_steps() == [1]
    assert hostile.store.get_bytes(f"{LAYOUT.results}/model.txt") == b"model of 42 rows"


def test_the_runtime_follows_none_of_its_links(hostile: HostileRun) -> None:
    stored = {info.key for info in hostile.store.list(LAYOUT.root)}
    results = {key for key in stored if key.startswith(LAYOUT.results + "/")}
    assert results == {
        f"{LAYOUT.results}/{n}" for n in ("model.txt", "report.json", "_MANIFEST.json")
    }
    step_1 = {key.rsplit("/", 1)[1] for key in stored if "/step-000000001/" in key}
    assert step_1 == {"weights.txt", "_MANIFEST.json"}
    assert not any("/step-000000002/" in key for key in stored)


#: An ordinary job: what it can see of the machine outside its workspace says it is unsandboxed.
PLAIN_JOB = """
import json, os
from pathlib import Path
results = Path(os.environ["TRAINYARD_RESULT_DIR"])
(results / "model.txt").write_text("trained")
(results / "saw.json").write_text(json.dumps({"root_entries": len(os.listdir("/"))}))
with open(os.environ["TRAINYARD_METRICS_FILE"], "a") as metrics:
    metrics.write(json.dumps({"step": 1, "loss": 0.5}) + "\\n")
"""


def test_without_bwrap_a_deployment_that_turned_the_sandbox_off_runs_the_job_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sandbox.enabled: false`, said in so many words: the learner runs (bwrap or not), and
    its log says that the job's code ran unsandboxed."""
    monkeypatch.setenv("PATH", path_without("bwrap", tmp_path / "bin"))
    storage = tmp_path / "acme"
    config_file = tmp_path / "trainyard.yaml"
    config_file.write_text(
        json.dumps(
            {
                "work_dir": str(tmp_path / "work"),
                "sandbox": {"enabled": False},
                "tenants": [{"name": "acme", "storage": {"kind": "local", "root": str(storage)}}],
            }
        )
    )
    config = load_config(config_file)
    store = LocalStore(storage)
    store.put_bytes(f"{LAYOUT.code}/train.py", PLAIN_JOB.encode())
    spec = LearnerSpec(
        job_id=JOB,
        tenant="acme",
        mode=RunMode.TRAIN,
        command="python train.py",
        attempt=1,
        num_learners=1,
        checkpoint_interval=5.0,
        checkpoint_keep=3,
        watchdog=0.0,
        watchdog_startup=0.0,
        storage=config.tenant("acme").storage,
        work_dir=config.work_dir,
        cpus=1.0,
        memory_bytes=2**30,
        gpus=0,
        sandbox_network=config.sandbox_network_of("acme"),
    )
    output: list[str] = []

    [learner] = LocalProcessBackend(config, "acme").run(spec, on_output=output.append)

    assert learner.exit_code == 0, "\n".join(output)
    assert f"trainyard: {UNSANDBOXED}" in output
    assert store.get_bytes(f"{LAYOUT.results}/model.txt") == b"trained"
    # It saw the machine's own root (a sandbox shows only the few paths it binds).
    seen = json.loads(store.get_bytes(f"{LAYOUT.results}/saw.json"))
    assert seen["root_entries"] == len(os.listdir("/"))


# GPUs: the sandbox binds exactly the learner's leased GPUs (fake device nodes in a temp dir).


@pytest.fixture
def gpu_machine(tmp_path: Path) -> tuple[Path, Path]:
    """A /dev with four GPUs' nodes, the shared ones and a disk; a driver library directory."""
    dev, lib = tmp_path / "dev", tmp_path / "lib"
    dev.mkdir()
    lib.mkdir()
    for node in ["nvidia0", "nvidia1", "nvidia2", "nvidia3", *SHARED_GPU_DEVICES, "sda"]:
        (dev / node).write_text(node)
    (lib / "libcuda.so.570.86").write_text("driver")
    (lib / "libcuda.so.1").symlink_to("libcuda.so.570.86")
    (lib / "libnvidia-ml.so.1").write_text("nvml")
    (lib / "libssl.so.3").write_text("not the driver's")
    return dev, lib


def binds(argv: list[str], option: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, arg in enumerate(argv) if arg == option]


def test_a_gpu_learners_sandbox_binds_exactly_its_gpus_and_the_shared_nodes(
    gpu_machine: tuple[Path, Path], tmp_path: Path
) -> None:
    dev, lib = gpu_machine
    sandbox = Sandbox(
        SandboxNetwork.NONE, [tmp_path], gpus=[1, 3], dev_root=dev, library_dirs=[lib]
    )

    argv = sandbox.argv(["true"], tmp_path, 3, 4)

    nodes = ["nvidia1", "nvidia3", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"]
    assert binds(argv, "--dev-bind") == [(str(dev / node), f"/dev/{node}") for node in nodes]
    libraries = {source for source, _ in binds(argv, "--ro-bind")}
    assert {str(lib / "libcuda.so.1"), str(lib / "libcuda.so.570.86")} <= libraries
    assert str(lib / "libnvidia-ml.so.1") in libraries
    assert str(lib / "libssl.so.3") not in libraries
    assert argv[argv.index("--dev") + 1] == "/dev"  # the rest of /dev stays bwrap's minimal one


def test_a_cpu_learners_sandbox_gets_no_gpu_even_on_a_gpu_machine(
    gpu_machine: tuple[Path, Path], tmp_path: Path
) -> None:
    dev, lib = gpu_machine
    sandbox = Sandbox(SandboxNetwork.NONE, [tmp_path], dev_root=dev, library_dirs=[lib])

    argv = sandbox.argv(["true"], tmp_path, 3, 4)

    assert binds(argv, "--dev-bind") == []
    assert not any("nvidia" in arg or "libcuda" in arg for arg in argv)


def test_inside_the_sandbox_only_the_leased_gpus_node_is_there(
    gpu_machine: tuple[Path, Path], tmp_path: Path
) -> None:
    dev, lib = gpu_machine
    work = tmp_path / "work"
    work.mkdir()
    sandbox = Sandbox(SandboxNetwork.NONE, [work], gpus=[2], dev_root=dev, library_dirs=[lib])
    launch = sandbox.launch(["sh", "-c", "ls /dev; cat /dev/nvidia2"], work)

    bwrap = subprocess.Popen(launch.argv, pass_fds=launch.pass_fds, stdout=subprocess.PIPE)
    launch.started(bwrap)
    output, _ = bwrap.communicate(timeout=60)

    listed = output.decode().split()
    assert launch.returncode(bwrap.returncode) == 0, listed
    assert {"nvidia2", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"} <= set(listed)
    assert not {"nvidia0", "nvidia1", "nvidia3", "sda"} & set(listed)
    assert listed[-1] == "nvidia2"  # the node's content: the fake GPU 2 itself
