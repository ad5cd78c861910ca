"""Classify how a learner ended, so the DAG can decide between failing fast and retrying."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

from trainyard.failures import PlatformFault, Preemption, TrainyardFailure, UserError
from trainyard.runtime.process import Finished

# The runtime's own exit code when the command succeeded (or never ran) but the platform
# failed around it: EX_TEMPFAIL, "try again later".
EXIT_PLATFORM_FAULT = 75
MESSAGE_LINES = 20


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _error_tail(lines: list[str]) -> str:
    """The last traceback in the output, or else its last lines: what the user needs to see."""
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    return "\n".join((lines[starts[-1] :] if starts else lines)[-MESSAGE_LINES:])


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None
    signal: int | None
    failure: TrainyardFailure | None = None

    @classmethod
    def of(cls, finished: Finished) -> Outcome:
        code = finished.returncode if finished.returncode >= 0 else None
        sig = -finished.returncode if finished.returncode < 0 else None
        if finished.stopped_for is not None:
            # However the command took being stopped, the runtime's reason is what happened.
            return cls(exit_code=code, signal=sig, failure=finished.stopped_for)
        stop = finished.stop_signal
        failure: TrainyardFailure | None = None
        if stop is not None and (sig == stop or code == 128 + stop):
            failure = Preemption(
                f"the command stopped after the runtime forwarded {_signal_name(stop)} "
                "(cancel, preemption or eviction)",
                fix="none needed: a retry resumes from the newest committed checkpoint",
            )
        elif sig is not None:
            failure = PlatformFault(
                f"the command was killed by {_signal_name(sig)}, which the runtime did not send",
                fix="SIGKILL usually means the learner ran out of memory: raise "
                "resources.memory; a retry resumes from the newest committed checkpoint",
            )
        elif code:
            failure = UserError(
                f"the command exited with code {code}:\n{_error_tail(finished.tail)}",
                fix="fix the error in this message (the full output is in the learner log)",
            )
        return cls(exit_code=code, signal=sig, failure=failure)

    def with_failure(self, failure: TrainyardFailure) -> Outcome:
        return Outcome(exit_code=self.exit_code, signal=self.signal, failure=failure)

    @property
    def succeeded(self) -> bool:
        return self.failure is None

    @property
    def runtime_exit_code(self) -> int:
        """0 on success, else the command's exit code or 128 + its signal, like a shell.

        Without either (the platform failed around the command, or it could not start):
        EX_TEMPFAIL for platform faults, 1 otherwise.
        """
        if self.failure is None:
            return 0
        if self.signal is not None:
            return 128 + self.signal
        if self.exit_code:
            return self.exit_code
        return EXIT_PLATFORM_FAULT if isinstance(self.failure, PlatformFault) else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "signal": self.signal,
            "status": "succeeded" if self.failure is None else "failed",
            "failure_class": None if self.failure is None else self.failure.failure_class.value,
            "message": "the command succeeded" if self.failure is None else self.failure.cause,
            "fix": None if self.failure is None else self.failure.fix,
        }
