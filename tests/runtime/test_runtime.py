"""`python -m trainyard.runtime` as a real process on a LocalStore, with a tiny fake user job."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from devkit.learners import learner_processes, wait_until
from tests.support.processes import still_running
from trainyard.failures import Hang, PlatformFault
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.runtime import helpers
from trainyard.runtime.outcome import EXIT_PLATFORM_FAULT, Outcome
from trainyard.runtime.process import Finished, UserProcess
from trainyard.runtime.runner import Runner
from trainyard.runtime.sandbox import Sandbox, SandboxNetwork
from trainyard.runtime.settings import RuntimeSettings
from trainyard.storage.local import LocalStore

JOB = "acme.fake.20250101-000000-abcd"
LAYOUT = JobLayout(JOB)
REPO = Path(__file__).resolve().parents[2]

# Follows the environment contract only; its first argument picks a behaviour.
FAKE_JOB = r"""
import json, os, pathlib, signal, subprocess, sys, time

checkpoints = pathlib.Path(os.environ["TRAINYARD_CHECKPOINT_DIR"])
results = pathlib.Path(os.environ["TRAINYARD_RESULT_DIR"])
data = pathlib.Path(os.environ["TRAINYARD_DATA_DIR"])
steps = sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("step-*"))
start = steps[-1] if steps else 0
print(f"fake job starts after step {start}; data: {(data / 'rows.txt').read_text()}", flush=True)


def save(step):
    tmp = checkpoints / f"tmp-{step}"
    tmp.mkdir()
    (tmp / "weights.txt").write_text(f"weights at step {step}")
    tmp.rename(checkpoints / f"step-{step}")


def metric(**row):
    with open(os.environ["TRAINYARD_METRICS_FILE"], "a") as f:
        f.write(json.dumps(row) + "\n")


mode = sys.argv[1]
if mode == "train":
    for step in (start + 1, start + 2):
        save(step)
        metric(step=step, loss=1 / step)
    (results / "model.txt").write_text(f"model after step {start + 2}")
elif mode == "fail":
    raise ValueError("learning rate must be positive, got -1")
elif mode == "wait":  # catches stop signals, checkpoints, exits 128 + the signal
    stop = []
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda signum, _: stop.append(signum))
    print(f"ready {os.getpid()}", flush=True)
    while not stop:
        time.sleep(0.02)
    save(start + 7)
    print("final checkpoint written", flush=True)
    sys.exit(128 + stop[0])
elif mode == "slow-save":  # on a stop, saves for argv[2] seconds, talking all along
    stop = []
    signal.signal(signal.SIGTERM, lambda signum, _: stop.append(signum))
    print(f"ready {os.getpid()}", flush=True)
    while not stop:
        time.sleep(0.02)
    deadline = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        print("saving the final checkpoint...", flush=True)
        time.sleep(0.5)
    save(start + 7)
    print("final checkpoint written", flush=True)
    sys.exit(128 + stop[0])
elif mode == "sleep":  # leaves every signal to its default action
    print(f"ready {os.getpid()}", flush=True)
    time.sleep(600)
elif mode == "exit-143":  # the code of a SIGTERM stop, with no SIGTERM anywhere
    print("pretending to be stopped", flush=True)
    sys.exit(143)
elif mode == "warn-then-fail":
    import warnings
    warnings.warn("TypedStorage is deprecated", UserWarning)
    print("epoch 1 of 3", flush=True)
    warnings.warn("lr_scheduler.step() before optimizer.step()", UserWarning)
    raise ValueError("batch_size must divide the dataset, got 7")  # the user's line
elif mode == "oom":  # more than the address-space limit the test sets
    ballast = b"x" * (1024 * 2**20)
elif mode == "hang":  # a worker too, like a data loader's, in the command's process group
    save(start + 1)
    metric(step=start + 1, loss=1.0)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"pids {os.getpid()} {worker.pid}", flush=True)
    time.sleep(600)
elif mode == "slow-start":  # imports and data loading take longer than the hang window
    time.sleep(float(sys.argv[2]))
    for step in range(start + 1, start + 6):
        metric(step=step, loss=1 / step)
        time.sleep(0.2)
    (results / "model.txt").write_text(f"model after step {start + 5}")
elif mode == "stuck":  # never shows progress
    print("waiting for a dead data loader", flush=True)
    time.sleep(600)
elif mode == "steady":
    for step in range(start + 1, start + 9):
        metric(step=step, loss=1 / step)
        time.sleep(0.5)
    (results / "model.txt").write_text(f"model after step {start + 8}")
