"""(4) Scale of the control plane: parsing the tenants' DAG file, and a burst of submissions.

Parsing: `dags/trainyard_tenants.py` builds one DAG per tenant. The DAG processor parses it in a
process forked from one that has Airflow, not Trainyard, imported, and serialises every DAG;
every task also parses the whole file when it starts (to find its own DAG). Each sample is a
fresh process doing exactly that, with a config of 2 tenants and one of 100, interleaved.

Burst: submissions through the REST API with the CLI's client and job ids, from parallel
clients; counted as accepted, rejected and lost (accepted but never listed), timed until all
are accepted and until all are listed as queued (or further).
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
from pathlib import Path
from typing import Any

import yaml

from bench.common import Context, Figure, Table, Target, poll_until
from trainyard.airflow_env import REPO_ROOT
from trainyard.client import AirflowClient, ApiError, ApiSettings
from trainyard.jobs import new_job_id
from trainyard.submission import example_manifest

TENANT_COUNTS = (2, 100)
DAG_FILE = REPO_ROOT / "dags" / "trainyard_tenants.py"
TENANT = "globex"
DAG_ID = "trainyard_globex"
FULL_BURST = 200
QUICK_BURST = 20
CLIENTS = 16  # concurrent submitters
#: Airflow's own limit for importing a DAG file ([core] dagbag_import_timeout).
IMPORT_TIMEOUT = 30.0
LISTED_STATES = {"queued", "running", "success", "failed"}


def write_config(path: Path, tenants: int) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "learner_backend": "local",
                "work_dir": str(path.parent / "work"),
                "tenants": [
                    {
                        "name": f"tenant-{index:03d}",
                        "storage": {"kind": "local", "root": str(path.parent / f"t{index:03d}")},
                    }
                    for index in range(tenants)
                ],
            }
        )
    )
    return path


def parse_in_fresh_process(ctx: Context, config: Path) -> dict[str, float]:
    """One sample of `measure_parse`, in a new interpreter with its own AIRFLOW_HOME."""
    home = ctx.scratch("airflow-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILE.parent),
        "TRAINYARD_CONFIG": str(config),
    }
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


def parsing(ctx: Context) -> Table:
    configs = {
        n: write_config(ctx.scratch(f"tenants-{n}") / "trainyard.yaml", n) for n in TENANT_COUNTS
    }
    task = {n: Figure(f"task start-up parse, {n} tenants", "s", digits=3) for n in TENANT_COUNTS}
    processor = {
        n: Figure(f"DAG processor parse + serialise, {n} tenants", "s", digits=3)
        for n in TENANT_COUNTS
    }
    build = {
        n: Figure(f"building the DAGs only, {n} tenants", "s", digits=3) for n in TENANT_COUNTS
    }
    processor[TENANT_COUNTS[-1]].target = Target(IMPORT_TIMEOUT, why="dagbag_import_timeout")
    for _ in range(ctx.cheap_repeats):
        for tenants, config in configs.items():
            measured = parse_in_fresh_process(ctx, config)
            if measured["dags"] != tenants:
                raise RuntimeError(f"{measured['dags']} DAGs parsed for {tenants} tenants")
            task[tenants].add(measured["cold"])
            processor[tenants].add(measured["cold"] + measured["serialise"])
            build[tenants].add(measured["warm"])
    figures = [*task.values(), *processor.values(), *build.values()]
    figures.append(Figure("1000 scheduled job manifests", "", text="not built yet"))
    notes = [
        "task start-up parse: the first parse in a process (Trainyard's modules not yet "
        "imported), as in a task forked by the LocalExecutor",
        "building the DAGs only: the same parse again in the same process (modules cached)",
    ]
    return Table("Control plane: parsing the tenants' DAG file", figures, notes)


def burst(ctx: Context) -> Table:
    """A shell loop of submissions (one client) and a burst from parallel clients, alternating."""
    size = QUICK_BURST if ctx.quick else FULL_BURST
    env = ctx.deployment().cluster.env
    clients = [AirflowClient(ApiSettings.from_env(env)) for _ in range(CLIENTS)]
    for client in clients:  # log in before the clock starts
        client.request("GET", "/version")
    variants = {"1 client": clients[:1], f"{CLIENTS} clients": clients}
    figures: dict[str, list[Figure]] = {}
    for variant in variants:
        figures[variant] = [
            Figure(f"accepted of {size}, {variant}", "", target=Target(size, at_most=False)),
            Figure(f"lost (accepted, never listed), {variant}", "", target=Target(0)),
            Figure(f"time to accept all, {variant}", "s"),
            Figure(f"latency of one submission, {variant}", "s", digits=3),
            Figure(f"time until all accepted are listed as queued, {variant}", "s"),
        ]
        figures[variant][0].digits = figures[variant][1].digits = 0
    rejections: collections.Counter[str] = collections.Counter()
    try:
        for repeat in range(ctx.repeats):
            order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
            for variant in order:
                outcome = burst_once(variants[variant], size)
                accepted, lost, accept_time, latency, listed = figures[variant]
                accepted.add(len(outcome["accepted"]))
                lost.add(len(outcome["lost"]))
                accept_time.add(outcome["accept_time"])
                latency.samples.extend(outcome["latencies"])
                listed.add(outcome["listed_time"])
                rejections.update(f"{variant}: {reason}" for reason in outcome["rejected"])
    finally:
        for client in clients:
            client.close()
    notes = [
        "job ids made as `trainyard submit` makes them; the tenant runs 4 jobs at once, the "
        "rest wait queued; the DAG is paused after each burst so it does not load the next",
        *(
            f"latency p95, {variant}: {_p95(rows[3].samples):.3f} s"
            for variant, rows in figures.items()
            if rows[3].samples
        ),
        *(f"rejected {count}x, {reason}" for reason, count in rejections.most_common()),
    ]
    return Table(
        f"Control plane: {size} submissions through the REST API (SQLite metadata DB)",
        [figure for rows in figures.values() for figure in rows],
        notes,
    )


def _reason(error: ApiError) -> str:
    """The rejection without the parts that differ per request (job id, error id)."""
    text = re.sub(rf"{TENANT}\.burst-[\w.-]+", "<job id>", str(error))
    return re.sub(r"ID \w+", "ID <id>", text)[:300]


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 2 else samples[0]


def burst_once(clients: list[AirflowClient], size: int) -> dict[str, Any]:
    name = f"burst-{secrets.token_hex(3)}"
    conf = {"manifest": {**example_manifest(TENANT), "name": name}}
    job_ids = [new_job_id(TENANT, name) for _ in range(size)]
    accepted: list[str] = []
    rejected: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def submit(client: AirflowClient, mine: list[str]) -> None:
        for job_id in mine:
            started = time.perf_counter()
            try:
                client.trigger_run(DAG_ID, job_id, conf)
            except ApiError as error:
                with lock:
                    rejected.append(_reason(error))
                continue
            seconds = time.perf_counter() - started
            with lock:
                accepted.append(job_id)
                latencies.append(seconds)

    clients[0].request("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    threads = [
        threading.Thread(target=submit, args=(client, job_ids[index :: len(clients)]))
        for index, client in enumerate(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accept_time = time.perf_counter() - started

    def missing() -> set[str]:
        return set(accepted) - _listed(clients[0], f"{TENANT}.{name}.")

    with contextlib.suppress(TimeoutError):  # what is still missing counts as lost
        poll_until(lambda: not missing(), "every accepted run to be listed", timeout=120)
    listed_time = time.perf_counter() - started
    clients[0].request("PATCH", f"/dags/{DAG_ID}", json={"is_paused": True})
    return {
        "accepted": accepted,
        "rejected": rejected,
        "lost": missing(),
        "accept_time": accept_time,
        "listed_time": listed_time,
        "latencies": latencies,
    }


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


def run(ctx: Context) -> list[Table]:
    return [parsing(ctx), burst(ctx)]


if __name__ == "__main__":
    measure_parse()
