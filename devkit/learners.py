"""Finding and waiting for a job's learner processes and states, for fault injection."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import psutil

from trainyard.cli.client import AirflowClient
from trainyard.cli.status import JobStatus, job_status
from trainyard.jobs.layout import RunMode
from trainyard.jobs.state import TERMINAL_STATES
from trainyard.runtime.sandbox import BWRAP, INIT_IN_SANDBOX
from trainyard.storage import ObjectStore

T = TypeVar("T")


#: The learner runtime's module: `python -m trainyard.runtime <mode>`.
RUNTIME = "trainyard.runtime"


def _runtime_mode(cmdline: list[str]) -> str | None:
    """The mode a learner runtime runs in ('train', 'evaluate'); None for another process."""
    if RUNTIME not in cmdline:
        return None
    rest = cmdline[cmdline.index(RUNTIME) + 1 :]
    return rest[0] if rest else None


def _mode_of(process: psutil.Process) -> str | None:
    """The mode of the runtime that is `process` or its nearest ancestor."""
    for candidate in (process, *process.parents()):
        mode = _runtime_mode(candidate.cmdline())
        if mode is not None:
            return mode
    return None


def learner_processes(
    job_id: str, *, user_code: bool, rank: int | None = None, mode: RunMode | None = None
) -> list[psutil.Process]:
    """Live processes of `job_id`: the user's command (`user_code`) or the learner runtime,
    of every rank or of `rank` only, of any mode or of `mode` only (training, evaluation).

    Both carry TRAINYARD_JOB_ID in their environment; the runtime runs `-m trainyard.runtime`.
    The sandbox around the command (bwrap and its init) carries it too, and is neither.
    """
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            environ = process.environ()
            if environ.get("TRAINYARD_JOB_ID") != job_id:
                continue
            if rank is not None and environ.get("TRAINYARD_LEARNER_RANK") != str(rank):
                continue
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline = process.info["cmdline"] or []
            if cmdline[:1] == [BWRAP] or INIT_IN_SANDBOX in cmdline:
                continue
            is_runtime = _runtime_mode(cmdline) is not None
            if is_runtime == user_code:
                continue
            if mode is not None and _mode_of(process) != mode.value:
                continue
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        found.append(process)
    return found


def live_attempts() -> dict[str, set[int]]:
    """The training attempts with a live learner runtime, per job id, in one pass over the
    processes: two attempts of one job at once is a split brain. (An evaluation's attempts
    are counted apart, from 1: they are not training's.)"""
    alive: dict[str, set[int]] = {}
    for process in psutil.process_iter(["cmdline"]):
        try:
            if _runtime_mode(process.info["cmdline"] or []) != RunMode.TRAIN.value:
                continue
            environ = process.environ()
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        job_id, attempt = environ.get("TRAINYARD_JOB_ID"), environ.get("TRAINYARD_ATTEMPT")
        if job_id and attempt and attempt.isdigit():
            alive.setdefault(job_id, set()).add(int(attempt))
    return alive


def wait_until(check: Callable[[], T | None], what: str, timeout: float = 180) -> T:
    """Poll `check` until it returns something truthy; fail the test naming `what` if not."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def wait_for_end(
    client: AirflowClient, store: ObjectStore, job_id: str, timeout: float = 420
) -> JobStatus:
    """The status of `job_id` once it has ended."""

    def ended() -> JobStatus | None:
        current = job_status(client, store, job_id)
        return current if current.state in TERMINAL_STATES else None

    return wait_until(ended, f"{job_id} to end", timeout=timeout)