elif mode == "evaluate":  # its optional second argument: seconds to think first
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
    assert (results / "model.txt").read_text().startswith("model after"), "no model"
    metric(accuracy=0.5)
    metric(accuracy=0.92, loss=0.1)
"""


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "storage")
    store.put_bytes(f"{LAYOUT.code}/fake_job.py", FAKE_JOB.encode())
    store.put_bytes(f"{LAYOUT.data}/rows.txt", b"42 rows")
    return store


def runtime_env(
    store: LocalStore, tmp_path: Path, command: str, attempt: int, **extra: str
) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TRAINYARD_JOB_ID": JOB,
        "TRAINYARD_TENANT": "acme",
        "TRAINYARD_COMMAND": command,
        "TRAINYARD_ATTEMPT": str(attempt),
        "TRAINYARD_LEARNER_RANK": "0",
        "TRAINYARD_NUM_LEARNERS": "1",
        "TRAINYARD_CHECKPOINT_INTERVAL": "5",
        "TRAINYARD_CHECKPOINT_KEEP": "3",
        "TRAINYARD_WORK_DIR": str(tmp_path / "work"),
        "TRAINYARD_STORAGE": json.dumps({"kind": "local", "root": str(store.root)}),
        "TRAINYARD_SANDBOX_NETWORK": "none",
        **extra,
    }


def start_runtime(
    store: LocalStore,
    tmp_path: Path,
    behaviour: str,
    mode: str = "train",
    attempt: int = 1,
    *,
    prefix: str = "",
    **extra: str,
) -> subprocess.Popen[str]:
    """`prefix`: words in front of the command, e.g. `prlimit --as=N `."""
    command = f"{prefix}python fake_job.py {behaviour}"
    return subprocess.Popen(
        [sys.executable, "-m", "trainyard.runtime", mode],
        env=runtime_env(store, tmp_path, command, attempt, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_runtime(
    store: LocalStore,
    tmp_path: Path,
    behaviour: str,
    mode: str = "train",
    attempt: int = 1,
    *,
    prefix: str = "",
    **extra: str,
) -> tuple[int, str]:
    proc = start_runtime(store, tmp_path, behaviour, mode, attempt, prefix=prefix, **extra)
    output, _ = proc.communicate(timeout=60)
    return proc.returncode, output


def run_with_env(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainyard.runtime", "train"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def outcome(store: LocalStore, attempt: int = 1) -> dict[str, object]:
    return store.get_json(f"{LAYOUT.logs}/outcome-attempt-{attempt}-rank-0.json")


def test_train_commits_checkpoints_metrics_results_and_outcome(
    store: LocalStore, tmp_path: Path
) -> None:
    code, output = run_runtime(store, tmp_path, "train")

    assert code == 0, output
    assert "fake job starts after step 0; data: 42 rows" in output
    assert "no committed checkpoint" in output
    checkpoints = CheckpointStore(store, LAYOUT)
    assert checkpoints.committed_steps() == [1, 2]
    assert checkpoints.latest_step() == 2
    rows = [json.loads(line) for line in store.get_bytes(LAYOUT.metrics(1)).decode().splitlines()]
    assert rows == [
        {"step": 1, "loss": 1.0, "attempt": 1, "rank": 0},
        {"step": 2, "loss": 0.5, "attempt": 1, "rank": 0},
    ]
    assert store.get_bytes(f"{LAYOUT.results}/model.txt") == b"model after step 2"
    assert b"fake job starts" in store.get_bytes(LAYOUT.learner_log(RunMode.TRAIN, 1, 0))
    assert outcome(store) == {
        "exit_code": 0,
        "signal": None,
        "status": "succeeded",
        "failure_class": None,
        "message": "the command succeeded",
        "fix": None,
    }


def test_the_workspace_is_deleted_once_everything_is_uploaded(
    store: LocalStore, tmp_path: Path
) -> None:
    for behaviour in ("train", "fail"):
        run_runtime(store, tmp_path, behaviour)

        assert not (tmp_path / "work" / JOB).exists()
    assert CheckpointStore(store, LAYOUT).committed_steps() == [1, 2]


class FullDiskStore(LocalStore):
    """Storage whose downloads find the learner's disk full."""

    def get_file(self, key: str, path: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_in_the_runtimes_downloads_is_the_same_failure_as_in_user_code(
    store: LocalStore, tmp_path: Path
) -> None:
    settings = RuntimeSettings.from_env(runtime_env(store, tmp_path, "python fake_job.py", 1))
    full = FullDiskStore(store.root)

    result = Runner(RunMode.TRAIN, settings, full).run()

    assert isinstance(result.failure, PlatformFault)
    assert result.failure.cause.startswith("the learner's disk is full: [Errno 28]")
    user = Outcome.of(Finished(1, None, ["OSError: [Errno 28] No space left on device"]))
    assert type(user.failure) is type(result.failure)
    assert result.failure.fix == user.failure.fix
    assert outcome(store)["failure_class"] == "platform_fault"


def test_next_attempt_resumes_from_newest_checkpoint(store: LocalStore, tmp_path: Path) -> None:
    assert run_runtime(store, tmp_path, "train")[0] == 0

    code, output = run_runtime(store, tmp_path, "train", attempt=2)

    assert code == 0, output
    assert "restored checkpoint step-2" in output
    assert "fake job starts after step 2" in output
    assert CheckpointStore(store, LAYOUT).committed_steps() == [2, 3, 4]
    rows = [json.loads(line) for line in store.get_bytes(LAYOUT.metrics(2)).decode().splitlines()]
    assert [(row["step"], row["attempt"]) for row in rows] == [(3, 2), (4, 2)]
    assert store.get_bytes(f"{LAYOUT.results}/model.txt") == b"model after step 4"


def test_failing_command_is_a_user_error(store: LocalStore, tmp_path: Path) -> None:
    code, output = run_runtime(store, tmp_path, "fail")

    assert code == 1, output
    result = outcome(store)
    assert result["status"] == "failed"
    assert result["failure_class"] == "user_error"
    assert result["exit_code"] == 1
    assert result["message"] == (
        "the command failed with ValueError: learning rate must be positive, got -1 "
        f"(fake_job.py:{line_of('learning rate must be positive')})"
    )
    assert str(result["fix"]).startswith("fix the code at the place named")
    assert f"{store.root}/{LAYOUT.learner_log(RunMode.TRAIN, 1, 0)}" in str(result["fix"])
    assert not list(store.list(LAYOUT.results))


def line_of(text: str) -> int:
    """The line number of `text` in the fake job, as a traceback names it."""
    [number] = [n for n, line in enumerate(FAKE_JOB.splitlines(), 1) if text in line]
    return number


def test_warnings_before_an_exception_stay_out_of_the_message(
    store: LocalStore, tmp_path: Path
) -> None:
    code, output = run_runtime(store, tmp_path, "warn-then-fail")

    assert code == 1, output
    assert "UserWarning: TypedStorage is deprecated" in output  # the log keeps the warnings
    result = outcome(store)
    assert result["failure_class"] == "user_error"
    assert result["message"] == (
        "the command failed with ValueError: batch_size must divide the dataset, got 7 "
        f"(fake_job.py:{line_of('# the user')})"
    )


def test_running_out_of_a_real_memory_limit_is_a_resource_error(
    store: LocalStore, tmp_path: Path
) -> None:
    """The kernel refuses memory beyond the address-space limit: MemoryError in the command."""
    code, output = run_runtime(store, tmp_path, "oom", prefix=f"prlimit --as={512 * 2**20} ")

    assert code == 1, output
    result = outcome(store)
    assert result["failure_class"] == "resource_error"
    assert str(result["message"]).startswith("the command ran out of memory: MemoryError")
    assert result["fix"] == "raise resources.memory, or use less memory per learner"


def host_pid(runtime: subprocess.Popen[str], pid_in_sandbox: int) -> int:
    """The pid, as this machine sees it, of the runtime's descendant that has `pid_in_sandbox`
    as its innermost pid (the sandbox gives the command a PID namespace of its own)."""
    for child in psutil.Process(runtime.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error, OSError):
            status = Path(f"/proc/{child.pid}/status").read_text()
            [nspids] = [
                line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")
            ]
            if int(nspids[-1]) == pid_in_sandbox and len(nspids) > 1:
                return child.pid
    return pid_in_sandbox  # not sandboxed: the same pid


def wait_until_ready(proc: subprocess.Popen[str]) -> int:
    """Read the runtime's output up to the fake job's `ready <pid>` line; return that process's
    pid on this machine."""
    assert proc.stdout is not None
    lines: list[str] = []
    while not (line := proc.stdout.readline()).startswith("ready "):
        assert line, "the runtime ended before the job was ready:\n" + "".join(lines)
        lines.append(line)
    return host_pid(proc, int(line.split()[1]))


def send(proc: subprocess.Popen[str], user_pid: int, target: str, signum: int) -> None:
    if target == "runtime":
        proc.send_signal(signum)
    elif target == "user process":
        os.kill(user_pid, signum)
    else:  # the command runs in its own session: its process group has the command's pid
        os.killpg(os.getpgid(user_pid), signum)


@pytest.mark.parametrize(
    ("target", "signum"),
    [
        pytest.param("runtime", signal.SIGTERM, id="sigterm-to-the-runtime"),
        pytest.param("user process", signal.SIGTERM, id="sigterm-to-the-user-process"),
        pytest.param("process group", signal.SIGTERM, id="sigterm-to-the-process-group"),
        pytest.param("runtime", signal.SIGHUP, id="sighup-to-the-runtime"),
        pytest.param("user process", signal.SIGINT, id="sigint-to-the-user-process"),
        pytest.param("user process", signal.SIGHUP, id="sighup-to-the-user-process"),
    ],
)
def test_a_stop_signal_is_a_preemption_whoever_receives_it(
    store: LocalStore, tmp_path: Path, target: str, signum: int
) -> None:
    proc = start_runtime(store, tmp_path, "wait")
    user_pid = wait_until_ready(proc)

    send(proc, user_pid, target, signum)
    output, _ = proc.communicate(timeout=60)

    assert proc.returncode == 128 + signum, output
    assert "final checkpoint written" in output
    assert CheckpointStore(store, LAYOUT).committed_steps() == [7]
    result = outcome(store)
    assert result["failure_class"] == "preemption", result
    # It exits 128 + N after its final checkpoint, or, when a group's signal reaches it twice
    # (directly and through the sandbox's init) and the second lands while Python exits, it
    # dies of the signal: a preemption either way.
    assert (result["exit_code"], result["signal"]) in ((128 + signum, None), (None, signum))
    forwarded = "the runtime forwarded it" in str(result["message"])
    assert forwarded is (target == "runtime")
    # The retry resumes from the final checkpoint: no step is lost.
    assert run_runtime(store, tmp_path, "train", attempt=2)[0] == 0
    assert CheckpointStore(store, LAYOUT).committed_steps() == [7, 8, 9]


def test_a_stopped_command_still_checkpoints_on_sigterm_within_the_grace(
    store: LocalStore, tmp_path: Path
) -> None:
    """A command frozen by SIGSTOP (a hang the chaos soak injects) holds SIGTERM pending: the
    runtime continues it, so it writes its final checkpoint at once instead of being killed
    when the grace is over, while the job's next attempt starts beside it."""
    proc = start_runtime(store, tmp_path, "wait", TRAINYARD_STOP_GRACE="60")
    user_pid = wait_until_ready(proc)
    os.kill(user_pid, signal.SIGSTOP)

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)

    assert time.monotonic() - started < 30, "waited for the grace: the command stayed stopped"
    assert "final checkpoint written" in output
    assert CheckpointStore(store, LAYOUT).committed_steps() == [7]
    assert outcome(store)["failure_class"] == "preemption"


