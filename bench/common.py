"""What every benchmark shares: figures and their statistics, tables, the run context (one S3
server and one Airflow deployment for all benchmarks), and the digits example run bare.

Statistics are over repeats that run interleaved with the variants they are compared with, so
that load from other processes on the machine hits every variant alike.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table as RichTable

from devkit.deployment import EXAMPLE, EXAMPLES, Deployment, deploy
from devkit.s3_server import S3Server, running_s3_server
from trainyard.backends.local.backend import INHERITED_VARIABLES
from trainyard.backends.local.environments import Environments, provided_frameworks
from trainyard.cli.client import AirflowClient, ApiSettings
from trainyard.tenancy.config import EnvironmentsConfig

# Wide enough for the tables when the output goes to a file or a CI log.
console = Console(width=None if sys.stdout.isatty() else 150)
T = TypeVar("T")

#: Each framework's digits training script (in EXAMPLES[framework]).
BARE_SCRIPTS = {"pytorch": "train.py", "tensorflow": "keras_train.py", "jax": "jax_train.py"}
#: The digits example's default checkpoint interval (examples/pytorch-digits/job.yaml).
EXAMPLE_CHECKPOINT_INTERVAL = 10.0


@dataclass(frozen=True)
class Target:
    """A figure's goal: its median (or, for `every`, each sample) at most (or least) `limit`."""

    limit: float
    at_most: bool = True
    why: str = ""
    every: bool = False  # for guarantees ("none lost"), where one bad sample is a miss

    def met(self, samples: list[float]) -> bool:
        value = statistics.median(samples)
        if self.every:
            value = max(samples) if self.at_most else min(samples)
        return value <= self.limit if self.at_most else value >= self.limit

    def describe(self, unit: str) -> str:
        text = f"{'≤' if self.at_most else '≥'} {self.limit:g} {unit}".rstrip()
        if self.every:
            text += " every time"
        return f"{text} ({self.why})" if self.why else text


@dataclass
class Figure:
    """One measured quantity: a sample per repeat, or a text where nothing can be measured."""

    label: str
    unit: str
    samples: list[float] = field(default_factory=list)
    target: Target | None = None
    text: str | None = None
    digits: int = 2

    def add(self, value: float) -> None:
        self.samples.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def _fmt(self, value: float) -> str:
        return f"{value:.{self.digits}f}"

    def cells(self) -> tuple[str, str, str, str, str, str]:
        """median, min-max, IQR, n, target, met."""
        target = self.target.describe(self.unit) if self.target else ""
        if self.text is not None or not self.samples:
            return (self.text or "no samples", "", "", "0", target, "")
        spread = f"{self._fmt(min(self.samples))} .. {self._fmt(max(self.samples))}"
        iqr = ""
        if len(self.samples) >= 4:
            q1, _, q3 = statistics.quantiles(self.samples, n=4)
            iqr = self._fmt(q3 - q1)
        met = ("yes" if self.target.met(self.samples) else "NO") if self.target else ""
        median = f"{self._fmt(self.median)} {self.unit}".rstrip()
        return (median, spread, iqr, str(len(self.samples)), target, met)


@dataclass
class Table:
    title: str
    figures: list[Figure]
    notes: list[str] = field(default_factory=list)


COLUMNS = ("figure", "median", "min .. max", "IQR", "n", "target", "met")


def print_table(table: Table) -> None:
    rich = RichTable(title=table.title, title_justify="left")
    for column in COLUMNS:
        rich.add_column(column, no_wrap=column != "figure", overflow="fold")
    for figure in table.figures:
        met = figure.cells()[-1]
        style = "red" if met == "NO" else None
        rich.add_row(figure.label, *figure.cells(), style=style)
    console.print(rich)
    for note in table.notes:
        console.print(f"  {note}", highlight=False)
    console.print()


def markdown(table: Table) -> str:
    lines = [f"### {table.title}", "", "| " + " | ".join(COLUMNS) + " |"]
    lines.append("|" + " --- |" * len(COLUMNS))
    for figure in table.figures:
        lines.append("| " + " | ".join((figure.label, *figure.cells())) + " |")
    lines += ["", *(f"- {note}" for note in table.notes), ""]
    return "\n".join(lines)


