"""`make demo`: Airflow on this machine, a real training job, the result.

`python -m devkit.demo start` starts (or reuses) the private PostgreSQL server (the metadata
DB) and Airflow's components (API server, scheduler, DAG processor, triggerer; one process
group, under .demo/), uploads the digits dataset and example code for tenant `acme`, submits
the example with the CLI as that tenant's user and prints where everything is. `stop` ends
Airflow, then the database; the next `start` finds every job where it was.

Secure by default: the jobs' code runs in the bubblewrap sandbox (installed here when missing
and running as root), and Airflow runs FAB's auth manager with a generated admin password and
one user per tenant holding only the tenant's role, all kept in `.demo/credentials.json`,
which only its owner can read.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from devkit.airflow_env import (
    REPO_ROOT,
    airflow_environment,
    airflow_healthy,
    api_server_environment,
    create_user,
    wait_for_dags,
    write_private,
)
from devkit.cluster import COMPONENTS
from devkit.metadata_db import start_postgres, stop_postgres
from trainyard.runtime.sandbox import INSTALL_COMMAND, bwrap_available
from trainyard.tenancy.config import TrainyardConfig, load_config
from trainyard.tenancy.names import dag_id_for_tenant, tenant_role

DEMO_DIR = REPO_ROOT / ".demo"
DEMO_CONFIG = REPO_ROOT / "config" / "trainyard.yaml"
EXAMPLE = REPO_ROOT / "examples" / "pytorch-digits"
TENANT = "acme"
#: The platform admin (FAB's Admin role), whom the demo's own steps run as.
ADMIN = "admin"
#: username -> password of the demo's users, generated at first start; mode 0600.
CREDENTIALS_FILE = "credentials.json"
#: The process group of Airflow's components (its leader is `serve`).
PID_FILE = "airflow.pid"
START_TIMEOUT_SECONDS = 180
#: How long Airflow gets after SIGTERM (its tasks checkpoint and exit) before SIGKILL.
STOP_TIMEOUT_SECONDS = 60


#: How soon a component of the demo's Airflow that exited is started again.
RESTART_DELAY_SECONDS = 5.0


def tenant_user(tenant: str) -> str:
    """The demo's user of `tenant`, who holds the tenant's role and nothing else."""
    return f"{tenant}-user"


def demo_credentials(demo_dir: Path, tenants: list[str]) -> dict[str, str]:
    """The demo's users and their passwords (the admin, one user per tenant): those of
    `demo_dir`'s credentials file, plus a generated password for any user it lacks; the file
    is (re)written readable by its owner only."""
    path = demo_dir / CREDENTIALS_FILE
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    users = [ADMIN, *(tenant_user(tenant) for tenant in tenants)]
    credentials = {user: known.get(user) or secrets.token_urlsafe(18) for user in users}
    write_private(path, json.dumps(credentials, indent=2) + "\n")
    return credentials


def demo_environment(
    demo_dir: Path, trainyard_config: Path, database_url: str, admin_password: str
) -> dict[str, str]:
    """Airflow's and the CLI's environment (as the admin); its home is private to its owner."""
    port = int(os.environ.get("TRAINYARD_DEMO_PORT", "8080"))
    home = demo_dir / "airflow"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.chmod(0o700)  # airflow.cfg, the API's signing secret, the task logs
    env = dict(os.environ)
    env.update(
        airflow_environment(
            home,
            api_port=port,
            log_server_port=port + 713,
            trigger_log_server_port=port + 714,
            trainyard_config=trainyard_config,
            username=ADMIN,
            password=admin_password,
            database_url=database_url,
            auth_manager="fab",
        )
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def as_user(env: dict[str, str], user: str, credentials: dict[str, str]) -> dict[str, str]:
    """`env` with the CLI logging in as `user`."""
    return {**env, "TRAINYARD_USERNAME": user, "TRAINYARD_PASSWORD": credentials[user]}


def run(command: str, env: dict[str, str]) -> None:
    """Run a command the way a user would type it, showing it first."""
    print(f"\n$ {command}", flush=True)
    subprocess.run(shlex.split(command), env=env, cwd=REPO_ROOT, check=True)


def ensure_bubblewrap(config: TrainyardConfig, config_file: Path) -> None:
    """Make sure the jobs' code will run sandboxed: install bubblewrap when it is missing and
    this runs as root (as `make services` does); without root, exit naming the command that
    would. Nothing to do when the config turned the sandbox off deliberately."""
    if config.sandbox.enabled is False or bwrap_available():
        return
    if os.geteuid() == 0:
        print("bubblewrap sandboxes the jobs' code and is missing: installing it", flush=True)
        apt = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=apt, check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "bubblewrap"], env=apt, check=True)
        if bwrap_available():
            return
    sys.exit(
        "bubblewrap (bwrap), which sandboxes the jobs' code, is not installed, and the demo "
        f"refuses to run tenants' code unsandboxed. Install it: sudo {INSTALL_COMMAND} "
        f"(or set sandbox.enabled: false in {config_file} to run it unsandboxed deliberately)"
    )


def sandbox_notice(config: TrainyardConfig) -> str:
    """What the demo says at start about the sandbox of the jobs' code."""
    return config.sandbox_warning() or "learners run the job's code in a bubblewrap sandbox"


def credentials_notice(
    api_url: str, credentials: dict[str, str], tenants: list[str], demo_dir: Path
) -> str:
    """The demo's users, for the UI and the CLI (also kept in the credentials file)."""
    roles = {ADMIN: "platform admin"} | {tenant_user(t): f"tenant {t} only" for t in tenants}
    lines = [f"  Airflow UI: {api_url}  (the passwords are also in {demo_dir / CREDENTIALS_FILE})"]
    for user, role in roles.items():
        lines.append(f"    user {user:<14} password {credentials[user]}  ({role})")
    return "\n".join(lines)