def test_a_superseded_attempt_stops_its_command_and_exits_without_writing(
    store: LocalStore, tmp_path: Path
) -> None:
    """A retry claimed the job while this attempt still trains (its task process lost): the
    runtime sees it within the fence period, kills the command and writes nothing more."""
    proc = start_runtime(store, tmp_path, "wait")
    user_pid = wait_until_ready(proc)

    CheckpointStore(store, LAYOUT, attempt=2).claim()
    output, _ = proc.communicate(timeout=60)

    assert proc.returncode == EXIT_PLATFORM_FAULT, output
    assert f"attempt 1 of {JOB} is superseded by attempt 2" in output
    assert not still_running([user_pid])
    assert CheckpointStore(store, LAYOUT).committed_steps() == []
    assert store.get_json(LAYOUT.checkpoint_pointer) == {"step": None, "attempt": 2}
    assert not store.exists(f"{LAYOUT.logs}/outcome-attempt-1-rank-0.json")
    assert not list(store.list(LAYOUT.results))


def test_a_slow_final_save_is_committed_when_nobody_reads_the_output_any_more(
    store: LocalStore, tmp_path: Path
) -> None:
    """The task process is killed mid-stop (Airflow's SIGKILL after 5 s): the runtime, in its
    own session, goes on without the pipe it wrote to, for the deployment's stop grace."""
    proc = start_runtime(store, tmp_path, "slow-save 8", TRAINYARD_STOP_GRACE="60")
    wait_until_ready(proc)
    assert proc.stdout is not None
    proc.stdout.close()  # nobody reads the runtime's output any more

    proc.send_signal(signal.SIGTERM)

    assert proc.wait(timeout=120) == 143
    assert CheckpointStore(store, LAYOUT).committed_steps() == [7]
    result = outcome(store)
    assert result["failure_class"] == "preemption", result
    log = store.get_bytes(LAYOUT.learner_log(RunMode.TRAIN, 1, 0)).decode()
    assert log.count("saving the final checkpoint...") >= 10
    assert "final checkpoint written" in log


