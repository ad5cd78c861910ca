"""Quotas and isolation between tenants on real Airflow, with real learner processes.

One Airflow for the module: `acme` (tenant A, S3 storage) and `globex` (tenant B, local
storage, at most 2 running jobs), each with a GPU quota of 2. The jobs are short: the user
command records when it started and ended, sleeps a few seconds, and saves a one-line model.
The machine has no GPU: a stand-in NVML (tests/support/fake_nvml) gives the Airflow processes
four, as many as the two GPU pools together, so GPU jobs pass validate and each learner leases
GPUs of its own as on a GPU machine (their CUDA build is the CPU one: `cuda_builds_as_cpu`).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from devkit.airflow_env import wait_for_dags
from devkit.deployment import Deployment, deploy
from devkit.learners import learner_processes, wait_for_end, wait_until
from devkit.s3_server import S3Server
from tests.support.gpus import StandInGpus, cuda_builds_as_cpu, stand_in_gpu
from trainyard.cli.client import AirflowClient
from trainyard.jobs.layout import JobLayout, job_id_for_run, new_job_id
from trainyard.jobs.progress import read_metrics
from trainyard.jobs.records import JobState
from trainyard.tenancy.names import dag_id_for_job, dag_id_for_tenant

pytestmark = pytest.mark.e2e

TENANT_A, TENANT_B = "acme", "globex"
GPU_QUOTA = 2
B_RUNNING_JOBS = 2
CODE_PREFIX = "code/sleeper"
#: The user command: its start and end as a metric row, then a model file for the commit task.
SLEEPER = textwrap.dedent(
    """
    import json, os, time

    started = time.time()
    time.sleep(5)
    row = {"step": 1, "started": started, "ended": time.time()}
    with open(os.environ["TRAINYARD_METRICS_FILE"], "a") as metrics:
        metrics.write(json.dumps(row) + "\\n")
    with open(os.path.join(os.environ["TRAINYARD_RESULT_DIR"], "model.txt"), "w") as model:
        model.write("trained")
    """
)


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[Deployment]:
    """Both tenants with a quota of 2 GPUs; A may have all its jobs running as far as runs go,
    and the executor has room for far more tasks, so the pools are what limits the learners."""
    root = tmp_path_factory.mktemp("isolation")
    tenants = {
        TENANT_A: {"gpu_quota": GPU_QUOTA, "max_running_jobs": 8},
        TENANT_B: {"gpu_quota": GPU_QUOTA, "max_running_jobs": B_RUNNING_JOBS},
    }
    # The stand-in GPUs and the environments live outside the deployment's directory: the
    # sandbox binds an environment (and a leased GPU's node), and the intruder below must find
    # nothing of the deployment but its own work.
    gpus = StandInGpus(tmp_path_factory.mktemp("gpus"))
    gpus.write([stand_in_gpu(index) for index in range(2 * GPU_QUOTA)])
    environments = cuda_builds_as_cpu(tmp_path_factory.mktemp("envs"))
    with deploy(
        root,
        s3_server,
        tenant_settings=tenants,
        airflow_env={"AIRFLOW__CORE__PARALLELISM": "64", **gpus.environment()},
        deployment_settings={"environments": {"dir": str(environments)}},
    ) as deployed:
        code = root / "sleeper"
        code.mkdir()
        (code / "sleeper.py").write_text(SLEEPER)
        for tenant in (TENANT_A, TENANT_B):
            deployed.cluster.trainyard("data", "upload", str(code), CODE_PREFIX, "--tenant", tenant)
        yield deployed


def manifest(tenant: str, name: str, **resources: Any) -> dict[str, Any]:
    return {
        "name": name,
        "tenant": tenant,
        "framework": {"name": "pytorch", "version": "2.13"},
        "code": {"uri": CODE_PREFIX},
        "command": "python sleeper.py",
        "resources": {"cpus": 0.5, "memory": "1Gi", **resources},
        "checkpoint": {"interval": "1s"},
    }


def trigger(client: AirflowClient, job: dict[str, Any]) -> str:
    """Start a job as `trainyard submit` does, without a CLI process per job; return its id."""
    job_id = new_job_id(job["tenant"], job["name"])
    client.trigger_run(dag_id_for_tenant(job["tenant"]), job_id, {"manifest": job})
    return job_id


def learner_interval(deployment: Deployment, job_id: str) -> tuple[float, float]:
    """When the job's user command started and ended, as it recorded them."""
    (row,) = read_metrics(deployment.stores[job_id.split(".")[0]], job_id)
    return row["started"], row["ended"]


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that overlap at one moment."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start (+1)
        running += change
        peak = max(peak, running)
    return peak