def machine_facts() -> dict[str, str]:
    """What the figures depend on, read from this machine (never assumed)."""
    import airflow
    import minio
    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    memory_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "CPU": cpu,
        "cores (nproc)": str(os.cpu_count()),
        "memory": f"{memory_kib / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "Airflow": airflow.__version__,
        "torch": torch.__version__,
        "minio SDK": minio.__version__,
    }


def children_cpu() -> float:
    """CPU seconds of this process's ended children (and theirs): what a child run cost."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def wall(iso: str) -> float:
    """An Airflow timestamp ('2026-11-24T22:33:06.043494Z') as seconds since the epoch."""
    return datetime.fromisoformat(iso).timestamp()


def steps_per_second(rows: list[dict[str, Any]]) -> float:
    """Training speed between the first and the last metric row: start-up excluded."""
    timed = [row for row in rows if "step" in row and "time" in row]
    if len(timed) < 2 or timed[-1]["time"] <= timed[0]["time"]:
        raise ValueError(f"too few metric rows to measure speed ({len(timed)})")
    first, last = timed[0], timed[-1]
    return float(last["step"] - first["step"]) / float(last["time"] - first["time"])


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class BareRun:
    """`python train.py` without Trainyard: launched at `started` (wall clock), ran `seconds`
    (`evaluation_seconds` of them the evaluation after it, if one ran)."""

    started: float
    seconds: float
    rows: list[dict[str, Any]]
    evaluation_seconds: float = 0.0

    @property
    def startup(self) -> float:
        """Launch to the first metric row: interpreter, imports, data loading, 10 steps."""
        return float(self.rows[0]["time"]) - self.started


class Context:
    """Settings of this benchmark run and the resources benchmarks share, started on first use."""

    def __init__(
        self,
        workdir: Path,
        *,
        quick: bool,
        repeats: int,
        cheap_repeats: int,
        airflow_settings: Mapping[str, str],
    ) -> None:
        self.workdir = workdir
        self.quick = quick
        self.repeats = repeats  # for benchmarks whose repeat takes minutes
        self.cheap_repeats = cheap_repeats  # for those whose repeat takes seconds
        self.airflow_settings = dict(airflow_settings)
        self.stack = ExitStack()
        self._s3: S3Server | None = None
        self._deployment: Deployment | None = None
        self._client: AirflowClient | None = None
        self._dataset: Path | None = None
        self._epoch_seconds: tuple[float, float] | None = None
        self._serial = 0

    def close(self) -> None:
        self.stack.close()

    def scratch(self, name: str) -> Path:
        """A fresh directory for one run."""
        self._serial += 1
        path = self.workdir / f"{name}-{self._serial}"
        path.mkdir(parents=True)
        return path

    def s3_server(self) -> S3Server:
        if self._s3 is None:
            self._s3 = self.stack.enter_context(running_s3_server(self.scratch("s3")))
        return self._s3

    def deployment(self) -> Deployment:
        """Real Airflow (all components) with tenants acme (S3) and globex (local storage)."""
        if self._deployment is None:
            console.print("starting Airflow ...", style="dim")
            started = time.perf_counter()
            s3 = self.s3_server()
            airflow = deploy(self.scratch("airflow"), s3, airflow_env=self.airflow_settings)
            self._deployment = self.stack.enter_context(airflow)
            console.print(f"Airflow up in {time.perf_counter() - started:.0f} s", style="dim")
        return self._deployment

    def client(self) -> AirflowClient:
        if self._client is None:
            client = AirflowClient(ApiSettings.from_env(self.deployment().cluster.env))
            self.stack.callback(client.close)
            self._client = client
        return self._client

    def dataset(self) -> Path:
        """The digits CSVs, written once by the example's own script."""
        if self._dataset is None:
            out = self.scratch("digits")
            subprocess.run(
                [sys.executable, str(EXAMPLE / "make_dataset.py"), "--out", str(out)],
                check=True,
                capture_output=True,
            )
            self._dataset = out
        return self._dataset

    def epochs_for(self, seconds: float) -> int:
        """Epochs for which a bare run of the example takes about `seconds` (measured once)."""
        if self._epoch_seconds is None:
            probe_epochs = 100
            run = run_bare(self, probe_epochs, interval=EXAMPLE_CHECKPOINT_INTERVAL)
            per_epoch = (run.seconds - run.startup) / probe_epochs
            self._epoch_seconds = (run.startup, per_epoch)
        startup, per_epoch = self._epoch_seconds
        return max(1, round((seconds - startup) / per_epoch))


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def contract_environment(root: Path, data_dir: Path, interval: float) -> dict[str, str]:
    """The public environment contract a learner's user code sees, without the platform:
    the variables the local backend passes on, plus TRAINYARD_* pointing into `root`."""
    env = {name: os.environ[name] for name in INHERITED_VARIABLES if name in os.environ}
    for name in ("checkpoints", "results"):
        (root / name).mkdir()
    env.update(
        PATH=os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", ""))),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        TRAINYARD_JOB_ID="bare.digits.run",
        TRAINYARD_TENANT="bare",
        TRAINYARD_DATA_DIR=str(data_dir),
        TRAINYARD_CHECKPOINT_DIR=str(root / "checkpoints"),
        TRAINYARD_RESULT_DIR=str(root / "results"),
        TRAINYARD_METRICS_FILE=str(root / "metrics.jsonl"),
        TRAINYARD_LEARNER_RANK="0",
        TRAINYARD_NUM_LEARNERS="1",
        TRAINYARD_ATTEMPT="1",
        TRAINYARD_CHECKPOINT_INTERVAL=f"{interval:g}",
    )
    return env


