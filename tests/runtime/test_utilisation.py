"""Sampling what a learner uses: its process tree from /proc, its GPUs through a stand-in NVML
(these machines have no GPU: the stand-in object returns fixed readings); the sync loop uploads
the rows beside the metric rows and the accounting sums them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from trainyard.jobs.accounting import Used, read_utilisation
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.runtime import sync, utilisation
from trainyard.runtime.utilisation import Sampler, process_tree
from trainyard.storage.local import LocalStore

JOB_ID = "acme.sample.20260101-000000-abcd"


class StandInNvml:
    """pynvml's API for two GPUs (minor numbers 0 and 3) with fixed readings."""

    class NVMLError(Exception):
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetMinorNumber(self, handle: int) -> int:
        return (0, 3)[handle]

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=(50, 80)[handle], memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(total=16 * 2**30, free=12 * 2**30, used=4 * 2**30)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_process_tree_counts_a_busy_child() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"]
    )
    try:
        deadline = time.monotonic() + 20
        own_cpu, _ = process_tree(child.pid)
        while own_cpu < 0.2 and time.monotonic() < deadline:
            own_cpu, _ = process_tree(child.pid)
        cpu, rss = process_tree(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert own_cpu >= 0.2, "the child's CPU time is read from /proc"
    assert cpu >= own_cpu, "the parent's tree includes its child"
    assert rss > 10 * 2**20
    assert process_tree(child.pid) == (0, 0), "a process gone counts nothing"


def test_a_sample_reads_the_leased_gpus_only(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([(10.0, 2**30), (14.0, 2 * 2**30)])
    monkeypatch.setattr(utilisation, "process_tree", lambda pid, proc=None: next(readings))
    clock = Clock()
    sampler = Sampler(1234, gpus=[3], nvml=StandInNvml(), clock=clock)
    assert not sampler.due()

    clock.now += utilisation.SAMPLE_PERIOD_S
    assert sampler.due()
    row = sampler.sample()

    assert row == {
        "time": clock.now,
        "interval_s": utilisation.SAMPLE_PERIOD_S,
        "cpu_s": 4.0,
        "rss_bytes": 2 * 2**30,
        "gpus": [{"minor": 3, "util": 80.0, "memory_bytes": 4 * 2**30}],
    }
    used = Used.of(sampler.rows)
    assert used.cpu_s == 4.0
    assert used.gpu_s == pytest.approx(0.8 * utilisation.SAMPLE_PERIOD_S)
    assert used.memory_gib_s == pytest.approx(2 * utilisation.SAMPLE_PERIOD_S)


def test_without_gpus_nvml_is_not_loaded() -> None:
    assert utilisation.load_nvml([]) is None


def test_the_sync_loop_uploads_the_rows_beside_the_metric_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "storage")
    layout = JobLayout(JOB_ID)
    clock = Clock()
    sampler = Sampler(os.getpid(), clock=clock)
    log_file = tmp_path / "learner.log"
    log_file.write_text("training\n")
    syncer = sync.Syncer(
        store,
        log_file,
        layout.learner_log(RunMode.TRAIN, 2, 1),
        annotations={"attempt": 2, "rank": 1},
        sampler=sampler,
        utilisation_key=layout.utilisation(2, 1),
    )
    syncer.sync()  # no sample due yet: nothing written
    assert read_utilisation(store, JOB_ID) == []

    for _ in range(2):
        clock.now += utilisation.SAMPLE_PERIOD_S
        syncer.sync()

    rows = read_utilisation(store, JOB_ID)
    assert [(row["attempt"], row["rank"], row["interval_s"]) for row in rows] == [
        (2, 1, utilisation.SAMPLE_PERIOD_S)
    ] * 2
    assert all(row["rss_bytes"] > 0 and row["gpus"] == [] for row in rows)
    assert json.loads(store.get_bytes(layout.utilisation(2, 1)).decode().splitlines()[0])["time"]
