"""(4) Scale of the control plane: parsing the DAG file, and a burst of submissions.

Parsing: `dags/trainyard_tenants.py` builds one DAG per tenant and one per scheduled job
manifest. The DAG processor parses it in a process forked from one that has Airflow, not
Trainyard, imported, and serialises every DAG; every task also parses the file when it starts,
with Airflow's parsing context naming its DAG, so it builds only what that DAG needs. Each
sample is a fresh process doing exactly that, for configs of 2 tenants, 100 tenants, and 100
tenants with 1000 scheduled jobs, interleaved.

Submissions: through the REST API with the CLI's client and job ids, one after another (a
shell loop of `trainyard submit`) and as a burst from parallel clients, on the embedded
default (its private PostgreSQL, the LocalExecutor); counted as accepted, refused and lost
(accepted but never listed), timed until all are answered and until all are listed as
queued, while another client polls the health endpoint throughout.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.common import Context, Figure, Table, Target, poll_until
from bench.overhead import DAG_ID, TENANT
from devkit.airflow_env import REPO_ROOT, airflow_healthy
from trainyard.cli.client import AirflowClient, ApiError, ApiSettings
from trainyard.jobs.layout import new_job_id
from trainyard.manifest.submission import example_manifest
from trainyard.tenancy.names import dag_id_for_job, dag_id_for_tenant

DAG_FILE = REPO_ROOT / "dags" / "trainyard_tenants.py"
FULL_BURST = 200
QUICK_BURST = 20
CLIENTS = 8  # parallel submitters
#: No new submission starts this long after a burst began.
FULL_DEADLINE = 60.0
QUICK_DEADLINE = 30.0
#: Every submission of a team's burst is answered within this.
ANSWERED_TARGET = 20.0
LIST_TIMEOUT = 120.0
HEALTH_POLL_SECONDS = 0.5
#: Airflow's limits for importing a DAG file and for a DAG processor's whole parse.
IMPORT_TIMEOUT = 30.0  # [core] dagbag_import_timeout
PROCESSOR_TIMEOUT = 50.0  # [dag_processor] dag_file_processor_timeout
#: The DAGs whose tasks' parse is measured: a tenant's, and one of its scheduled jobs'.
TASK_DAG = dag_id_for_tenant("tenant-000")
SCHEDULED_TASK_DAG = dag_id_for_job("tenant-000", "job-0000")
SCHEDULED_EXAMPLE = REPO_ROOT / "config" / "jobs" / "acme" / "digits-nightly.yaml"
LISTED_STATES = {"queued", "running", "success", "failed"}


@dataclass(frozen=True)
class Scale:
    """A deployment size: tenants, and scheduled job manifests spread evenly over them."""

    tenants: int
    scheduled: int = 0

    def __str__(self) -> str:
        jobs = f" + {self.scheduled} scheduled jobs" if self.scheduled else ""
        return f"{self.tenants} tenants{jobs}"


FULL_SCALES = (Scale(2), Scale(100), Scale(100, 1000))
QUICK_SCALES = (Scale(2), Scale(100), Scale(100, 100))


def write_config(root: Path, scale: Scale) -> Path:
    """A deployment config of `scale`; scheduled jobs are copies of the shipped nightly job,
    every other one triggered by new data instead of cron."""
    config: dict[str, Any] = {
        "learner_backend": "local",
        "work_dir": str(root / "work"),
        "tenants": [
            {"name": f"tenant-{index:03d}", "storage": {"kind": "local", "root": str(root / "s")}}
            for index in range(scale.tenants)
        ],
    }
    if scale.scheduled:
        template = yaml.safe_load(SCHEDULED_EXAMPLE.read_text())
        config["jobs_dir"] = str(root / "jobs")
        for index in range(scale.scheduled):
            tenant, name = f"tenant-{index % scale.tenants:03d}", f"job-{index:04d}"
            schedule = template["schedule"] if index % 2 else {"on_new_data": "datasets/digits"}
            folder = root / "jobs" / tenant
            folder.mkdir(parents=True, exist_ok=True)
            manifest = {**template, "name": name, "tenant": tenant, "schedule": schedule}
            (folder / f"{name}.yaml").write_text(yaml.safe_dump(manifest))
    path = root / "trainyard.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def parse_in_fresh_process(
    ctx: Context, config: Path, task_dag: str | None = None
) -> dict[str, float]:
    """One sample of `measure_parse`, in a new interpreter with its own AIRFLOW_HOME: as the
    DAG processor parses, or (with `task_dag`) as a task of that DAG does."""
    home = ctx.scratch("airflow-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILE.parent),
        "TRAINYARD_CONFIG": str(config),
    }
    if task_dag is not None:
        env["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = task_dag
    result = subprocess.run(
        [sys.executable, "-m", "bench.control_plane"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"parsing {DAG_FILE} failed:\n{result.stdout}\n{result.stderr}")
    measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def measure_parse() -> None:
    """Print (as a JSON line) what parsing the DAG file costs a task and the DAG processor."""
    import airflow.sdk  # noqa: F401  (loaded in the processes parsers and tasks fork from)
    import structlog
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.dag_processing.processor import _serialize_dags

    def parse() -> BundleDagBag:
        return BundleDagBag(
            dag_folder=str(DAG_FILE),
            bundle_path=DAG_FILE.parent,
            bundle_name="dags-folder",
            load_op_links=False,
        )

    started = time.perf_counter()
    bag = parse()
    cold = time.perf_counter() - started
    if bag.import_errors:
        raise RuntimeError(f"import errors: {bag.import_errors}")
    started = time.perf_counter()
    serialised, errors = _serialize_dags(bag, structlog.get_logger())
    serialise = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"serialisation errors: {errors}")
    started = time.perf_counter()
    parse()
    warm = time.perf_counter() - started
    print(json.dumps({"cold": cold, "serialise": serialise, "warm": warm, "dags": len(serialised)}))


def parsing(ctx: Context) -> list[Table]:
    scales = QUICK_SCALES if ctx.quick else FULL_SCALES
    configs = {scale: write_config(ctx.scratch("deployment-config"), scale) for scale in scales}
    task = {
        scale: Figure(f"task start-up parse, a job's task, {scale}", "s", digits=3)
        for scale in scales
    }
    scheduled_task = {
        scale: Figure(f"task start-up parse, a scheduled job's task, {scale}", "s", digits=3)
        for scale in scales
        if scale.scheduled
    }
    processor = {
        scale: Figure(f"DAG processor parse + serialise, {scale}", "s", digits=3)
        for scale in scales
    }
    build = {scale: Figure(f"building the DAGs only, {scale}", "s", digits=3) for scale in scales}
    for scale in scales:
        for figure in (task[scale], scheduled_task.get(scale)):
            if figure is not None:
                figure.target = Target(IMPORT_TIMEOUT, why="dagbag_import_timeout")
        processor[scale].target = Target(PROCESSOR_TIMEOUT, why="dag_file_processor_timeout")
    # The largest scale takes a minute per sample: it gets the repeats of a slow benchmark.
    for repeat in range(max(ctx.cheap_repeats, ctx.repeats)):
        for scale, config in configs.items():
            if repeat >= (ctx.repeats if scale is scales[-1] else ctx.cheap_repeats):
                continue
            measured = parse_in_fresh_process(ctx, config)
            if measured["dags"] != scale.tenants + scale.scheduled:
                raise RuntimeError(f"{measured['dags']} DAGs parsed for {scale}")
            processor[scale].add(measured["cold"] + measured["serialise"])
            build[scale].add(measured["warm"])
            task[scale].add(parse_in_fresh_process(ctx, config, TASK_DAG)["cold"])
            if scale in scheduled_task:
                scheduled = parse_in_fresh_process(ctx, config, SCHEDULED_TASK_DAG)
                scheduled_task[scale].add(scheduled["cold"])
    notes = [
        "one DAG file builds every DAG for the DAG processor; a task builds only what its DAG "
        "needs: a job's task (a run of a tenant's DAG) that DAG, a scheduled job's task its "
        "tenant's DAGs (10 scheduled jobs per tenant at 100 + 1000)",
        "task start-up parse: the first parse in a process (Trainyard's modules not yet "
        "imported), as in a task forked by the LocalExecutor",
        "building the DAGs only: the same parse again in the same process (modules cached)",
        "limits: Airflow's defaults, which the embedded deployment keeps",
    ]
    return [
        Table(
            "Control plane: parsing the DAG file",
            [*task.values(), *scheduled_task.values(), *processor.values(), *build.values()],
            notes,
        )
    ]


@dataclass
class Burst:
    """What one burst of submissions came to."""

    accepted: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (job id, reason)
    collisions: int = 0  # job ids the CLI's scheme made twice
    latencies: list[float] = field(default_factory=list)
    answered: float = 0.0  # seconds until every submission had its answer
    listed: set[str] = field(default_factory=set)
    listed_after: float | None = None  # seconds until every accepted run was listed
    health_polls: int = 0  # health endpoint polls while the burst ran
    unhealthy_polls: int = 0  # ... that did not find every component healthy within 2 s


def burst_once(ctx: Context, clients: list[AirflowClient], size: int) -> Burst:
    """`size` submissions from `clients` in parallel threads, each client one at a time, while
    another thread polls the health endpoint."""
    name = f"burst-{secrets.token_hex(3)}"
    conf = {"manifest": {**example_manifest(TENANT), "name": name}}
    outcome = Burst()
    tickets = iter(range(size))
    generated: set[str] = set()
    lock = threading.Lock()
    deadline = time.perf_counter() + (QUICK_DEADLINE if ctx.quick else FULL_DEADLINE)
    done = threading.Event()

    def submit(client: AirflowClient) -> None:
        while True:
            with lock:
                if next(tickets, None) is None or time.perf_counter() > deadline:
                    return
                job_id = new_job_id(TENANT, name)  # as `trainyard submit` makes it
                outcome.collisions += job_id in generated
                generated.add(job_id)
            started = time.perf_counter()
            try:
                client.trigger_run(DAG_ID, job_id, conf)
            except (ApiError, httpx.HTTPError) as error:
                with lock:
                    outcome.errors.append((job_id, _reason(error)))
                continue
            with lock:
                outcome.accepted.append(job_id)
                outcome.latencies.append(time.perf_counter() - started)

    def poll_health() -> None:
        while not done.is_set():
            outcome.health_polls += 1
            outcome.unhealthy_polls += not airflow_healthy(clients[0].settings.url)
            done.wait(HEALTH_POLL_SECONDS)

    health = threading.Thread(target=poll_health)
    threads = [threading.Thread(target=submit, args=(client,)) for client in clients]
    started = time.perf_counter()
    health.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcome.answered = time.perf_counter() - started
    done.set()
    health.join()

    def all_listed() -> bool:
        with contextlib.suppress(ApiError, httpx.HTTPError):
            outcome.listed = _listed(clients[0], f"{TENANT}.{name}.")
        return set(outcome.accepted) <= outcome.listed

    with contextlib.suppress(TimeoutError):  # whatever is still missing counts as lost
        poll_until(all_listed, "every accepted run to be listed", timeout=LIST_TIMEOUT)
        outcome.listed_after = time.perf_counter() - started
    return outcome


def burst(ctx: Context) -> list[Table]:
    """Loops of submissions from one client and bursts from parallel clients, interleaved."""
    size = QUICK_BURST if ctx.quick else FULL_BURST
    env = ctx.deployment().cluster.env
    clients = [AirflowClient(ApiSettings.from_env(env)) for _ in range(CLIENTS)]
    for client in clients:  # log in before the clock starts
        client.request("GET", "/version")
    variants = {"sequential": clients[:1], "parallel": clients}
    rows = {variant: _burst_figures(variant, size) for variant in variants}
    reasons: collections.Counter[str] = collections.Counter()
    collisions = 0
    clients[0].request("PATCH", f"/dags/{DAG_ID}", json={"is_paused": True})
    try:
        for variant in list(variants) * ctx.repeats:
            outcome = burst_once(ctx, variants[variant], size)
            figures = rows[variant]
            figures["accepted"].add(len(outcome.accepted))
            figures["refused"].add(len(outcome.errors))
            figures["skipped"].add(size - len(outcome.accepted) - len(outcome.errors))
            figures["lost"].add(len(set(outcome.accepted) - outcome.listed))
            figures["phantom"].add(sum(job_id in outcome.listed for job_id, _ in outcome.errors))
            figures["unhealthy"].add(outcome.unhealthy_polls)
            figures["answered"].add(outcome.answered)
            figures["latency"].samples.extend(outcome.latencies)
            if outcome.accepted and outcome.listed_after is not None:
                figures["listed"].add(outcome.listed_after)
            reasons.update(f"{variant}: {reason}" for _, reason in outcome.errors)
            collisions += outcome.collisions
    finally:
        for each in clients:
            each.close()
    notes = [
        f"parallel: {CLIENTS} clients; no new submission starts "
        f"{QUICK_DEADLINE if ctx.quick else FULL_DEADLINE} s after a burst began",
        "the DAG is paused, so runs stay queued and only the API and the DB are measured",
        f"health: GET /api/v2/monitor/health every {HEALTH_POLL_SECONDS} s while a burst runs; "
        "a poll is unhealthy if a component is not healthy or no answer comes within 2 s",
        *(
            f"latency p99, {variant}: {_percentile(figures['latency'].samples, 99):.3f} s"
            for variant, figures in rows.items()
            if figures["latency"].samples
        ),
        f"job id collisions of the CLI's id scheme: {collisions}",
        *(f"refused {count}x, {reason}" for reason, count in reasons.most_common(4)),
    ]
    return [
        Table(
            f"Control plane: {size} submissions through the REST API (embedded PostgreSQL)",
            [figure for figures in rows.values() for figure in figures.values()],
            notes,
        )
    ]


def _burst_figures(variant: str, size: int) -> dict[str, Figure]:
    def count(label: str, target: Target) -> Figure:
        return Figure(f"{variant}: {label}", "", target=target, digits=0)

    answered = Figure(f"{variant}: time until every submission is answered", "s")
    if variant == "parallel":
        answered.target = Target(ANSWERED_TARGET, why="a team's burst")
    return {
        "accepted": count(f"accepted of {size}", Target(size, at_most=False, every=True)),
        "refused": count("refused or timed out", Target(0, every=True)),
        "skipped": count("not tried before the deadline", Target(0, every=True)),
        "lost": count("lost (accepted, never listed)", Target(0, every=True)),
        "phantom": count("refused to the client, but created", Target(0, every=True)),
        "unhealthy": count("health polls not healthy during the burst", Target(0, every=True)),
        "answered": answered,
        "latency": Figure(f"{variant}: latency of an accepted submission (p50)", "s", digits=3),
        "listed": Figure(f"{variant}: time until all accepted are listed queued", "s"),
    }


def _reason(error: Exception) -> str:
    """Why a submission failed, without the parts that differ per request (job id, error id)."""
    text = str(error) if isinstance(error, ApiError) else f"{type(error).__name__}: {error}"
    text = re.sub(rf"{TENANT}\.burst-[\w.-]+", "<job id>", text)
    return re.sub(r"ID \w+", "ID <id>", text)[:240]


def _percentile(samples: list[float], percent: int) -> float:
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[percent - 1]


def _listed(client: AirflowClient, prefix: str) -> set[str]:
    """Run ids starting with `prefix` in a listed state, page by page."""
    found: set[str] = set()
    offset = 0
    while True:
        page = client.request(
            "GET",
            f"/dags/{DAG_ID}/dagRuns",
            params={"run_id_prefix_pattern": prefix, "limit": 100, "offset": offset},
        )
        runs = page["dag_runs"]
        found.update(run["dag_run_id"] for run in runs if run["state"] in LISTED_STATES)
        offset += len(runs)
        if not runs or offset >= page["total_entries"]:
            return found


if __name__ == "__main__":
    measure_parse()
