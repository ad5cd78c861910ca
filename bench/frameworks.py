"""(6) Frameworks: the platform overhead per framework, and what a framework environment costs.

Overhead: each framework's digits example run bare (its environment's `python <script>`, the
same environment contract) vs submitted through Trainyard (tenant globex, local storage) up
to the run's success, evaluation included, as in (1).

Environments: `Environments.prepare` on an empty cache directory (first use: uv creates the
virtual environment and installs the pins; the wheels come from uv's cache when a previous
environment downloaded them, as on any machine after its first `make envs`) vs on the ready
one (reuse: a lock, a stamp check, the runtime's copy compared).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import (
    Context,
    Figure,
    Table,
    poll_until,
    run_bare,
    wall,
)
from devkit.deployment import EXAMPLES
from trainyard.backends.local.environments import Environments, provided_frameworks
from trainyard.tenancy.names import dag_id_for_tenant

TENANT = "globex"
DAG_ID = dag_id_for_tenant(TENANT)
EPOCHS = 8  # the examples' own job.yaml: seconds of training
QUICK_EPOCHS = 2
INTERVAL = 10.0  # the examples' checkpoint interval


def _ended(ctx: Context, job_id: str) -> dict[str, Any] | None:
    run = ctx.client().get_run(DAG_ID, job_id)
    return run if run["state"] in ("success", "failed") else None


def run_platform(ctx: Context, framework: str, epochs: int, name: str) -> float:
    """Seconds from `trainyard submit` to the run's success (Airflow's own end date)."""
    deployment = ctx.deployment()
    example = EXAMPLES[framework]
    command = yaml.safe_load((example / "job.yaml").read_text())["command"]
    manifest = deployment.write_manifest(
        TENANT,
        f"{name}.yaml",
        example=example,
        name=name,
        command=command.replace("--epochs 8", f"--epochs {epochs}"),
    )
    submitted = time.time()
    job_id = deployment.submit(manifest)
    run = poll_until(lambda: _ended(ctx, job_id), f"{job_id} to end", timeout=900, every=1.0)
    if run["state"] != "success":
        raise RuntimeError(f"{job_id} ended {run['state']}: see `trainyard logs {job_id}`")
    return wall(run["end_date"]) - submitted


def overhead(ctx: Context) -> Table:
    epochs = QUICK_EPOCHS if ctx.quick else EPOCHS
    figures = []
    for framework in EXAMPLES:
        run_platform(ctx, framework, QUICK_EPOCHS, f"frameworks-warm-up-{framework}")
        bare = Figure(f"{framework}: bare", "s")
        platform = Figure(f"{framework}: through Trainyard (submit -> succeeded)", "s")
        fixed = Figure(f"{framework}: fixed overhead (Trainyard - bare)", "s")
        for repeat in range(ctx.repeats):
            bare_run = run_bare(ctx, epochs, interval=INTERVAL, framework=framework)
            total = run_platform(ctx, framework, epochs, f"frameworks-{framework}-{repeat}")
            bare.add(bare_run.seconds)
            platform.add(total)
            fixed.add(total - bare_run.seconds)
        figures += [bare, platform, fixed]
    return Table(
        f"Platform overhead per framework: digits example, {epochs} epochs",
        figures,
        [
            "bare: the framework environment's python running the example's script, "
            "no Airflow involved; through Trainyard includes evaluation and registration",
            "one untimed warm-up job per framework first (its environment's first imports)",
        ],
    )


def environments(ctx: Context) -> Table:
    first = {name: Figure(f"{name}: first use (create)", "s") for name in provided_frameworks()}
    reuse = {name: Figure(f"{name}: reuse (ready)", "s") for name in provided_frameworks()}
    for repeat in range(ctx.repeats if not ctx.quick else 1):
        for key, framework in provided_frameworks().items():
            # Under the real cache's parent: the same filesystem as uv's cache (hard links).
            root = Path("~/.cache/trainyard").expanduser()
            cache = Environments(root / f"bench-envs-{repeat}")
            try:
                started = time.perf_counter()
                cache.prepare(framework, lambda _line: None)
                first[key].add(time.perf_counter() - started)
                started = time.perf_counter()
                cache.prepare(framework, lambda _line: None)
                reuse[key].add(time.perf_counter() - started)
            finally:
                shutil.rmtree(cache.root, ignore_errors=True)
    return Table(
        "Framework environments: first use vs reuse (Environments.prepare)",
        [*first.values(), *reuse.values()],
        [
            "first use with uv's wheel cache warm (a machine's first `make envs` downloads "
            "the wheels once: about 1.6 GB for TensorFlow, 0.5 GB for JAX)",
            "reuse is what every learner start pays",
        ],
    )


def run(ctx: Context) -> list[Table]:
    return [environments(ctx), overhead(ctx)]
