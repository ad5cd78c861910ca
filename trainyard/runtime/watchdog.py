"""Stop a training command that makes no visible progress: a hang is retried, not waited on.

A learner stuck in a collective, a dead data source or a deadlock would otherwise hold its
resources until someone notices. Progress is what training shows the platform anyway: a new
row in the metrics file or a new complete `step-<N>` checkpoint.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from trainyard.failures import RESUME_FIX, Hang
from trainyard.runtime.helpers import checkpoint_steps
from trainyard.runtime.process import UserProcess

log = logging.getLogger(__name__)

#: How long a hung command gets between SIGTERM and SIGKILL to write a final checkpoint.
STOP_GRACE_S = 10.0


class Watchdog:
    """Checked from the sync loop, with two limits, as Kubernetes has startup and liveness probes.

    Until the command shows its first progress it may take `startup` seconds (imports, data
    loading and the first epoch can take minutes on a busy machine); from then on each sign
    of progress restarts a window of `window` seconds. A limit of 0 is no limit.
    """

    def __init__(
        self,
        process: UserProcess,
        metrics_file: Path,
        checkpoint_dir: Path,
        *,
        window: float,
        startup: float,
    ) -> None:
        """Create it right after the command starts: that is when the start-up allowance starts.

        A checkpoint restored before the start is not progress of this command.
        """
        self.process = process
        self.metrics_file, self.checkpoint_dir = metrics_file, checkpoint_dir
        self.window, self.startup = window, startup
        self._seen = self._progress()
        self._since = time.monotonic()
        self._started = False

    def _progress(self) -> tuple[int, frozenset[int]]:
        """The metrics file's size and the complete checkpoint steps: any change is progress."""
        try:
            size = self.metrics_file.stat().st_size
        except FileNotFoundError:
            size = 0
        return size, frozenset(checkpoint_steps(self.checkpoint_dir))

    def _hang(self) -> Hang:
        if self._started:
            return Hang(
                f"no new metric or checkpoint for {self.window:g} s",
                fix=f"{RESUME_FIX}; if the job legitimately goes that long without a metric "
                "row or checkpoint, raise the manifest's watchdog",
            )
        return Hang(
            f"hung at start-up: no first metric row or checkpoint within {self.startup:g} s of "
            "the start",
            fix="if imports, data loading or the first epoch legitimately take longer, raise "
            "the manifest's watchdog_startup; otherwise look for what blocks before the first "
            "step in the learner log (a retry starts again from the newest committed checkpoint)",
        )

    def check(self) -> None:
        """Note progress, or stop the command (blocking for the grace) once a limit passed."""
        if self.process.stopped_for is not None or self.process.proc.poll() is not None:
            return
        now, progress = time.monotonic(), self._progress()
        if progress != self._seen:
            self._seen, self._since, self._started = progress, now, True
            return
        limit = self.window if self._started else self.startup
        if not limit or now - self._since < limit:
            return
        hang = self._hang()
        log.error(
            "watchdog: %s (metrics file at %d bytes, checkpoint steps %s); stopping the command",
            hang.cause,
            progress[0],
            sorted(progress[1]) or "none",
        )
        self.process.stop(hang, grace=STOP_GRACE_S)
