"""Classify how a learner ended, so the DAG can decide between failing fast and retrying."""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainyard.failures import (
    RESUME_FIX,
    RESUMES,
    PlatformFault,
    Preemption,
    TrainyardFailure,
    UserError,
    failure_of,
    out_of_memory,
)
from trainyard.runtime.process import Finished
from trainyard.runtime.signal_report import STOP_SIGNALS

# The runtime's own exit code when the command succeeded (or never ran) but the platform
# failed around it: EX_TEMPFAIL, "try again later".
EXIT_PLATFORM_FAULT = 75
#: The longest piece of the command's output a message quotes; longer ones are cut with "...".
QUOTE_CHARS = 300

_FRAME = re.compile(r'\s*File "(?P<path>[^"]+)", line (?P<line>\d+)')
_WARNING = re.compile(r"(.*:\d+: )?\w*Warning: ")
#: How a Python command says it ran out of memory (MemoryError, torch's allocators).
_OUT_OF_MEMORY = re.compile(r"MemoryError|OutOfMemoryError|can't allocate memory|out of memory")
_LIBRARY_PATHS = ("site-packages", "dist-packages", "/lib/python")
#: How a full disk shows in a command's output (strerror(ENOSPC), Python's OSError).
_NO_SPACE = re.compile(r"No space left on device|\[Errno 28\]|ENOSPC")


def out_of_disk(cause: str) -> PlatformFault:
    """The learner's scratch disk is full, whoever hit it (the user's code or the runtime's
    downloads): the platform's disk, retried (other jobs' workspaces are deleted as their
    attempts end), with the fix named for when it keeps failing."""
    return PlatformFault(
        f"the learner's disk is full: {cause}",
        fix="if it keeps failing: free space on the learners' scratch disk (the local "
        "backend's work_dir, a pod's ephemeral storage) or give it more; a job whose data, "
        f"checkpoints and results need more than the disk holds must use less; {RESUMES}",
    )


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _cut(text: str) -> str:
    text = text.strip()
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 3].rstrip() + "..."


def user_exception(lines: list[str]) -> str | None:
    """The last Python traceback's exception and the innermost frame in the user's own code.

    E.g. "ValueError: learning rate must be positive (train.py:41)"; None without a traceback.
    A frame in the standard library or an installed package is not the user's; if every frame
    is, the innermost one is named.
    """
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    if not starts:
        return None
    frames: list[tuple[str, str]] = []
    exception = None
    for line in lines[starts[-1] + 1 :]:
        frame = _FRAME.match(line)
        if frame:
            frames.append((frame["path"], frame["line"]))
        elif line.strip() and not line[0].isspace():
            exception = line
            break
    if exception is None:
        return None
    own = [f for f in frames if not any(part in f[0] for part in _LIBRARY_PATHS)]
    where = (own or frames)[-1:]
    located = "".join(f" ({path.rsplit('/', 1)[-1]}:{line})" for path, line in where)
    return _cut(exception) + located


def _last_words(lines: list[str]) -> str | None:
    """The last line of output that is not a warning (or a warning's quoted source line)."""
    for line in reversed(lines):
        if line.strip() and not line[0].isspace() and not _WARNING.match(line):
            return _cut(line)
    return None


def _preemption(finished: Finished, sig: int | None, code: int | None) -> Preemption | None:
    """A stop signal ended the command, whoever sent it: to the runtime, to it, to its group."""
    if sig is not None:
        if sig not in STOP_SIGNALS:
            return None
        seen, how = sig, f"was stopped by {_signal_name(sig)}"
    else:
        seen = -1 if code is None else code - 128
        if seen not in STOP_SIGNALS or not (
            seen == finished.stop_signal or seen in finished.received
        ):
            return None
        how = f"exited with code {code} after {_signal_name(seen)}"
    if seen == finished.stop_signal:
        whence = "the runtime forwarded it (cancel, preemption or eviction)"
    else:
        whence = "sent to the command or its process group (preemption, drain or shutdown)"
    return Preemption(f"the command {how}: {whence}", fix=RESUME_FIX)


