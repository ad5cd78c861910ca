"""The signal_report hook in real Python processes: it reports stop signals and changes nothing."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trainyard.runtime import signal_report

CATCHES_SIGTERM = """\
import os, signal, sys, time

def stop(signum, frame):
    print("stopping", flush=True)
    sys.exit(143)

signal.signal(signal.SIGTERM, stop)
assert signal.getsignal(signal.SIGTERM) is stop, "the command must get its own handler back"
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(10)
"""


def run_with_hook(tmp_path: Path, script: str, *path: Path) -> subprocess.CompletedProcess[str]:
    hook = tmp_path / "hook"
    hook.mkdir()
    shutil.copyfile(signal_report.__file__, hook / "sitecustomize.py")
    return subprocess.run(
        [sys.executable, "-c", script],
        env={
            "PYTHONPATH": ":".join(str(p) for p in (hook, *path)),
            signal_report.REPORT_VARIABLE: str(tmp_path / "report"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        # As a terminal would start it: a shell's background job inherits SIGINT ignored, and
        # Python then installs no KeyboardInterrupt handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_a_caught_sigterm_is_reported_and_the_next_sitecustomize_still_runs(
    tmp_path: Path,
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("print('the image sitecustomize ran', flush=True)\n")

    done = run_with_hook(tmp_path, CATCHES_SIGTERM, other)

    assert done.returncode == 143, done.stderr
    assert done.stdout.splitlines() == ["the image sitecustomize ran", "stopping"]
    assert done.stderr == ""
    assert (tmp_path / "report").read_text() == f"{signal.SIGTERM.value}\n"


def test_python_s_own_keyboard_interrupt_handler_is_reported_too(tmp_path: Path) -> None:
    done = run_with_hook(
        tmp_path,
        "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(10)\n",
    )

    assert done.returncode == -signal.SIGINT  # Python still dies of the KeyboardInterrupt
    assert "KeyboardInterrupt" in done.stderr
    assert (tmp_path / "report").read_text() == f"{signal.SIGINT.value}\n"


@pytest.mark.parametrize(
    ("name", "handler"),
    [
        pytest.param("SIGTERM", "signal.SIG_IGN", id="an-ignored-sigterm"),
        pytest.param("SIGUSR1", "lambda *_: None", id="a-handler-for-another-signal"),
    ],
)
def test_signals_that_stop_nothing_are_not_reported(
    tmp_path: Path, name: str, handler: str
) -> None:
    done = run_with_hook(
        tmp_path,
        f"import os, signal\nsignal.signal(signal.{name}, {handler})\n"
        f"os.kill(os.getpid(), signal.{name})\n",
    )

    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "report").exists()
