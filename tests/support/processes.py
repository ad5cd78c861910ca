"""Checking that processes a test started are gone."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable

import psutil

#: Marks every process this test session starts (they inherit it): `kill_orphans`.
SESSION_MARK = "TRAINYARD_TEST_SESSION"


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


def kill_orphans(spare: Iterable[psutil.Process] = ()) -> None:
    """Kill what this session's processes left running once their parents had ended (a
    learner outliving its task, a component outliving its supervisor), and warn naming it: it
    would take CPU from every later test on a 2-core machine. `spare`: detached processes
    still in use (a shared deployment's PostgreSQL server), with their children."""
    ours = {os.getpid()}
    for root in (psutil.Process(), *spare):
        ours |= {root.pid, *(child.pid for child in root.children(recursive=True))}
    for process in psutil.process_iter(["pid", "cmdline"]):
        if process.pid in ours:
            continue
        try:
            if process.environ().get(SESSION_MARK) != os.environ[SESSION_MARK]:
                continue
            process.kill()
        except psutil.Error:
            continue
        command = " ".join(process.info["cmdline"] or [])[:200]
        warnings.warn(f"killed pid {process.pid}, left running: {command}", stacklevel=2)