def test_a_stopped_command_is_killed_when_the_stop_grace_is_over(
    store: LocalStore, tmp_path: Path
) -> None:
    proc = start_runtime(store, tmp_path, "slow-save 600", TRAINYARD_STOP_GRACE="2")
    wait_until_ready(proc)

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)

    assert time.monotonic() - started >= 2, "killed before the grace was over"
    result = outcome(store)
    assert result["failure_class"] == "preemption", output
    assert "did not exit within the stop grace of 2 s after SIGTERM" in str(result["message"])
    assert "stop_grace_seconds = 2 s" in str(result["fix"])
    assert CheckpointStore(store, LAYOUT).committed_steps() == []


def test_a_command_killed_by_sigterm_itself_is_a_preemption(
    store: LocalStore, tmp_path: Path
) -> None:
    """No handler: SIGTERM's default action ends it, and the wait status says so."""
    proc = start_runtime(store, tmp_path, "sleep")
    os.kill(wait_until_ready(proc), signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)

    assert proc.returncode == 143, output
    result = outcome(store)
    assert result["failure_class"] == "preemption"
    assert result["signal"] == signal.SIGTERM
    assert result["message"] == (
        "the command was stopped by SIGTERM: sent to the command or its process group "
        "(preemption, drain or shutdown)"
    )