def test_a_burst_stays_within_its_gpu_quota_and_does_not_delay_the_other_tenant(
    deployment: Deployment, client: AirflowClient
) -> None:
    a_jobs = [trigger(client, manifest(TENANT_A, f"burst-{i}", gpus=1)) for i in range(6)]
    b_jobs = [trigger(client, manifest(TENANT_B, f"steady-{i}", gpus=1)) for i in range(2)]
    for job_id in a_jobs + b_jobs:
        final = wait_for_end(client, deployment.stores[job_id.split(".")[0]], job_id)
        assert final.state is JobState.SUCCEEDED, f"{job_id}: {final}"

    a_runs = [learner_interval(deployment, job_id) for job_id in a_jobs]
    b_runs = [learner_interval(deployment, job_id) for job_id in b_jobs]
    assert most_at_once(a_runs) <= GPU_QUOTA
    last_a_start = max(start for start, _ in a_runs)
    assert all(start < last_a_start for start, _ in b_runs), (
        f"B's learners started at {[s for s, _ in b_runs]}, after A's last at {last_a_start}"
    )
    instances = client.task_instances(dag_id_for_tenant(TENANT_A), a_jobs[0])
    learner = next(ti for ti in instances if ti["task_id"] == "learner")
    assert (learner["pool"], learner["pool_slots"]) == ("trainyard_acme_gpu", 1)
    log = "\n".join(client.task_log(dag_id_for_tenant(TENANT_A), a_jobs[0], "learner", 1))
    assert "trainyard: learner 0 holds GPU " in log  # its own, of the stand-in machine's four


def test_the_running_jobs_limit_counts_the_tenants_scheduled_jobs_too(
    deployment: Deployment, client: AirflowClient
) -> None:
    """B may run 2 jobs at once: a scheduled job's run in B's own DAG is one of them, so with
    two submitted jobs beside it the third waits (its CPU pool would let all three run)."""
    name = "nightly-sleeper"
    path = deployment.jobs_dir / TENANT_B / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(manifest(TENANT_B, name) | {"schedule": "0 3 * * *"}))
    scheduled_dag = dag_id_for_job(TENANT_B, name)
    wait_for_dags(deployment.cluster.env, [scheduled_dag])

    run_id = client.trigger_run(scheduled_dag, "now", {})["dag_run_id"]
    submitted = [trigger(client, manifest(TENANT_B, f"adhoc-{i}")) for i in range(2)]

    def run_ended() -> str | None:
        state = str(client.get_run(scheduled_dag, run_id)["state"])
        return state if state in ("success", "failed") else None

    assert wait_until(run_ended, f"run {run_id} of {scheduled_dag}", timeout=300) == "success"
    scheduled_job = job_id_for_run(TENANT_B, name, run_id)
    assert client.get_run(dag_id_for_tenant(TENANT_B), scheduled_job)["state"] == "success"
    for job_id in [scheduled_job, *submitted]:
        final = wait_for_end(client, deployment.stores[TENANT_B], job_id)
        assert final.state is JobState.SUCCEEDED, f"{job_id}: {final}"
    intervals = [learner_interval(deployment, job_id) for job_id in [scheduled_job, *submitted]]
    assert most_at_once(intervals) <= B_RUNNING_JOBS


def test_a_job_over_the_whole_quota_fails_validation_as_a_resource_error(
    deployment: Deployment, client: AirflowClient
) -> None:
    job_id = trigger(client, manifest(TENANT_B, "too-big", gpus=2, learners=2))
    final = wait_for_end(client, deployment.stores[TENANT_B], job_id)
    assert final.state is JobState.FAILED
    tasks = {ti["task_id"]: ti for ti in client.task_instances(final.dag_id, job_id)}
    assert tasks["validate"]["state"] == "failed"
    assert tasks["validate"]["try_number"] == 1  # no retry can make it fit
    assert tasks["learner"]["state"] == "upstream_failed"  # it never waited in the pool
    log = "\n".join(client.task_log(final.dag_id, job_id, "validate", 1))
    assert "[resource_error] resources.gpus" in log
    assert "gpu_quota" in log  # the fix is named


