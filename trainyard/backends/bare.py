"""A bare backend, for tests only (`learner_backend: bare`): the proof that a backend is one
module behind `backend_for`.

The learner is a plain child process of the Airflow task running the learner runtime with the
task's own Python: no framework environment, no sandbox, no memory limit, one learner. Never
configure it for real tenants: their code would run unconfined beside Airflow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from trainyard.backends.base import LearnerExit, LearnerSpec, ProcessBackend
from trainyard.failures import ResourceError
from trainyard.manifest.schema import JobManifest
from trainyard.tenancy.config import TrainyardConfig

#: How long `stop` waits for the learners' final checkpoint before it kills them.
STOP_GRACE_SECONDS = 30.0


class BareProcessBackend(ProcessBackend):
    """The runtime as one plain child process of the task."""

    name = "bare"

    def __init__(self, config: TrainyardConfig, tenant: str) -> None:
        super().__init__(config, tenant)
        self._processes: list[subprocess.Popen[str]] = []

    def check(self, manifest: JobManifest) -> None:
        """Any framework the task's own Python can import runs, on one learner."""
        if manifest.resources.learners > 1:
            raise ResourceError(
                f"resources.learners: the bare backend runs one learner, not "
                f"{manifest.resources.learners}",
                "set resources.learners: 1, or submit to a tenant on the local backend",
            )

    def run(self, spec: LearnerSpec, on_output: Callable[[str], None]) -> list[LearnerExit]:
        """Start the learner, relay its output, and wait for it."""
        env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")}
        process = subprocess.Popen(
            [sys.executable, "-m", "trainyard.runtime", spec.mode.value],
            env={**env, **spec.runtime_environment(rank=0)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._processes = [process]
        pump = threading.Thread(target=_relay, args=(process, on_output), daemon=True)
        pump.start()
        exit_code = process.wait()
        pump.join()
        return [LearnerExit(exit_code)]

    def stop(self) -> None:
        for process in self._processes:
            process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()


def _relay(process: subprocess.Popen[str], on_output: Callable[[str], None]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        on_output(line.rstrip("\n"))