def test_exit_143_without_any_sigterm_is_a_user_error_saying_so(
    store: LocalStore, tmp_path: Path
) -> None:
    code, output = run_runtime(store, tmp_path, "exit-143")

    assert code == 143, output
    result = outcome(store)
    assert result["failure_class"] == "user_error"
    assert result["message"] == (
        "the command exited with code 143, the code for a stop by SIGTERM, but no SIGTERM "
        "reached it or the runtime: it is not a preemption; its last output: pretending to "
        "be stopped"
    )
    assert str(result["fix"]).startswith("exit with 143 only after SIGTERM; see the learner log")


def test_hung_command_is_stopped_by_the_watchdog(store: LocalStore, tmp_path: Path) -> None:
    code, output = run_runtime(
        store, tmp_path, "hang", TRAINYARD_WATCHDOG="2", TRAINYARD_WATCHDOG_STARTUP="60"
    )

    assert code != 0, output
    assert "watchdog: no new metric or checkpoint for 2 s" in output
    result = outcome(store)
    assert result["failure_class"] == "hang"
    assert result["message"] == "no new metric or checkpoint for 2 s"
    assert "raise the manifest's watchdog" in str(result["fix"])
    # What it had done before hanging is kept for the retry.
    assert CheckpointStore(store, LAYOUT).committed_steps() == [1]
    # The pids it printed are those of its sandbox; seen from here, nothing of the job is left.
    assert "pids 2 3" in output
    # The kernel ends the sandbox's processes with its init, a moment after the runtime.
    wait_until(
        lambda: not learner_processes(JOB, user_code=True), "the command and worker to end", 10
    )


