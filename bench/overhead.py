"""(1) Platform overhead: the digits example run bare vs submitted through Trainyard.

Bare is `python train.py`, then `python evaluate.py`, with the same environment contract (the
issue's definition: a user without Trainyard trains, then evaluates); the platform run is `trainyard
submit` to the embedded default (tenant globex, local storage) on real Airflow, up to the run's
success (evaluation included, as a user waits for it). The platform's times come from Airflow's
own timestamps and the learner task's log, so how often the benchmark polls does not count.

Data that passed its expectations before is not validated again, so the timed runs (same
dataset as the warm-up job) measure retraining on unchanged data. Each repeat also submits a
short job on a copy of the dataset that no job has seen, to show what the first validation of
new data costs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from bench.common import (
    EXAMPLE_CHECKPOINT_INTERVAL,
    Context,
    Figure,
    Table,
    Target,
    first_event,
    poll_until,
    run_bare,
    task_log_events,
    wall,
)
from trainyard.tenancy.names import dag_id_for_tenant

TENANT = "globex"  # local storage: the embedded default
DAG_ID = dag_id_for_tenant(TENANT)
TASK_NOTES = {"stage_data": " (copy, check the data)", "evaluate": " (python evaluate.py)"}
DATASET = "datasets/digits"
EVALUATE = "evaluate.py"  # the example's evaluation command's script (job.yaml)
TRAIN_SECONDS = 60.0  # what "relative overhead" refers to: a ~60 s training run
QUICK_EPOCHS = 5
#: The runtime's log lines (trainyard/runtime/runner.py) around the user's command.
COMMAND_STARTED = "trainyard INFO running "
COMMAND_EXITED = "trainyard INFO the command exited"


@dataclass(frozen=True)
class PlatformRun:
    total: float  # submit -> the run succeeded
    learner_started: float  # submit -> the runtime starts the training command
    command: float  # the training command inside the learner task
    phases: dict[str, float]  # where the time went; they add up to `total`


def _ended(ctx: Context, job_id: str) -> dict[str, Any] | None:
    run = ctx.client().get_run(DAG_ID, job_id)
    return run if run["state"] in ("success", "failed") else None


def new_dataset(ctx: Context, name: str) -> str:
    """A copy of the digits dataset with one extra file: data no job has validated yet."""
    store = ctx.deployment().stores[TENANT]
    path = f"{DATASET}-{name}"
    store.copy_prefix(DATASET, path)
    store.put_bytes(f"{path}/batch.txt", name.encode())
    return path


def run_platform(ctx: Context, epochs: int, name: str, data: str = DATASET) -> PlatformRun:
    """Submit the example with the CLI and take its run apart once it has succeeded."""
    deployment, client = ctx.deployment(), ctx.client()
    manifest = deployment.write_manifest(
        TENANT,
        f"{name}.yaml",
        name=name,
        command=f"python train.py --epochs {epochs}",
        data={"path": data},
    )
    submitted = time.time()
    started = time.perf_counter()
    job_id = deployment.submit(manifest)
    cli = time.perf_counter() - started
    run = poll_until(lambda: _ended(ctx, job_id), f"{job_id} to end", timeout=900, every=1.0)
    if run["state"] != "success":
        raise RuntimeError(f"{job_id} ended {run['state']}: see `trainyard logs {job_id}`")
    ran = sorted(
        (ti for ti in client.task_instances(DAG_ID, job_id) if ti["start_date"]),
        key=lambda ti: wall(ti["start_date"]),
    )
    spans = {ti["task_id"]: (wall(ti["start_date"]), wall(ti["end_date"])) for ti in ran}
    learner = next(ti for ti in ran if ti["task_id"] == "learner")
    events = task_log_events(client, DAG_ID, job_id, "learner", int(learner["try_number"]))
    command_started = first_event(events, COMMAND_STARTED)
    command_exited = first_event(events, COMMAND_EXITED)
    end = wall(run["end_date"])
    ordered = list(spans.values())
    scheduling = (
        ordered[0][0]
        - (submitted + cli)
        + sum(later[0] - earlier[1] for earlier, later in pairwise(ordered))
        + end
        - ordered[-1][1]
    )
    phases = {
        "CLI submit (package code, trigger the run)": cli,
        "scheduler: starting the run, gaps between tasks": scheduling,
    }
    for task_id, (begin, finish) in spans.items():
        if task_id == "learner":
            phases["learner task start -> command started"] = command_started - begin
            phases["learner: the training command"] = command_exited - command_started
            phases["learner: command exited -> task end"] = finish - command_exited
        else:
            phases[f"{task_id} task{TASK_NOTES.get(task_id, '')}"] = finish - begin
    return PlatformRun(
        total=end - submitted,
        learner_started=command_started - submitted,
        command=command_exited - command_started,
        phases=phases,
    )


def run(ctx: Context) -> list[Table]:
    epochs = QUICK_EPOCHS if ctx.quick else ctx.epochs_for(TRAIN_SECONDS)
    bare_total = Figure("bare: python train.py, then evaluate.py", "s")
    platform_total = Figure("through Trainyard: submit -> run succeeded", "s")
    learner_started = Figure("submit -> learner started", "s", target=Target(2.0))
    fixed = Figure("fixed overhead (Trainyard - bare)", "s", target=Target(5.0))
    relative = Figure("relative overhead", "%", target=Target(3.0), digits=1)
    command = Figure("training command in the learner - bare train.py", "s")
    around = Figure(
        "fixed overhead without the training's noise (phases around the command - bare evaluate)",
        "s",
        target=Target(2.0),
    )
    first_validation = Figure("stage_data task on data not seen before", "s")
    phases: dict[str, Figure] = {}
    if not ctx.quick:  # the first tasks after Airflow starts pay one-time imports (seconds)
        run_platform(ctx, QUICK_EPOCHS, "overhead-warm-up")
    for repeat in range(ctx.repeats):
        # Alternate which variant goes first, so that drifting load favours neither.
        if repeat % 2 == 0:
            bare = run_bare(ctx, epochs, interval=EXAMPLE_CHECKPOINT_INTERVAL, evaluate=EVALUATE)
            platform = run_platform(ctx, epochs, f"overhead-{repeat}")
        else:
            platform = run_platform(ctx, epochs, f"overhead-{repeat}")
            bare = run_bare(ctx, epochs, interval=EXAMPLE_CHECKPOINT_INTERVAL, evaluate=EVALUATE)
        bare_total.add(bare.seconds)
        platform_total.add(platform.total)
        learner_started.add(platform.learner_started)
        fixed.add(platform.total - bare.seconds)
        relative.add(100 * (platform.total - bare.seconds) / bare.seconds)
        command.add(platform.command - (bare.seconds - bare.evaluation_seconds))
        around.add(platform.total - platform.command - bare.evaluation_seconds)
        for label, seconds in platform.phases.items():
            phases.setdefault(label, Figure(label, "s")).add(seconds)
        fresh = new_dataset(ctx, f"new-{repeat}")
        unseen = run_platform(ctx, QUICK_EPOCHS, f"overhead-new-data-{repeat}", data=fresh)
        first_validation.add(unseen.phases[f"stage_data task{TASK_NOTES['stage_data']}"])
    title = f"Platform overhead: digits example, {epochs} epochs, checkpoint every 10 s"
    notes = [
        "learner started = the runtime's `running '<command>'` log line, i.e. user code starts",
        "bare and Trainyard runs alternate; Airflow idles in the background during bare runs",
        "full mode runs one untimed warm-up job first: Airflow is a long-running service",
        "the timed runs retrain on the warm-up job's data, whose validation is reused; "
        "'data not seen before': a short job per repeat on a fresh copy of the dataset, "
        "checked with great-expectations against the example's expectations.json",
        "without the training's noise: the platform's total less its training command and less "
        "bare evaluate.py (repeats of one training vary by seconds; issue 28's goal is <= 2 s)",
    ]
    return [
        Table(
            title,
            [bare_total, platform_total, learner_started, fixed, relative, command, around],
            notes,
        ),
        Table(
            "Where the time goes (through Trainyard; the phases add up to the total)",
            [*phases.values(), first_validation],
            [
                "from Airflow's task start/end dates and the learner task's log timestamps",
                "the last row is not a phase of these runs: see the note above",
            ],
        ),
    ]
