"""Loaded as `sitecustomize` into the user's Python: tell the runtime which stop signals arrived.

Linux tells no process about a signal sent to another one: a SIGTERM sent straight to the
training process (a node shutdown, a drain with a shared process namespace, a spot-termination
handler) or to its process group never reaches the runtime, and a command that catches it,
checkpoints and exits 143 looks to its parent like one that exits 143 for no reason. Only the
process itself sees the signal, so this hook (the workspace puts it on the command's
PYTHONPATH) wraps every handler the command installs for SIGTERM, SIGINT or SIGHUP, Python's
own KeyboardInterrupt handler included: the wrapper appends the signal number to the file
named by TRAINYARD_SIGNAL_REPORT, then calls the command's handler. Signals whose default
action kills the process need no hook: the wait status shows them.

It must stand alone (the command's interpreter may not see the trainyard package), and it
hands over to any other `sitecustomize` on the path.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
REPORT_VARIABLE = "TRAINYARD_SIGNAL_REPORT"

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

_set_handler = signal.signal
_get_handler = signal.getsignal


def _report(signum: int) -> None:
    """Append `signum` to the report file; never fails the command's own handler."""
    path = os.environ.get(REPORT_VARIABLE)
    if not path:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{signum}\n".encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def _reporting(handler: Handler) -> Handler:
    if not callable(handler):
        return handler  # SIG_DFL, SIG_IGN: the wait status (or nothing) tells
    user_handler = handler

    def report_then_handle(signum: int, frame: FrameType | None) -> Any:
        _report(signum)
        return user_handler(signum, frame)

    report_then_handle.__wrapped__ = user_handler  # type: ignore[attr-defined]
    return report_then_handle


def _unwrapped(handler: Handler) -> Handler:
    return getattr(handler, "__wrapped__", handler)


def _signal(signalnum: int, handler: Handler) -> Handler:
    """signal.signal, wrapping stop-signal handlers; callers get back what they installed."""
    wrapped = _reporting(handler) if signalnum in STOP_SIGNALS else handler
    return _unwrapped(_set_handler(signalnum, wrapped))


def _getsignal(signalnum: int) -> Handler:
    return _unwrapped(_get_handler(signalnum))


def install() -> None:
    signal.signal = _signal
    signal.getsignal = _getsignal
    for signum in STOP_SIGNALS:
        current = _get_handler(signum)
        if callable(current):  # Python's KeyboardInterrupt handler for SIGINT
            _signal(signum, current)


def _hand_over() -> None:
    """Import the next `sitecustomize` on the path, as if this one had not been there."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    this = sys.modules.pop("sitecustomize")
    try:
        importlib.import_module("sitecustomize")  # not this file: it left the path
    except ModuleNotFoundError as missing:
        sys.modules["sitecustomize"] = this  # the import system expects a module under the name
        if missing.name != "sitecustomize":
            raise


if __name__ == "sitecustomize":
    install()
    _hand_over()