STUBBORN = """\
import os, signal, subprocess, sys, time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(os.getpid(), worker.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize(
    "sandboxed", [pytest.param(True, id="sandboxed"), pytest.param(False, id="bare")]
)
def test_stop_kills_a_command_ignoring_sigterm_and_its_workers_after_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandboxed: bool
) -> None:
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # pytest keeps its own handlers
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    sandbox = Sandbox(SandboxNetwork.NONE, [tmp_path]) if sandboxed else None
    process = UserProcess(
        f"{sys.executable} stubborn.py",
        tmp_path,
        dict(os.environ),
        tmp_path / "learner.log",
        sandbox=sandbox,
    )
    assert process.proc.stdout is not None
    assert process.proc.stdout.readline()  # the command and its worker run
    started = psutil.Process(process.proc.pid)
    pids = [started.pid, *(child.pid for child in started.children(recursive=True))]
    assert len(pids) == (4 if sandboxed else 2)  # (bwrap and its init,) the command, the worker
    hang = Hang("no new metric or checkpoint for 2 s")

    started = time.monotonic()
    process.stop(hang, grace=0.5)
    finished = process.wait()

    assert time.monotonic() - started >= 0.5, "SIGKILL came before the grace was over"
    assert finished.returncode == -signal.SIGKILL
    assert Outcome.of(finished).failure is hang
    assert still_running(pids) == []


def test_start_up_longer_than_the_hang_window_is_not_a_hang(
    store: LocalStore, tmp_path: Path
) -> None:
    """The hang window starts at the first progress; before it, the start-up allowance holds."""
    code, output = run_runtime(
        store,
        tmp_path,
        "slow-start 5",
        TRAINYARD_WATCHDOG="2",
        TRAINYARD_WATCHDOG_STARTUP="120",
    )

    assert code == 0, output
    assert "watchdog" not in output
    assert outcome(store)["status"] == "succeeded"


def test_no_progress_within_the_start_up_allowance_is_a_hang_at_start_up(
    store: LocalStore, tmp_path: Path
) -> None:
    code, output = run_runtime(
        store, tmp_path, "stuck", TRAINYARD_WATCHDOG="60", TRAINYARD_WATCHDOG_STARTUP="2"
    )

    assert code != 0, output
    result = outcome(store)
    assert result["failure_class"] == "hang"
    assert result["message"] == (
        "hung at start-up: no first metric row or checkpoint within 2 s of the start"
    )
    assert "raise the manifest's watchdog_startup" in str(result["fix"])


def test_command_making_progress_is_not_stopped(store: LocalStore, tmp_path: Path) -> None:
    code, output = run_runtime(store, tmp_path, "steady", TRAINYARD_WATCHDOG="2")

    assert code == 0, output
    assert "watchdog" not in output
    assert outcome(store)["status"] == "succeeded"


def test_evaluate_writes_evaluation_json(store: LocalStore, tmp_path: Path) -> None:
    store.put_bytes(f"{LAYOUT.results}/model.txt", b"model after step 9")

    code, output = run_runtime(store, tmp_path, "evaluate", mode="evaluate")

    assert code == 0, output
    assert store.get_json(LAYOUT.evaluation) == {"metrics": {"accuracy": 0.92, "loss": 0.1}}
    assert store.get_json(f"{LAYOUT.logs}/evaluate-outcome-attempt-1-rank-0.json")["status"] == (
        "succeeded"
    )


def test_evaluation_has_no_watchdog(store: LocalStore, tmp_path: Path) -> None:
    """It writes its metrics at the end: a quiet evaluation is not a hang."""
    store.put_bytes(f"{LAYOUT.results}/model.txt", b"model after step 9")

    code, output = run_runtime(
        store, tmp_path, "evaluate 2.5", mode="evaluate", TRAINYARD_WATCHDOG="1"
    )

    assert code == 0, output
    assert "watchdog" not in output


def test_missing_variable_fails_fast_naming_it(store: LocalStore, tmp_path: Path) -> None:
    env = runtime_env(store, tmp_path, "python fake_job.py train", 1)
    del env["TRAINYARD_ATTEMPT"]

    proc = run_with_env(env)

    assert proc.returncode == 2
    assert "TRAINYARD_ATTEMPT" in proc.stdout + proc.stderr


def test_command_that_cannot_start_is_a_user_error(store: LocalStore, tmp_path: Path) -> None:
    proc = run_with_env(runtime_env(store, tmp_path, "pyhton fake_job.py train", 1))

    assert proc.returncode == 1, proc.stdout
    result = outcome(store)
    assert result["failure_class"] == "user_error"
    assert "pyhton" in str(result["message"])


def test_helpers_follow_the_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINYARD_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("TRAINYARD_METRICS_FILE", str(tmp_path / "metrics.jsonl"))
    assert helpers.latest_checkpoint() is None

    for step in (5, 12):
        helpers.save_checkpoint(step, lambda d: (d / "w.txt").write_text(str(step)))  # noqa: B023
    (tmp_path / "checkpoints" / "tmp-99-abandoned").mkdir()
    helpers.log_metrics(step=12, loss=0.25)

    latest = helpers.latest_checkpoint()
    assert latest == tmp_path / "checkpoints" / "step-12"
    assert (latest / "w.txt").read_text() == "12"
    assert sorted(helpers.checkpoint_steps(tmp_path / "checkpoints")) == [5, 12]
    with pytest.raises(FileExistsError):
        helpers.save_checkpoint(12, lambda d: None)
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 12, "loss": 0.25}
