"""Stop a training command that makes no visible progress: a hang is retried, not waited on.

A learner stuck in a collective, a dead data source or a deadlock would otherwise hold its
resources until someone notices. Progress is what training shows the platform anyway: a new
row in the metrics file or a new complete `step-<N>` checkpoint.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from trainyard.failures import Hang
from trainyard.runtime.helpers import checkpoint_steps
from trainyard.runtime.process import UserProcess

log = logging.getLogger(__name__)

#: How long a hung command gets between SIGTERM and SIGKILL to write a final checkpoint.
STOP_GRACE_S = 10.0


class Watchdog:
    """Checked from the sync loop: the window restarts at each sign of progress."""

    def __init__(
        self, process: UserProcess, metrics_file: Path, checkpoint_dir: Path, window: float
    ) -> None:
        """Create it right after the command starts: that is when the first window starts."""
        self.process = process
        self.metrics_file, self.checkpoint_dir = metrics_file, checkpoint_dir
        self.window = window
        self._seen = self._progress()
        self._since = time.monotonic()

    def _progress(self) -> tuple[int, frozenset[int]]:
        """The metrics file's size and the complete checkpoint steps: any change is progress."""
        try:
            size = self.metrics_file.stat().st_size
        except FileNotFoundError:
            size = 0
        return size, frozenset(checkpoint_steps(self.checkpoint_dir))

    def check(self) -> None:
        """Note progress, or stop the command (blocking for the grace) once the window passed."""
        if self.process.stopped_for is not None or self.process.proc.poll() is not None:
            return
        now, progress = time.monotonic(), self._progress()
        if progress != self._seen:
            self._seen, self._since = progress, now
            return
        if now - self._since < self.window:
            return
        hang = Hang(
            f"no new metric or checkpoint for {self.window:g} s",
            fix="none needed: a retry resumes from the newest committed checkpoint; if the job "
            "legitimately goes that long without a metric row or checkpoint, raise the "
            "manifest's watchdog",
        )
        log.error(
            "watchdog: %s (metrics file at %d bytes, checkpoint steps %s); stopping the command",
            hang.cause,
            progress[0],
            sorted(progress[1]) or "none",
        )
        self.process.stop(hang, grace=STOP_GRACE_S)