def test_submit_rejects_a_job_over_the_quota_before_triggering(
    deployment: Deployment, client: AirflowClient
) -> None:
    job = manifest(TENANT_A, "too-many-learners", learners=5)  # CPU job; cpu_quota is 4
    path = deployment.root / "too-many-learners.json"
    path.write_text(json.dumps(job))
    result = deployment.cluster.trainyard("submit", str(path), check=False)
    assert result.returncode == 2
    assert "resources.learners" in result.stderr
    assert "cpu_quota" in result.stderr
    runs = client.list_runs(dag_id_for_tenant(TENANT_A))
    assert not any(
        (run.get("conf") or {}).get("manifest", {}).get("name") == job["name"] for run in runs
    )


def test_no_credential_reaches_xcoms_logs_or_the_job_record(
    deployment: Deployment, client: AirflowClient, s3_server: S3Server
) -> None:
    """An S3 tenant's job: its keys (Airflow's connection, the CLI's environment) appear in no
    XCom, no task log, no learner log and not in the job record."""
    job_id = trigger(client, manifest(TENANT_A, "leak-check"))
    store = deployment.stores[TENANT_A]
    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final
    secrets = {
        deployment.acme_keys.access_key,
        deployment.acme_keys.secret_key,
        s3_server.access_key,
        s3_server.secret_key,
    }
    places: dict[str, str] = {"job id": job_id}
    base = f"/dags/{final.dag_id}/dagRuns/{job_id}/taskInstances"
    for ti in client.task_instances(final.dag_id, job_id):
        task_id = ti["task_id"]
        entries = client.request("GET", f"{base}/{task_id}/xcomEntries")["xcom_entries"]
        for entry in entries:
            value = client.request("GET", f"{base}/{task_id}/xcomEntries/{entry['key']}")
            places[f"xcom {task_id}/{entry['key']}"] = json.dumps(value)
        for try_number in range(1, int(ti["try_number"] or 0) + 1):
            log = client.task_log(final.dag_id, job_id, task_id, try_number)
            places[f"log {task_id}#{try_number}"] = "\n".join(log)
    for info in store.list(JobLayout(job_id).logs):
        places[info.key] = store.get_bytes(info.key).decode(errors="replace")
    places["job record"] = store.get_bytes(JobLayout(job_id).record).decode()
    assert any(name.startswith("xcom validate") for name in places)  # the job id went by XCom
    assert any(name.startswith("log learner") for name in places)
    leaks = [name for name, text in places.items() if any(key in text for key in secrets)]
    assert leaks == []


#: A job that tries to become platform admin: read Airflow's files (the API's signing secret
#: among them), mint a token, call the API with it. It reports each try in its results.
INTRUDER = textwrap.dedent(
    """
    import json, os, time, urllib.request
    from pathlib import Path

    targets = json.loads(Path("targets.json").read_text())
    home = targets["airflow_home"]
    report = {}

    def attempt(name, tried, action):
        try:
            got = action()
        except Exception as error:
            report[name] = {"tried": tried, "denied": True, "detail": repr(error)}
        else:
            report[name] = {"tried": tried, "denied": not got, "detail": repr(got)[:500]}

    secret = {}
    def read_secret():
        secret.update(json.loads(Path(home, "trainyard-secrets.json").read_text()))
        return secret
    cfg, db = Path(home, "airflow.cfg"), Path(home, "airflow.db")
    attempt("read airflow.cfg", str(cfg), lambda: cfg.read_text())
    attempt("read the metadata DB", str(db), lambda: db.read_bytes())
    attempt("read the API's signing secret", f"{home}/trainyard-secrets.json", read_secret)
    attempt("list AIRFLOW_HOME", home, lambda: os.listdir(home))
    own = os.environ["TRAINYARD_RESULT_DIR"]  # what of the deployment it may see: that path
    root = targets["root"]
    attempt(
        "list the deployment",
        root,
        lambda: [n for n in os.listdir(root) if not own.startswith(os.path.join(root, n) + "/")],
    )

    def call_api():
        headers = {}
        if secret:
            import jwt
            now = int(time.time())
            claims = {"sub": "admin", "role": "ADMIN", "teams": [], "nbf": now, "iat": now,
                      "exp": now + 300, "jti": "x"}
            headers["Authorization"] = "Bearer " + jwt.encode(claims, secret["jwt"], "HS512")
        request = urllib.request.Request(targets["api"] + "/api/v2/connections", headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read()
    attempt("call the API as admin", f"GET {targets['api']}/api/v2/connections", call_api)

    results = os.environ["TRAINYARD_RESULT_DIR"]
    Path(results, "report.json").write_text(json.dumps(report))
    Path(results, "model.txt").write_text("trained anyway")
    with open(os.environ["TRAINYARD_METRICS_FILE"], "a") as metrics:
        metrics.write(json.dumps({"step": 1, "loss": 0.1}) + "\\n")
    """
)
INTRUSIONS = [
    "read airflow.cfg",
    "read the metadata DB",
    "read the API's signing secret",
    "list AIRFLOW_HOME",
    "list the deployment",
    "call the API as admin",
]


