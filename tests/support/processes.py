"""Checking that processes a test started are gone."""

from __future__ import annotations

import psutil


def _running(process: psutil.Process) -> bool:
    """A zombie has ended: only its exit status waits for its parent (or an init) to reap it."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def still_running(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Those of `pids` still running after up to `timeout` s.

    A SIGKILLed process takes a moment to exit (freeing its memory), so give it that moment.
    """
    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return [process.pid for process in alive if _running(process)]
