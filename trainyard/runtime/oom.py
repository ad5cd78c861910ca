"""Did the kernel's OOM killer end the command? A SIGKILL alone does not say.

A command the kernel OOM-kills dies of SIGKILL like one killed by anyone else, and a retry of
it would be OOM-killed again: it must be a resource error, not a platform fault. The kernel
says so in two places, read where readable: the OOM-kill counter of the runtime's memory
cgroup (cgroup v2 `memory.events`, v1 `memory.oom_control`), which the command shares, and
its log ("Killed process <pid>", in /dev/kmsg).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
KERNEL_LOG = Path("/dev/kmsg")
_KILLED = re.compile(r"Killed process (\d+) ")


def _counter_files(proc_cgroup: str) -> list[Path]:
    """The OOM-kill counter files of the cgroups in /proc/self/cgroup's text, most exact first.

    Inside a container the cgroup's own directory may be mounted as the root: that comes last.
    """
    files: list[Path] = []
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":
            candidates = [CGROUP_ROOT / relative, CGROUP_ROOT]
            name = "memory.events"
        elif "memory" in controllers.split(","):
            candidates = [CGROUP_ROOT / "memory" / relative, CGROUP_ROOT / "memory"]
            name = "memory.oom_control"
        else:
            continue
        files.extend(directory / name for directory in dict.fromkeys(candidates))
    return files


def oom_kills() -> int | None:
    """The OOM kills counted in this process's memory cgroup so far; None where unreadable."""
    try:
        own = PROC_CGROUP.read_text(encoding="utf-8")
    except OSError:
        return None
    for counters in _counter_files(own):
        try:
            text = counters.read_text(encoding="utf-8")
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    return None


def kernel_logged_oom_kill(pid: int) -> bool:
    """Whether the kernel log (where this process may read it) says the OOM killer got `pid`."""
    try:
        fd = os.open(KERNEL_LOG, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    killed = False
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BrokenPipeError:  # records overwritten while reading: skip ahead
                continue
            except OSError:  # EAGAIN: nothing more to read
                break
            if not record:
                break
            text = record.decode("utf-8", errors="replace")
            killed = killed or any(int(m.group(1)) == pid for m in _KILLED.finditer(text))
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return killed


class OomWitness:
    """Start it with the command; `killed(pid)` afterwards tells whether the OOM killer got it."""

    def __init__(self) -> None:
        self.before = oom_kills()

    def killed(self, pid: int) -> str | None:
        """How the kernel said it OOM-killed the command, or None if it did not say so."""
        if kernel_logged_oom_kill(pid):
            return f"the kernel log says the OOM killer killed process {pid}"
        after = oom_kills()
        if self.before is not None and after is not None and after > self.before:
            return f"the memory cgroup's oom_kill count rose from {self.before} to {after}"
        return None
