"""`make demo`: Airflow standalone on this machine, a real training job, the result.

`python -m devkit.demo start` starts (or reuses) `airflow standalone` with a private
AIRFLOW_HOME under .demo/, uploads the digits dataset and example code for tenant `acme`,
submits the example with the CLI and prints where everything is. `stop` ends Airflow.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from devkit.airflow_env import REPO_ROOT, airflow_environment, airflow_healthy, wait_for_dags
from trainyard.runtime.sandbox import bwrap_available

DEMO_DIR = REPO_ROOT / ".demo"
AIRFLOW_HOME = DEMO_DIR / "airflow"
PID_FILE = DEMO_DIR / "standalone.pid"
LOG_FILE = DEMO_DIR / "standalone.log"
EXAMPLE = REPO_ROOT / "examples" / "pytorch-digits"
TENANT = "acme"
START_TIMEOUT_SECONDS = 180


def demo_environment() -> dict[str, str]:
    port = int(os.environ.get("TRAINYARD_DEMO_PORT", "8080"))
    env = dict(os.environ)
    env.update(
        airflow_environment(
            AIRFLOW_HOME,
            api_port=port,
            log_server_port=port + 713,
            trigger_log_server_port=port + 714,
            trainyard_config=REPO_ROOT / "config" / "trainyard.yaml",
        )
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(command: str, env: dict[str, str]) -> None:
    """Run a command the way a user would type it, showing it first."""
    print(f"\n$ {command}", flush=True)
    subprocess.run(shlex.split(command), env=env, cwd=REPO_ROOT, check=True)


def start_airflow(env: dict[str, str]) -> None:
    if airflow_healthy(env["TRAINYARD_API_URL"]):
        print(f"Airflow is already running at {env['TRAINYARD_API_URL']}")
        return
    print(f"Starting airflow standalone (log: {LOG_FILE.relative_to(REPO_ROOT)}) ...", flush=True)
    DEMO_DIR.mkdir(exist_ok=True)
    with LOG_FILE.open("ab") as log:
        process = subprocess.Popen(
            ["airflow", "standalone"],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    PID_FILE.write_text(str(process.pid))
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not airflow_healthy(env["TRAINYARD_API_URL"]):
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"airflow standalone did not start; see {LOG_FILE}")
        time.sleep(2)


def sandbox_notice() -> str:
    """What the demo says about the sandbox of the learners' user code (config: auto)."""
    if bwrap_available():
        return "learners run the job's code in a bubblewrap sandbox"
    return (
        "bwrap is not installed: learners run the job's code unsandboxed, as the user running "
        "Airflow, with this machine's files in reach. Install it (apt-get install bubblewrap) "
        "to sandbox them."
    )


def start() -> None:
    env = demo_environment()
    print(sandbox_notice(), flush=True)
    start_airflow(env)
    run("trainyard tenants sync", env)  # the tenants' pools and variable
    wait_for_dags(env, [f"trainyard_{TENANT}"])
    dataset = DEMO_DIR / "datasets" / "digits"
    run(f"python {EXAMPLE / 'make_dataset.py'} --out {dataset}", env)
    run(f"trainyard data upload {dataset} datasets/digits --tenant {TENANT}", env)
    run(f"trainyard data upload {EXAMPLE} examples/pytorch-digits --tenant {TENANT}", env)
    print(f"\n$ trainyard submit {EXAMPLE / 'job.yaml'} --wait", flush=True)
    submitted = subprocess.run(
        ["trainyard", "submit", str(EXAMPLE / "job.yaml"), "--wait"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    print(submitted.stdout, end="")
    job_id = submitted.stdout.split()[0] if submitted.stdout.strip() else ""
    if submitted.returncode != 0 or not job_id:
        sys.exit("the demo job did not succeed; the output above says why")
    run(f"trainyard metrics {job_id} --tail 5", env)
    run(f"trainyard download {job_id} {DEMO_DIR / 'model'}", env)
    print(
        f"""
Done. Job {job_id} trained and passed its evaluation.
  model:      {DEMO_DIR / "model"} (also in {DEMO_DIR / "storage" / TENANT / "jobs" / job_id})
  Airflow UI: {env["TRAINYARD_API_URL"]}  (user {env["TRAINYARD_USERNAME"]}, """
        f"""password {env["TRAINYARD_PASSWORD"]}); DAG trainyard_{TENANT}
  jobs page:  {env["TRAINYARD_API_URL"]}/trainyard/tenants/{TENANT}/jobs
  CLI:        export TRAINYARD_CONFIG={env["TRAINYARD_CONFIG"]} \\
                TRAINYARD_API_URL={env["TRAINYARD_API_URL"]}
              .venv/bin/trainyard status {job_id}
  stop it:    make demo-stop"""
    )


def stop() -> None:
    if not PID_FILE.exists():
        print("no demo Airflow is running")
        return
    pid = int(PID_FILE.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        print("the demo Airflow had already stopped")
    PID_FILE.unlink()
    print("stopped airflow standalone")


if __name__ == "__main__":
    {"start": start, "stop": stop}[sys.argv[1] if len(sys.argv) > 1 else "start"]()