@pytest.fixture(scope="module")
def intrusion(deployment: Deployment, client: AirflowClient) -> dict[str, dict[str, Any]]:
    """The intruder's report, after its job (of tenant B, local storage) succeeded."""
    code = deployment.root / "intruder"
    code.mkdir()
    (code / "intruder.py").write_text(INTRUDER)
    targets = {
        "airflow_home": str(deployment.cluster.home),
        "root": str(deployment.root),
        "api": deployment.cluster.api_url,
    }
    (code / "targets.json").write_text(json.dumps(targets))
    deployment.cluster.trainyard("data", "upload", str(code), "code/intruder", "--tenant", TENANT_B)
    job = manifest(TENANT_B, "intruder") | {
        "code": {"uri": "code/intruder"},
        "command": "python intruder.py",
    }
    job_id = trigger(client, job)
    store = deployment.stores[TENANT_B]
    final = wait_for_end(client, store, job_id)
    assert final.state is JobState.SUCCEEDED, final.failure
    report: dict[str, dict[str, Any]] = json.loads(
        store.get_bytes(f"{JobLayout(job_id).results}/report.json")
    )
    return report


@pytest.mark.parametrize("name", INTRUSIONS)
def test_a_jobs_code_cannot_reach_airflows_files_or_become_admin(
    intrusion: dict[str, dict[str, Any]], name: str
) -> None:
    entry = intrusion[name]
    assert entry["denied"], f"{name}: {entry['tried']} gave {entry['detail']}"


#: A job that runs long enough to be watched, queued behind others and cancelled: a metric row
#: with its step of the total every second.
STEPPER = textwrap.dedent(
    """
    import json, os, time

    total = 40
    for step in range(1, total + 1):
        time.sleep(1)
        with open(os.environ["TRAINYARD_METRICS_FILE"], "a") as metrics:
            metrics.write(json.dumps({"step": step, "total_steps": total, "time": time.time()}))
            metrics.write("\\n")
    with open(os.path.join(os.environ["TRAINYARD_RESULT_DIR"], "model.txt"), "w") as model:
        model.write("trained")
    """
)


def readings(deployment: Deployment, client: AirflowClient, job_id: str) -> dict[str, Any]:
    """The job as `trainyard list`, `trainyard status` and the page's API show it."""
    tenant = job_id.split(".")[0]
    cli = deployment.cluster.trainyard
    listed = json.loads(cli("list", "--tenant", tenant, "--json").stdout)
    page = client.request("GET", f"/tenants/{tenant}/jobs", api="/trainyard/api")["jobs"]
    return {
        "list": next(job for job in listed if job["job_id"] == job_id),
        "status": json.loads(cli("status", job_id, "--json").stdout),
        "page": next(job for job in page if job["job_id"] == job_id),
    }


def agreed(deployment: Deployment, client: AirflowClient, job_id: str) -> dict[str, Any]:
    """What the list, the status and the page agree on (they must): state, attempt, progress,
    step and start."""
    seen = readings(deployment, client, job_id)
    fields = {
        where: {
            "state": job["state"],
            "attempt": job["attempt"],
            "progress": job["progress"],
            "step": job["step"],
            "started_at": job["started_at"] and datetime.fromisoformat(job["started_at"]),
        }
        for where, job in seen.items()
    }
    assert fields["list"] == fields["status"] == fields["page"], fields
    return fields["page"]


def learners_gone(job_id: str) -> bool:
    """Whether the job's learner processes (runtime and user command) have exited: its last
    metric rows are uploaded."""
    return not learner_processes(job_id, user_code=False) + learner_processes(
        job_id, user_code=True
    )