def start_services(
    demo_dir: Path = DEMO_DIR, trainyard_config: Path = DEMO_CONFIG
) -> dict[str, str]:
    """Start (or reuse) the demo's PostgreSQL and Airflow under `demo_dir`, with its users and
    the tenants' roles and pools; return the environment the CLI needs (as the admin)."""
    demo_dir.mkdir(parents=True, exist_ok=True)
    config = load_config(trainyard_config)
    credentials = demo_credentials(demo_dir, config.tenant_names)
    database_url = start_postgres(demo_dir / "postgres")
    env = demo_environment(demo_dir, trainyard_config, database_url, credentials[ADMIN])
    running = airflow_healthy(env["TRAINYARD_API_URL"])
    if not running:
        subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    # The tenants' roles, pools and variable (FAB's info log of each permission left out).
    run("trainyard tenants sync", {**env, "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"})
    create_users(env, credentials, config.tenant_names)
    if running:
        print(f"Airflow is already running at {env['TRAINYARD_API_URL']}")
    else:
        start_airflow(demo_dir, env)
    notice = credentials_notice(
        env["TRAINYARD_API_URL"], credentials, config.tenant_names, demo_dir
    )
    print(notice, flush=True)
    return env


def create_users(env: dict[str, str], credentials: dict[str, str], tenants: list[str]) -> None:
    """Create those of the demo's users that Airflow does not have yet: the admin (FAB's Admin)
    and each tenant's user (the tenant's role only)."""
    listing = subprocess.run(
        ["airflow", "users", "list", "-o", "json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # One JSON line among Airflow's log lines; none at all ("No data found") before any user.
    rows = [line for line in listing.splitlines() if line.startswith(("[{", "[]"))]
    existing = {user["username"] for row in rows for user in json.loads(row)}
    roles = {ADMIN: "Admin"} | {tenant_user(tenant): tenant_role(tenant) for tenant in tenants}
    for user, role in roles.items():
        if user not in existing:
            create_user(env, user, credentials[user], role)


def start_airflow(demo_dir: Path, env: dict[str, str]) -> None:
    """Start Airflow's components in a session of their own (a Ctrl-C of `make demo` leaves
    them running) and wait until they are healthy."""
    log_file = demo_dir / "airflow.log"
    print(f"Starting Airflow (log: {log_file}) ...", flush=True)
    log_file.touch(mode=0o600)
    log_file.chmod(0o600)  # the components' logs are their owner's business only
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "devkit.demo", "serve"],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (demo_dir / PID_FILE).write_text(str(process.pid))
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not airflow_healthy(env["TRAINYARD_API_URL"]):
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"Airflow did not start; see {log_file}")
        time.sleep(2)


def serve() -> None:
    """Run Airflow's components as children of this process, in its process group (which
    `stop` ends); the API server without any tenant's storage keys.

    A component that exits is started again after RESTART_DELAY_SECONDS, as docker-compose's
    `restart: unless-stopped` does: Airflow's components exit when their database goes away
    (a PostgreSQL restart), and the embedded default must come back by itself.
    """
    env = dict(os.environ)

    def launch(component: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["airflow", *component.split()],
            env=api_server_environment(env) if component == "api-server" else env,
        )

    running = {component: launch(component) for component in COMPONENTS}
    while True:
        time.sleep(RESTART_DELAY_SECONDS)
        for component, process in running.items():
            if process.poll() is not None:
                print(
                    f"{component} exited with {process.returncode}; starting it again", flush=True
                )
                running[component] = launch(component)


def stop_services(demo_dir: Path = DEMO_DIR) -> None:
    """Stop the demo's Airflow (every process of its group: running tasks get SIGTERM and
    checkpoint), then, once all of them are gone, its PostgreSQL."""
    pid_file = demo_dir / PID_FILE
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
        print("stopped Airflow" if members else "the demo Airflow had already stopped")
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


def start() -> None:
    config = load_config(DEMO_CONFIG)
    ensure_bubblewrap(config, DEMO_CONFIG)
    print(sandbox_notice(config), flush=True)
    admin_env = start_services()
    credentials = demo_credentials(DEMO_DIR, config.tenant_names)
    env = as_user(admin_env, tenant_user(TENANT), credentials)  # the tenant's own user
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
    user = tenant_user(TENANT)
    print(
        f"""
Done. Job {job_id} of tenant {TENANT} trained and passed its evaluation.
  model:      {DEMO_DIR / "model"} (also in {DEMO_DIR / "storage" / TENANT / "jobs" / job_id})
{credentials_notice(env["TRAINYARD_API_URL"], credentials, config.tenant_names, DEMO_DIR)}
  jobs page:  {env["TRAINYARD_API_URL"]}/trainyard/tenants/{TENANT}/jobs (DAG trainyard_{TENANT})
  CLI:        export TRAINYARD_CONFIG={env["TRAINYARD_CONFIG"]} \\
                TRAINYARD_API_URL={env["TRAINYARD_API_URL"]} \\
                TRAINYARD_USERNAME={user} TRAINYARD_PASSWORD={credentials[user]}
              .venv/bin/trainyard status {job_id}
  stop it:    make demo-stop"""
    )


if __name__ == "__main__":
    {"start": start, "stop": stop_services, "serve": serve}[
        sys.argv[1] if len(sys.argv) > 1 else "start"
    ]()
