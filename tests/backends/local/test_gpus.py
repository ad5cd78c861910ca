"""The local backend's GPUs with a stand-in NVML: inventory and health, leases, validate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends.local.conftest import XID_GPU
from tests.support.gpus import FAKE_NVML_ENV, StandInGpus, stand_in_gpu
from trainyard.backends.local.gpus import (
    GpuMachine,
    check_gpus,
    detect_gpus,
    gpu_count,
    lease_dir,
)
from trainyard.failures import PlatformFault, ResourceError
from trainyard.manifest.schema import Resources


def machine(tmp_path: Path) -> GpuMachine:
    found = detect_gpus(lease_dir(tmp_path / "work"))
    assert found is not None
    return found


def test_a_machine_without_nvml_has_no_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No driver (the stand-in without its state file, as pynvml without libnvidia-ml)."""
    StandInGpus(tmp_path).install(monkeypatch)
    monkeypatch.delenv(FAKE_NVML_ENV)

    assert detect_gpus(tmp_path / "leases") is None
    assert gpu_count(tmp_path / "work") == 0


def test_inventory_reports_each_gpu_and_keeps_an_xid_gpu_out(
    stand_in_gpus: StandInGpus, tmp_path: Path
) -> None:
    gpus = machine(tmp_path).inventory()

    assert [gpu.index for gpu in gpus] == [0, 1, 2, 3]
    assert gpus[0].uuid == stand_in_gpu(0)["uuid"]
    assert (gpus[0].name, gpus[0].memory_bytes, gpus[0].minor) == (
        "NVIDIA A100-SXM4-80GB",
        80 * 2**30,
        0,
    )
    assert [gpu.healthy for gpu in gpus] == [True, True, False, True]
    problem = gpus[XID_GPU].problem
    assert problem is not None
    assert problem.startswith("XID 79")
    assert "nvidia-smi -r" in problem  # the fix is named
    assert gpu_count(tmp_path / "work") == 4


def test_an_xid_gpu_stays_out_until_an_operator_clears_it(
    stand_in_gpus: StandInGpus, tmp_path: Path
) -> None:
    seen = machine(tmp_path)
    seen.inventory()
    # The next attempt's process never sees that XID event (NVML reports each one once).
    stand_in_gpus.write([stand_in_gpu(i) for i in range(4)])

    assert not machine(tmp_path).inventory()[XID_GPU].healthy

    seen.marker(stand_in_gpu(XID_GPU)["uuid"]).unlink()  # reset and cleared
    assert machine(tmp_path).inventory()[XID_GPU].healthy


def test_an_application_xid_or_a_failed_row_remapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """XID 13 is the program's own illegal access, not the GPU's fault; a failed row remapping
    is."""
    gpus = StandInGpus(tmp_path / "gpus")
    gpus.write([stand_in_gpu(0, xids=[13]), stand_in_gpu(1, remap_failed=True)])
    gpus.install(monkeypatch)

    found = machine(tmp_path).inventory()

    assert found[0].healthy
    assert found[1].problem == "its memory's row remapping failed"


def test_two_jobs_never_share_a_gpu_and_a_gang_gets_distinct_ones(
    stand_in_gpus: StandInGpus, tmp_path: Path
) -> None:
    first, second = machine(tmp_path), machine(tmp_path)  # two learner tasks

    one = first.lease(2)
    other = second.lease(1)

    held = [gpu.index for gpu in (*one.gpus, *other.gpus)]
    assert held == [0, 1, 3]  # never the XID'd GPU 2
    assert one.visible_devices == f"{stand_in_gpu(0)['uuid']},{stand_in_gpu(1)['uuid']}"
    with pytest.raises(PlatformFault) as none_free:
        second.lease(1)
    assert "only 0 of this machine's 4 are free and healthy" in none_free.value.cause
    assert "2 (XID 79" in none_free.value.cause
    assert "gpu_quota" in none_free.value.fix

    one.close()
    assert [gpu.index for gpu in second.lease(2).gpus] == [0, 1]


def test_a_killed_attempts_gpu_is_free_again(stand_in_gpus: StandInGpus, tmp_path: Path) -> None:
    """The learner holds its lease through an inherited descriptor; when it dies, so does the
    lease, though nobody released it."""
    gpus = machine(tmp_path)
    lease = gpus.lease(3)
    learner = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], pass_fds=lease.fds
    )
    lease.close()  # the learner task let go (or died); the learner still holds them
    with pytest.raises(PlatformFault):
        gpus.lease(1)

    learner.kill()
    learner.wait(timeout=30)

    assert [gpu.index for gpu in gpus.lease(3).gpus] == [0, 1, 3]


def test_a_lease_takes_only_the_asked_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = StandInGpus(tmp_path / "gpus")
    gpus.write([stand_in_gpu(0, name="Tesla T4"), stand_in_gpu(1, name="NVIDIA H100 80GB HBM3")])
    gpus.install(monkeypatch)

    assert [gpu.index for gpu in machine(tmp_path).lease(1, "h100").gpus] == [1]


@pytest.mark.parametrize(
    ("resources", "field", "fix"),
    [
        pytest.param({"gpus": 1, "gpu_type": "v100"}, "resources.gpu_type", "gpu_type", id="type"),
        pytest.param({"gpus": 5}, "resources.gpus", "at most 4 GPUs", id="more-than-the-machine"),
        pytest.param(
            {"gpus": 2, "learners": 3}, "resources.gpus", "at most 4 GPUs", id="gang-over-machine"
        ),
    ],
)
def test_validate_refuses_gpus_this_machine_lacks(
    stand_in_gpus: StandInGpus,
    tmp_path: Path,
    resources: dict[str, object],
    field: str,
    fix: str,
) -> None:
    with pytest.raises(ResourceError) as refused:
        check_gpus(Resources.model_validate(resources), machine(tmp_path))

    assert refused.value.cause.startswith(f"{field}: ")
    assert fix in refused.value.fix


def test_validate_refuses_a_gpu_job_where_no_gpu_exists() -> None:
    with pytest.raises(ResourceError) as refused:
        check_gpus(Resources(gpus=1), None)

    assert refused.value.cause.startswith("resources.gpus: ")
    assert "no NVIDIA GPU" in refused.value.cause
    assert "resources.gpus: 0" in refused.value.fix


def test_validate_passes_a_job_the_machine_can_hold(
    stand_in_gpus: StandInGpus, tmp_path: Path
) -> None:
    check_gpus(Resources(gpus=2, gpu_type="A100", learners=2), machine(tmp_path))
    check_gpus(Resources(gpus=0), None)