def framework_python(framework: str) -> Path:
    """The interpreter a local learner of `framework` runs with (its environment, prepared)."""
    [env] = [e for e in provided_frameworks().values() if e.name.value == framework]
    return Environments(EnvironmentsConfig().dir).prepare(env, lambda _line: None)


def run_bare(
    ctx: Context,
    epochs: int,
    *,
    interval: float,
    framework: str = "pytorch",
    args: Sequence[str] = (),
    evaluate: str | None = None,
) -> BareRun:
    """Run `framework`'s digits example directly (with `args` after `--epochs`), in the
    framework's environment (as a local learner does), with the same environment contract;
    then its `evaluate` script, if given, timed with it (as a job evaluates its model)."""
    root = ctx.scratch("bare")
    env = contract_environment(root, ctx.dataset(), interval)
    example = EXAMPLES[framework]
    python = str(framework_python(framework))
    commands = [[python, BARE_SCRIPTS[framework], "--epochs", str(epochs), *args]]
    if evaluate is not None:
        commands.append([python, evaluate])
    log = root / "train.log"
    ended = []
    with log.open("wb") as out:
        started_wall = time.time()
        started = time.perf_counter()
        for command in commands:
            process = subprocess.run(
                command, cwd=example, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
            )
            if process.returncode != 0:
                raise RuntimeError(
                    f"{command[1]} exited {process.returncode}:\n{log.read_text()[-2000:]}"
                )
            ended.append(time.perf_counter())
    rows = [row for row in read_rows(root / "metrics.jsonl") if "step" in row]
    return BareRun(started_wall, ended[-1] - started, rows, ended[-1] - ended[0])


def task_log_events(
    client: AirflowClient, dag_id: str, run_id: str, task_id: str, try_number: int
) -> list[tuple[float, str]]:
    """(wall time, text) of each timestamped line of one task attempt's log."""
    result = client.request(
        "GET",
        f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
        params={"full_content": "true"},
        headers={"Accept": "application/json"},
    )
    return [
        (wall(event["timestamp"]), str(event.get("event", "")))
        for event in result["content"]
        if isinstance(event, dict) and event.get("timestamp")
    ]


def first_event(events: list[tuple[float, str]], prefix: str) -> float:
    """When the first log line starting with `prefix` was written."""
    for when, text in events:
        if text.startswith(prefix):
            return when
    raise LookupError(f"no log line starts with {prefix!r}")


def poll_until(check: Callable[[], T | None], what: str, timeout: float, every: float = 0.2) -> T:
    """Poll `check()` until it returns something truthy; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
