"""A hostile training job, for tests/runtime/test_sandbox.py: it does its legitimate work, tries
everything a tenant should not be able to, and reports each attempt in its results.

Run as `python hostile_job.py` with targets.json (what to try) next to it; stdlib only.
"""

import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

targets = json.loads(Path("targets.json").read_text())
report: dict[str, dict[str, object]] = {}


def attempt(name: str, tried: str, action: Callable[[], object]) -> None:
    """Record whether `action` got anything: `denied` unless it returns something truthy."""
    try:
        got = action()
    except Exception as error:
        report[name] = {
            "tried": tried,
            "denied": True,
            "detail": f"{type(error).__name__}: {error}",
        }
    else:
        report[name] = {"tried": tried, "denied": not got, "detail": repr(got)[:2000]}


def read(path: str) -> str:
    return Path(path).read_text(errors="replace")


def listing(path: str) -> list[str]:
    return sorted(os.listdir(path))


home = targets["airflow_home"]
attempt("read airflow.cfg", f"{home}/airflow.cfg", lambda: read(f"{home}/airflow.cfg"))
attempt("read the metadata DB", f"{home}/airflow.db", lambda: read(f"{home}/airflow.db"))
attempt(
    "read the API's signing secret",
    f"{home}/trainyard-secrets.json",
    lambda: read(f"{home}/trainyard-secrets.json"),
)
attempt("list AIRFLOW_HOME", home, lambda: listing(home))
attempt("read the deployment config", targets["config"], lambda: read(targets["config"]))
attempt(
    "list another tenant's storage",
    targets["other_storage"],
    lambda: listing(targets["other_storage"]),
)
attempt(
    "read another tenant's data",
    targets["other_storage"] + "/datasets/secret.csv",
    lambda: read(targets["other_storage"] + "/datasets/secret.csv"),
)
attempt("list another job's work dir", targets["other_job"], lambda: listing(targets["other_job"]))
attempt(
    "read another job's data",
    targets["other_job"] + "/attempt-1-rank-0/data/secret.csv",
    lambda: read(targets["other_job"] + "/attempt-1-rank-0/data/secret.csv"),
)
attempt(
    "find other jobs in the work dir",
    targets["work_dir"],
    lambda: [
        name for name in listing(targets["work_dir"]) if name != os.environ["TRAINYARD_JOB_ID"]
    ],
)
attempt(
    "write to the framework environment", sys.prefix, lambda: Path(sys.prefix, "x").write_text("x")
)
attempt("write to the system", "/usr/x", lambda: Path("/usr/x").write_text("x"))

# Credentials: its own environment, then every /proc it can see.
CREDENTIAL_WORDS = (
    "SECRET",
    "ACCESS_KEY",
    "PASSWORD",
    "TOKEN",
    "AIRFLOW",
    "AWS",
    "CONN",
    "STORAGE",
)
attempt(
    "credentials in its environment",
    "os.environ",
    lambda: {k: v for k, v in os.environ.items() if any(w in k.upper() for w in CREDENTIAL_WORDS)},
)
environs = {}
for entry in os.listdir("/proc"):
    if entry.isdigit():
        with contextlib.suppress(OSError):
            environs[entry] = Path(f"/proc/{entry}/environ").read_bytes().decode(errors="replace")
report["environments in /proc"] = {"tried": "/proc/*/environ", "denied": True, "detail": environs}
attempt("read /proc/1/environ", "/proc/1/environ", lambda: "AIRFLOW" in read("/proc/1/environ"))
outside = targets["outside_pid"]
attempt(
    "read the environment of a process outside",
    f"/proc/{outside}/environ",
    lambda: read(f"/proc/{outside}/environ"),
)
attempt(
    "see processes outside in /proc",
    "/proc",
    lambda: [pid for pid in environs if int(pid) > 100],
)


def signal_outside(pid: int) -> bool:
    os.kill(pid, signal.SIGCONT)
    return True


attempt("signal a process outside", f"kill({outside}, SIGCONT)", lambda: signal_outside(outside))


def new_user_namespace() -> bool:
    """unshare(CLONE_NEWUSER): a namespace where it would hold every capability."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return True


attempt("make a user namespace", "unshare(CLONE_NEWUSER)", new_user_namespace)


def s3_get(path: str) -> bytes:
    with urllib.request.urlopen(f"http://{targets['s3_endpoint']}/{path}", timeout=5) as r:
        return r.read()


attempt(
    "read another tenant's bucket",
    f"GET http://{targets['s3_endpoint']}/{targets['other_bucket']}/datasets/own.csv",
    lambda: s3_get(f"{targets['other_bucket']}/datasets/own.csv"),
)


def connect(endpoint: str) -> bool:
    host, port = endpoint.split(":")
    socket.create_connection((host, int(port)), timeout=5).close()
    return True


endpoint = targets["s3_endpoint"]
attempt("reach the storage server", f"connect {endpoint}", lambda: connect(endpoint))

# Leave symlinks and a FIFO for the runtime outside to follow when it uploads.
results = Path(os.environ["TRAINYARD_RESULT_DIR"])
checkpoints = Path(os.environ["TRAINYARD_CHECKPOINT_DIR"])
(results / "leak-cfg").symlink_to(f"{home}/airflow.cfg")
(results / "leak-dir").symlink_to(home)
os.mkfifo(results / "fifo")

# Its legitimate work.
rows = Path(os.environ["TRAINYARD_DATA_DIR"], "rows.csv").read_text()
tmp = checkpoints / "tmp-1"
tmp.mkdir()
(tmp / "weights.txt").write_text(f"trained on {rows}")
(tmp / "leak-secrets").symlink_to(f"{home}/trainyard-secrets.json")
tmp.rename(checkpoints / "step-1")
(checkpoints / "step-2").symlink_to(home)
with open(os.environ["TRAINYARD_METRICS_FILE"], "a") as metrics:
    metrics.write(json.dumps({"step": 1, "loss": 0.5}) + "\n")
(results / "model.txt").write_text(f"model of {rows}")
(results / "report.json").write_text(json.dumps(report))
print("hostile job done", flush=True)
