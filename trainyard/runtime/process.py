"""Run the user command: stream its output, forward stop signals, report how it ended."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from trainyard.failures import RESUMES, Preemption, TrainyardFailure, UserError
from trainyard.runtime.oom import OomWitness
from trainyard.runtime.sandbox import Sandbox
from trainyard.runtime.signal_report import STOP_SIGNALS

_PR_SET_PDEATHSIG = 1
TAIL_LINES = 200
#: How long a command has after a stop signal when the deployment says nothing
#: (`stop_grace_seconds` in the Trainyard config; the backends pass it on).
DEFAULT_STOP_GRACE_S = 30.0


@dataclass(frozen=True)
class Finished:
    """How the user command ended."""

    returncode: int  # negative: killed by that signal (subprocess convention)
    stop_signal: int | None  # the last signal the runtime forwarded, if any
    tail: list[str]  # its last output lines, for failure messages
    stopped_for: TrainyardFailure | None = None  # why the runtime itself stopped it (a hang)
    # Stop signals the command (or a child of it) caught, by its own report (signal_report).
    received: frozenset[int] = frozenset()
    oom_killed: str | None = None  # how the kernel said its OOM killer ended the command


def _received(report: Path | None) -> frozenset[int]:
    if report is None:
        return frozenset()
    try:
        return frozenset(int(line) for line in report.read_text(encoding="ascii").split())
    except (OSError, ValueError):
        return frozenset()


def die_with_parent(signum: int) -> None:
    """Ask the kernel to send this process `signum` when its parent dies (Linux only).

    Without it a child outlives a parent killed with SIGKILL, which can forward no stop.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)


def _die_with_runtime() -> None:
    """Runs in the command's process before exec: the kernel kills it with the runtime.

    The command runs in its own session (so a Ctrl-C or a group kill is forwarded exactly
    once), which would otherwise let it outlive a SIGKILLed runtime.
    """
    die_with_parent(signal.SIGKILL)


def _echo(line: str) -> bool:
    """Write `line` to stdout; False once nobody reads it any more (the reader is gone).

    Then stdout becomes /dev/null, so that the runtime's own later output (and Python's flush
    at exit) cannot fail on the broken pipe either.
    """
    try:
        sys.stdout.write(line)
        sys.stdout.flush()
    except (BrokenPipeError, ConnectionResetError):
        broken = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (2, broken):  # stderr first, where it is the same pipe
            with contextlib.suppress(OSError):
                if fd == broken or os.path.sameopenfile(fd, broken):
                    os.dup2(devnull, fd)
        os.close(devnull)
        return False
    return True


class UserProcess:
    """The user's command as a child process; start it before any other thread exists."""

    def __init__(
        self,
        command: str,
        cwd: Path,
        env: dict[str, str],
        log_file: Path,
        signal_report: Path | None = None,
        sandbox: Sandbox | None = None,
        stop_grace: float = DEFAULT_STOP_GRACE_S,
    ) -> None:
        """`signal_report`: the file the command's signal_report hook writes (env carries it);
        `stop_grace`: how long the command has, after a forwarded stop, before it is killed."""
        self.log_file = log_file
        self.signal_report = signal_report
        self.stop_grace = stop_grace
        self.stop_signal: int | None = None
        self.stopped_for: TrainyardFailure | None = None
        self._deadline: threading.Timer | None = None
        self.oom = OomWitness()
        try:
            argv = shlex.split(command)
            self.sandboxed = sandbox.launch(argv, cwd) if sandbox else None
            self.proc = subprocess.Popen(
                self.sandboxed.argv if self.sandboxed else argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_runtime,  # safe: no other thread runs yet
                pass_fds=self.sandboxed.pass_fds if self.sandboxed else (),
            )
        except (OSError, ValueError) as error:
            raise UserError(
                f"cannot start command {command!r}: {error}",
                fix="check the manifest's command and that its program exists in the image",
            ) from error
        # In a sandbox, its init passes signals on (bwrap itself would just die of them).
        self._signalled = self.sandboxed.started(self.proc) if self.sandboxed else self.proc.pid
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._forward)

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        """Pass a stop request on so the user code can write a final checkpoint.

        No output here: the handler may interrupt the main thread inside a write to stdout,
        and a second buffered write would raise. The outcome reports the forwarded signal.
        Only the first stop is forwarded (the task process's death sends another, which could
        interrupt the save); the command gets `stop_grace` seconds from it, then SIGKILL: the
        grace the deployment promises, whoever outlives whom.
        """
        if self.stop_signal is not None:
            return
        self.stop_signal = signum
        self._send(signum)
        self._deadline = threading.Timer(self.stop_grace, self._grace_over, args=(signum,))
        self._deadline.daemon = True
        self._deadline.start()

    def _grace_over(self, signum: int) -> None:
        if self.proc.poll() is not None:
            return
        self.stopped_for = Preemption(
            f"the command did not exit within the stop grace of {self.stop_grace:g} s after "
            f"{signal.Signals(signum).name}: it was killed",
            fix=f"write the final checkpoint within stop_grace_seconds = {self.stop_grace:g} s "
            f"(the deployment's setting; an admin may raise it); {RESUMES}",
        )
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self, failure: TrainyardFailure, grace: float) -> None:
        """End the command for `failure`: SIGTERM so it can still checkpoint, then SIGKILL.

        The SIGKILL goes to its whole process group (its own session), so that children such
        as data loader workers cannot keep the output pipe, and so the runtime, waiting.
        """
        self.stopped_for = failure
        self._send(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def _send(self, signum: int) -> None:
        """Send `signum` to the command, then SIGCONT to its process group: a command that is
        stopped (SIGSTOP, a debugger, a hang injected as one) would otherwise hold the stop
        signal pending and checkpoint only once the grace is over and it is killed, while the
        job's next attempt starts beside this one."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._signalled, signum)
            # The command's process group (in a sandbox, its init continues the rest).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGCONT)

    def wait(self) -> Finished:
        """Copy every output line to the learner log, then to stdout, until the command exits.

        The log comes first and stdout is best effort: stdout is a pipe that only the task
        process reads, and a task process killed mid-stop must not cost the final checkpoint.
        """
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        assert self.proc.stdout is not None
        echo = True
        with self.log_file.open("ab") as log:
            for raw in self.proc.stdout:
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", errors="replace")
                tail.append(line.rstrip("\n"))
                if echo:
                    echo = _echo(line)
        if self._deadline is not None:
            self._deadline.cancel()
        returncode = self.proc.wait()
        if self.sandboxed:
            returncode = self.sandboxed.returncode(returncode)
        killed = returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)  # 128+: bwrap's own exit
        return Finished(
            returncode=returncode,
            stop_signal=self.stop_signal,
            tail=list(tail),
            stopped_for=self.stopped_for,
            received=_received(self.signal_report),
            oom_killed=self.oom.killed(self.proc.pid) if killed else None,
        )
