"""PID 1 of a learner's sandbox: start the user's command, forward stop signals, report its end.

bubblewrap runs it as `python -I -S init.py STATUS_FD COMMAND...`, so it uses the standard library
only (the sandbox holds no Trainyard code it could rely on). It is needed because bwrap alone
loses two things: its own PID 1 ignores SIGTERM (a namespace's init only gets the signals it
handles), and it reports a command killed by signal N as exit code 128 + N. This init passes
SIGTERM, SIGINT and SIGHUP on to the command (and continues a stopped one), reaps orphans,
and writes to STATUS_FD (which the command does not inherit) one line `started`, or
`error MESSAGE` when the command cannot start, then `returncode N` with N negative for a
signal, as subprocess reports it. When it exits, the kernel kills whatever is left in the
sandbox.
"""

from __future__ import annotations

import os
import signal
import sys

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # as signal_report.py
EXIT_CANNOT_START = 127


def main(argv: list[str]) -> int:
    status_fd, command = int(argv[0]), argv[1:]
    os.set_inheritable(status_fd, False)
    status = os.fdopen(status_fd, "w", buffering=1)
    # Blocked until the handlers know the command's pid; the command starts with them unblocked.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        child = os.posix_spawnp(
            command[0], command, os.environ, setsigmask=(), setsigdef=STOP_SIGNALS
        )
    except OSError as error:
        status.write(f"error {error.strerror}\n")
        return EXIT_CANNOT_START

    def forward(signum: int, _frame: object) -> None:
        os.kill(child, signum)
        # A stopped (SIGSTOP) process would hold the signal pending until it is killed: every
        # process of the sandbox but this one goes on, so the command can checkpoint now.
        os.kill(-1, signal.SIGCONT)

    for signum in STOP_SIGNALS:
        signal.signal(signum, forward)
    status.write("started\n")
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    while True:
        pid, wait_status = os.wait()  # orphans of the command are reparented here
        if pid == child:
            break
    returncode = os.waitstatus_to_exitcode(wait_status)
    status.write(f"returncode {returncode}\n")
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
