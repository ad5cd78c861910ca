"""What a learner actually uses: CPU and memory of its process tree, and its GPUs through NVML.

The sync loop (`sync.Syncer`) takes a sample every `SAMPLE_PERIOD_S` and uploads the rows beside
the metric rows (`JobLayout.utilisation`); the accounting (`jobs.accounting.used`) sums them into
used seconds. CPU and memory come from /proc (Linux, where every backend runs learners): the
framework environments hold no psutil, and the runtime may need nothing they lack. GPUs are read
through NVML (`pynvml`, nvidia-ml-py) only when the learner has GPUs and the module loads; a
learner without them samples CPU and memory only.

A row: `time` (Unix seconds), `interval_s` (since the previous sample), `cpu_s` (CPU seconds the
tree used in that interval), `rss_bytes` (the tree's resident memory now), `gpus` (per leased GPU:
`minor`, `util` percent, `memory_bytes` used).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

SAMPLE_PERIOD_S = 5.0
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(proc: Path, pid: int) -> tuple[int, float, int] | None:
    """(parent pid, CPU seconds, resident bytes) of `pid`, or None once it is gone."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        pages = int((proc / str(pid) / "statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS, pages * _PAGE


def process_tree(root: int, proc: Path = Path("/proc")) -> tuple[float, int]:
    """CPU seconds (user + system, of the processes alive now) and resident bytes of `root`
    and every process below it."""
    stats = {}
    for entry in proc.iterdir():
        if entry.name.isdigit() and (found := _stat(proc, int(entry.name))) is not None:
            stats[int(entry.name)] = found
    tree, frontier = set(), [root] if root in stats else []
    while frontier:
        pid = frontier.pop()
        tree.add(pid)
        frontier.extend(child for child, s in stats.items() if s[0] == pid and child not in tree)
    return sum(stats[p][1] for p in tree), sum(stats[p][2] for p in tree)


def load_nvml(gpus: Sequence[int]) -> ModuleType | None:
    """NVML, initialised, when the learner has `gpus` (minor numbers) and pynvml loads."""
    if not gpus:
        return None
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
    except Exception as error:  # no module, no driver: the learner runs, unsampled GPUs
        log.warning("GPU utilisation is not sampled: NVML did not load (%s)", error)
        return None
    return nvml


class Sampler:
    """Samples one learner's process tree (rooted at `pid`) and its GPUs (`gpus`, minor numbers,
    read through `nvml`, a module with pynvml's API)."""

    def __init__(
        self,
        pid: int,
        gpus: Sequence[int] = (),
        nvml: Any = None,
        clock: Callable[[], float] = time.time,
        proc: Path = Path("/proc"),
    ) -> None:
        self.pid, self.clock, self.proc = pid, clock, proc
        self.nvml = nvml
        self.handles = self._handles(set(gpus)) if nvml is not None else {}
        self.rows: list[dict[str, Any]] = []
        self._last = clock()
        self._cpu, _ = process_tree(pid, proc)

    def _handles(self, minors: set[int]) -> dict[int, Any]:
        """NVML's handle of each leased GPU, by minor number."""
        handles = {}
        with contextlib.suppress(self.nvml.NVMLError):
            for index in range(self.nvml.nvmlDeviceGetCount()):
                handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
                minor = int(self.nvml.nvmlDeviceGetMinorNumber(handle))
                if minor in minors:
                    handles[minor] = handle
        return handles

    def due(self) -> bool:
        return self.clock() - self._last >= SAMPLE_PERIOD_S

    def sample(self) -> dict[str, Any]:
        """Take a sample, keep it as a row and return it."""
        now = self.clock()
        cpu, rss = process_tree(self.pid, self.proc)
        row: dict[str, Any] = {
            "time": now,
            "interval_s": now - self._last,
            # Processes that exited meanwhile take their CPU time with them: never negative.
            "cpu_s": max(0.0, cpu - self._cpu),
            "rss_bytes": rss,
            "gpus": [self._gpu(minor, handle) for minor, handle in sorted(self.handles.items())],
        }
        self._last, self._cpu = now, cpu
        self.rows.append(row)
        return row

    def _gpu(self, minor: int, handle: Any) -> dict[str, Any]:
        try:
            util = float(self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            used = int(self.nvml.nvmlDeviceGetMemoryInfo(handle).used)
        except self.nvml.NVMLError as error:
            log.warning("GPU %d not sampled: %s", minor, error)
            return {"minor": minor, "util": None, "memory_bytes": None}
        return {"minor": minor, "util": util, "memory_bytes": used}
