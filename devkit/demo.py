"""`make demo`: Airflow standalone on this machine, a real training job, the result.

`python -m devkit.demo start` starts (or reuses) the private PostgreSQL server (the
metadata DB) and `airflow standalone`, both under .demo/, uploads the digits dataset and
example code for tenant `acme`, submits the example with the CLI and prints where everything
is. `stop` ends Airflow, then the database; the next `start` finds every job where it was.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from devkit.airflow_env import REPO_ROOT, airflow_environment, airflow_healthy, wait_for_dags
from devkit.metadata_db import start_postgres, stop_postgres
from trainyard.runtime.sandbox import bwrap_available
from trainyard.tenancy.names import dag_id_for_tenant

DEMO_DIR = REPO_ROOT / ".demo"
DEMO_CONFIG = REPO_ROOT / "config" / "trainyard.yaml"
EXAMPLE = REPO_ROOT / "examples" / "pytorch-digits"
TENANT = "acme"
START_TIMEOUT_SECONDS = 180
#: How long Airflow gets after SIGTERM (its tasks checkpoint and exit) before SIGKILL.
STOP_TIMEOUT_SECONDS = 60


def demo_environment(demo_dir: Path, trainyard_config: Path, database_url: str) -> dict[str, str]:
    port = int(os.environ.get("TRAINYARD_DEMO_PORT", "8080"))
    env = dict(os.environ)
    env.update(
        airflow_environment(
            demo_dir / "airflow",
            api_port=port,
            log_server_port=port + 713,
            trigger_log_server_port=port + 714,
            trainyard_config=trainyard_config,
            database_url=database_url,
        )
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(command: str, env: dict[str, str]) -> None:
    """Run a command the way a user would type it, showing it first."""
    print(f"\n$ {command}", flush=True)
    subprocess.run(shlex.split(command), env=env, cwd=REPO_ROOT, check=True)


def start_services(
    demo_dir: Path = DEMO_DIR, trainyard_config: Path = DEMO_CONFIG
) -> dict[str, str]:
    """Start (or reuse) the demo's PostgreSQL and `airflow standalone` under `demo_dir`;
    return the environment the CLI needs to reach them."""
    demo_dir.mkdir(parents=True, exist_ok=True)
    env = demo_environment(demo_dir, trainyard_config, start_postgres(demo_dir / "postgres"))
    if airflow_healthy(env["TRAINYARD_API_URL"]):
        print(f"Airflow is already running at {env['TRAINYARD_API_URL']}")
        return env
    log_file = demo_dir / "standalone.log"
    print(f"Starting airflow standalone (log: {log_file}) ...", flush=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            ["airflow", "standalone"],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (demo_dir / "standalone.pid").write_text(str(process.pid))
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not airflow_healthy(env["TRAINYARD_API_URL"]):
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"airflow standalone did not start; see {log_file}")
        time.sleep(2)
    return env


def stop_services(demo_dir: Path = DEMO_DIR) -> None:
    """Stop the demo's Airflow (every process of its group: running tasks get SIGTERM and
    checkpoint), then, once all of them are gone, its PostgreSQL."""
    pid_file = demo_dir / "standalone.pid"
    if pid_file.exists():
        group = int(pid_file.read_text())
        members = _process_group(group)
        for process in members:
            process.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(members, timeout=STOP_TIMEOUT_SECONDS)
        for process in alive:
            process.kill()
        psutil.wait_procs(alive, timeout=10)
        pid_file.unlink()
        print("stopped airflow standalone" if members else "the demo Airflow had already stopped")
    else:
        print("no demo Airflow is running")
    if stop_postgres(demo_dir / "postgres"):
        print("stopped the demo's PostgreSQL")


def _process_group(group: int) -> list[psutil.Process]:
    """The live processes of process group `group` (its leader may have exited already)."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


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
    print(sandbox_notice(), flush=True)
    env = start_services()
    run("trainyard tenants sync", env)  # the tenants' pools and variable
    wait_for_dags(env, [dag_id_for_tenant(TENANT)])
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


if __name__ == "__main__":
    {"start": start, "stop": stop_services}[sys.argv[1] if len(sys.argv) > 1 else "start"]()