def _user_error(finished: Finished, code: int, learner_log: str) -> TrainyardFailure:
    see_log = f"see the learner log at {learner_log}"
    exception = user_exception(finished.tail)
    if exception is not None and _OUT_OF_MEMORY.search(exception):
        return out_of_memory(f"the command ran out of memory: {exception}")
    last = exception or _last_words(finished.tail)
    if last is not None and _NO_SPACE.search(last):
        return out_of_disk(f"the command failed with {last}")
    if exception is not None:
        return UserError(
            f"the command failed with {exception}",
            fix=f"fix the code at the place named (the whole traceback: {see_log})",
        )
    cause = f"the command exited with code {code}"
    stop = code - 128
    if stop in STOP_SIGNALS:
        name = _signal_name(stop)
        cause += (
            f", the code for a stop by {name}, but no {name} reached it or the runtime: "
            "it is not a preemption"
        )
        fix = f"exit with {code} only after {name}; {see_log}"
    else:
        fix = see_log
    last = _last_words(finished.tail)
    return UserError(f"{cause}; its last output: {last}" if last else cause, fix=fix)


def _failure(
    finished: Finished, sig: int | None, code: int | None, learner_log: str
) -> TrainyardFailure | None:
    preemption = _preemption(finished, sig, code)
    if preemption is not None:
        return preemption
    if finished.oom_killed is not None:
        return out_of_memory(f"the kernel's OOM killer killed the command ({finished.oom_killed})")
    if sig is not None:
        if sig == signal.SIGKILL:
            fix = "SIGKILL usually means the learner ran out of memory: raise resources.memory"
        else:  # SIGABRT, SIGSEGV, SIGBUS, ...: a crash in native code, the framework's or ours
            name = _signal_name(sig)
            fix = f"{name} is a crash in native code: its last output is in {learner_log}"
        return PlatformFault(
            f"the command was killed by {_signal_name(sig)}, which the runtime did not send",
            fix=f"{fix}; {RESUMES}",
        )
    if code:
        return _user_error(finished, code, learner_log)
    return _stopped_early(finished)


def _stopped_early(finished: Finished) -> Preemption | None:
    """Exit 0 after a stop reached the command is a stop, not success.

    A command that checkpoints on SIGTERM and then exits 0 has not finished training: its
    results are half a model, so they must not be published as the job's.
    """
    stops = ({finished.stop_signal} if finished.stop_signal is not None else set()) | set(
        finished.received & STOP_SIGNALS
    )
    if not stops:
        return None
    name = ", ".join(_signal_name(s) for s in sorted(stops))
    if finished.stop_signal is not None:
        whence = "the runtime forwarded it (cancel, preemption or eviction)"
    else:
        whence = "sent to the command or its process group (preemption, drain or shutdown)"
    return Preemption(
        f"the command exited with code 0 after {name}: {whence}; a stopped command has not "
        "finished training, so its results are not published",
        fix=RESUME_FIX,
    )


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None
    signal: int | None
    failure: TrainyardFailure | None = None

    @classmethod
    def of(cls, finished: Finished, learner_log: str = "the learner log") -> Outcome:
        """Classify how the command ended; `learner_log` is where its full output is kept."""
        code = finished.returncode if finished.returncode >= 0 else None
        sig = -finished.returncode if finished.returncode < 0 else None
        if finished.stopped_for is not None:
            # However the command took being stopped, the runtime's reason is what happened.
            return cls(exit_code=code, signal=sig, failure=finished.stopped_for)
        failure = _failure(finished, sig, code, learner_log)
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

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Outcome:
        """The outcome as `to_json` stored it (the learner task reads what the runtime wrote).

        A failure needs its class and message; the rest may be missing (an older image's).
        """
        failure_class = document.get("failure_class")
        failure = (
            failure_of(failure_class, document["message"], document.get("fix") or "")
            if failure_class
            else None
        )
        return cls(document.get("exit_code"), document.get("signal"), failure)

    def to_json(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "signal": self.signal,
            "status": "succeeded" if self.failure is None else "failed",
            "failure_class": None if self.failure is None else self.failure.failure_class.value,
            "message": "the command succeeded" if self.failure is None else self.failure.cause,
            "fix": None if self.failure is None else self.failure.fix,
        }