def test_queued_cancelled_and_running_jobs_read_the_same_in_the_cli_and_the_pages(
    deployment: Deployment, client: AirflowClient
) -> None:
    """B runs at most 2 jobs: of 3, one waits, `queued` everywhere; cancelled while queued it
    never runs; cancelled while running it ends `cancelled` everywhere; list, status and page
    agree on attempt and progress. Meanwhile an S3 tenant's job is listed by the page, whose
    API server holds no tenant's storage keys."""
    code = deployment.root / "stepper"
    code.mkdir(exist_ok=True)
    (code / "stepper.py").write_text(STEPPER)
    deployment.cluster.trainyard("data", "upload", str(code), "code/stepper", "--tenant", TENANT_B)
    stepper = {"code": {"uri": "code/stepper"}, "command": "python stepper.py"}
    jobs = [trigger(client, manifest(TENANT_B, f"stepper-{i}") | stepper) for i in range(3)]
    s3_job = trigger(client, manifest(TENANT_A, "listed"))
    dag_id = dag_id_for_tenant(TENANT_B)

    def two_running_one_queued() -> dict[str, list[str]] | None:
        states: dict[str, list[str]] = {}
        for job_id in jobs:
            states.setdefault(str(client.get_run(dag_id, job_id)["state"]), []).append(job_id)
        ok = len(states.get("running", [])) == B_RUNNING_JOBS and len(states.get("queued", [])) == 1
        return states if ok else None

    states = wait_until(two_running_one_queued, "two of B's jobs running, one queued")
    [waiting], running = states["queued"], states["running"]
    assert agreed(deployment, client, waiting)["state"] == "queued"
    detail = client.request("GET", f"/tenants/{TENANT_B}/jobs/{waiting}", api="/trainyard/api")
    assert (detail["job"]["state"], detail["job"]["terminal"]) == ("queued", False)

    deployment.cluster.trainyard("cancel", waiting)
    assert client.get_run(dag_id, waiting)["state"] == "failed"
    assert agreed(deployment, client, waiting) == {
        "state": "cancelled",
        "attempt": 0,
        "progress": None,
        "step": None,
        "started_at": None,
    }

    store = deployment.stores[TENANT_B]
    cancelled, finishing = running
    wait_until(
        lambda: any(row.get("step", 0) >= 3 for row in read_metrics(store, cancelled)),
        f"{cancelled} to report step 3",
    )
    deployment.cluster.trainyard("cancel", cancelled)
    assert wait_for_end(client, store, cancelled).state is JobState.CANCELLED
    wait_until(lambda: learners_gone(cancelled), f"{cancelled}'s learners to exit")
    stopped = agreed(deployment, client, cancelled)
    assert (stopped["state"], stopped["attempt"]) == ("cancelled", 1)
    assert 0 < stopped["progress"] < 1

    assert wait_for_end(client, store, finishing).state is JobState.SUCCEEDED
    done = agreed(deployment, client, finishing)
    assert (done["state"], done["attempt"], done["progress"]) == ("succeeded", 1, 1.0)
    # Both slots are free again, and the job cancelled while queued never ran.
    for ti in client.task_instances(dag_id, waiting):
        assert not ti["try_number"], ti
    assert read_metrics(store, waiting) == []
    assert agreed(deployment, client, waiting)["state"] == "cancelled"

    assert wait_for_end(client, deployment.stores[TENANT_A], s3_job).state is JobState.SUCCEEDED
    assert agreed(deployment, client, s3_job)["state"] == "succeeded"
    assert_no_tenant_keys_in_the_api_server(deployment)


def assert_no_tenant_keys_in_the_api_server(deployment: Deployment) -> None:
    """Neither a name nor a value of a tenant's storage keys is in the environment of any
    process of the API server (its workers included)."""
    server = psutil.Process(deployment.cluster.processes["api-server"].pid)
    processes = [server, *server.children(recursive=True)]
    secrets = {deployment.acme_keys.access_key, deployment.acme_keys.secret_key}
    for name, value in deployment.cluster.env.items():
        if name.startswith(("TRAINYARD_S3", "AIRFLOW_CONN_TRAINYARD_STORAGE")):
            secrets.add(value)
    assert len(processes) > 1  # the server and its workers
    for process in processes:
        environ = Path(f"/proc/{process.pid}/environ").read_bytes().decode(errors="replace")
        names = [entry.split("=", 1)[0] for entry in environ.split("\0")]
        assert not [n for n in names if n.startswith(("TRAINYARD_S3", "AIRFLOW_CONN_TRAINYARD"))]
        assert not [secret for secret in secrets if secret in environ], process.cmdline()
