"""`python -m bench.soak`: a chaos soak. Two tenants' PyTorch, Keras and JAX jobs train at once
while faults of every kind the platform claims to survive land at a set rate.

The soak keeps `--parallel` jobs in flight (each sized to train about `--job-seconds`),
injects a fault every `--fault-every` seconds per running job, samples the live learners all
along, and once the time is up waits for every job to end. It reports:

- jobs lost (not succeeded in the end) and duplicated (an attempt that trained from scratch
  although an earlier one had committed a checkpoint): both must be 0;
- split brains: one job's learners of two attempts alive together for longer than a
  superseded attempt takes to notice and exit (0); the handovers' brief overlaps, fenced, apart;
- each injected fault against what the platform made of the attempt it hit (`FAULTS`);
- recovery time, from the fault to the job's first metric row of a later attempt (p50, p99);
- steps lost per fault that ended an attempt, in checkpoint intervals;
- goodput: training time that advanced the newest committed checkpoint over the learner time
  held (`trainyard.jobs.accounting`), over all jobs.

Tenant acme's learners run on the fake Kubernetes cluster (devkit/kube_server.py: pods as local
processes), globex's on the embedded default's local backend, so the Kubernetes faults (pod
deleted, node drained) and an out-of-memory kill (the fake kubelet's, as a memory cgroup's)
land beside the others. A fault that rightly ends its job (out of memory: no retry can get
past it) does not count that job as lost.

`make soak` runs it for 30 minutes on the embedded default and on the production-like
deployment (`--production`: PostgreSQL, Redis, Celery); tests/bench/test_soak.py runs a
3-minute profile in `make test`. Exit status 1 when a guarantee was broken.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.common import BARE_SCRIPTS, Context, console, run_bare, steps_per_second
from devkit.airflow_env import DATABASE_URL
from devkit.deployment import EXAMPLES, Deployment, deploy
from devkit.kube_server import FakeKubernetes, FakeNode, running_kube_server
from devkit.learners import learner_processes, live_attempts
from devkit.metadata_db import crash_postgres, start_postgres
from devkit.s3_server import S3Server, free_port
from devkit.services import postgres_server, redis_server
from trainyard.backends.kubernetes.pods import JOB_ID_LABEL, RANK_LABEL, label_value
from trainyard.cli.client import AirflowClient, ApiSettings
from trainyard.cli.status import job_status
from trainyard.jobs.accounting import account
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.jobs.progress import read_metrics
from trainyard.jobs.records import JobState, load_record
from trainyard.jobs.state import TERMINAL_STATES
from trainyard.runtime.sync import FENCE_PERIOD_S
from trainyard.storage import ObjectNotFound, ObjectStore

#: The attempt a fault hit ended with its task and recorded nothing; a later attempt went on.
LOST = "lost try"
#: The attempt a fault hit went on as if nothing had happened.
UNHARMED = "unharmed"
#: An attempt a later fault hit again is judged by that one, against what is right for any of
#: the faults that hit it (their effects pile up).
HIT_AGAIN = "hit again by"
#: A control-plane fault's effects land up to the task heartbeat timeout later (a task whose
#: heartbeats failed while the plane was down is stopped then, devkit/airflow_env.py): an
#: attempt that starts that soon after the fault is hit by it too (seconds).
SETTLE_SECONDS = 30.0
#: How long a superseded attempt's learner may outlive a newer attempt's start: it looks for
#: a newer attempt every FENCE_PERIOD_S, then stops its command and exits without writing; its
#: writes meanwhile are refused (trainyard/jobs/fencing.py). Alive together longer: a split
#: brain (seconds; the margin is for the exit on a loaded machine).
SUPERSEDED_EXIT_S = FENCE_PERIOD_S + 10.0
#: The checkpoint interval of every soak job (seconds).
CHECKPOINT_INTERVAL = 10
#: The least time a fault kind that finds nothing to hit keeps its turn (seconds).
MIN_PATIENCE_S = 60.0
#: How long the S3 server stays down in an outage (seconds).
OUTAGE_SECONDS = 30.0
#: The hang window of every soak job: a SIGSTOPped learner is a hang after it.
WATCHDOG = "30s"
#: The start-up hang window of every soak job: a learner SIGSTOPped before its first metric row
#: is a hang after it. The tenants' default (10 min) suits large models; the soak's jobs show
#: their first row within a minute even on a loaded machine.
WATCHDOG_STARTUP = "180s"
#: The tenant whose learners run on the fake Kubernetes cluster, whose image holds PyTorch.
ON_KUBERNETES = "acme"
#: Where a soak job of each framework runs: both tenants, both kinds of storage, both
#: backends.
PLACES = (
    ("globex", "pytorch"),
    ("acme", "pytorch"),
    ("globex", "tensorflow"),
    ("acme", "pytorch"),
    ("globex", "jax"),
)
#: The fake cluster's learner image: the runtime in this environment (which holds PyTorch).
IMAGE = "registry.test/trainyard/pytorch:2.13"
LOCAL, KUBERNETES = "local", "kubernetes"


@dataclass(frozen=True)
class Fault:
    """A kind of fault, what is right for the attempts it hits, whether it hits one job's
    learner (else the whole control plane, or the node, and every attempt running there),
    which learners it can hit (`backend`: LOCAL, KUBERNETES, or None for both), and whether
    it rightly ends the job it hits (`ends_job`: no retry can get past it)."""

    name: str
    right: frozenset[str]
    per_job: bool
    backend: str | None = None
    ends_job: bool = False
    #: It kills what the LocalExecutor's scheduler holds: the CeleryExecutor's tasks run in
    #: its workers, outside the scheduler's process group, and train on.
    spares_celery_tasks: bool = False

    def right_for(self, backend: str, celery: bool) -> frozenset[str]:
        """A control-plane fault may leave a Kubernetes learner untouched (its pods run on
        outside Airflow, and its deferred task reattaches to them), and one that spares the
        CeleryExecutor's tasks leaves theirs untouched."""
        if (backend == KUBERNETES and not self.per_job) or (celery and self.spares_celery_tasks):
            return self.right | {UNHARMED}
        return self.right


#: Only on the embedded default, whose PostgreSQL the soak can kill and start again.
POSTGRES = Fault(
    "PostgreSQL killed and restarted", frozenset({UNHARMED, LOST, "preemption"}), per_job=False
)
FAULTS = (
    Fault("learner SIGKILL", frozenset({"platform_fault"}), per_job=True),
    Fault("learner SIGTERM", frozenset({"preemption"}), per_job=True),
    Fault("learner SIGSTOP (hang)", frozenset({"hang"}), per_job=True),
    # The learner dies with its task process (a graceful stop); nothing is left to record it.
    # (A Kubernetes learner's task is deferred while it trains: it has no task process.)
    Fault("task process SIGKILL", frozenset({LOST, "preemption"}), per_job=True, backend=LOCAL),
    Fault(
        "out of memory (OOMKilled)",
        frozenset({"resource_error"}),
        per_job=True,
        backend=KUBERNETES,
        ends_job=True,
    ),
    Fault("pod deleted", frozenset({"preemption"}), per_job=True, backend=KUBERNETES),
    Fault("node drained", frozenset({"preemption"}), per_job=False, backend=KUBERNETES),
    Fault(
        "scheduler killed with its process group",
        frozenset({LOST, "preemption"}),
        per_job=False,
        spares_celery_tasks=True,
    ),
    Fault("triggerer killed", frozenset({UNHARMED}), per_job=False),
    # Down longer than the task supervisors' heartbeat tolerance (3 failures, ~15 s): Airflow
    # stops the running tasks, whose learners commit a final checkpoint. A task stopped while
    # it concluded an attempt whose learners had ended records nothing: a lost try, which the
    # next try resumes (or, its training done, finishes at once).
    Fault("API server killed", frozenset({UNHARMED, LOST, "preemption"}), per_job=False),
    POSTGRES,
    # An attempt that ends during the outage cannot be recorded: its record is in that storage.
    Fault(
        f"S3 server down {OUTAGE_SECONDS:g} s",
        frozenset({UNHARMED, "platform_fault", LOST}),
        per_job=False,
    ),
    Fault("whole Airflow restarted", frozenset({LOST, "preemption"}), per_job=False),
)


@dataclass
class Injected:
    fault: Fault
    at: float  # wall clock
    hit: dict[str, int]  # job id -> the attempt it hit
    right: dict[str, frozenset[str]]  # job id -> what is right for the attempt it hit
    given: dict[str, str] = field(default_factory=dict)  # job id -> what the platform made of it


@dataclass
class SoakJob:
    job_id: str
    tenant: str
    framework: str
    state: JobState | None = None


@dataclass(frozen=True)
class Recovery:
    """From a fault to the first metric row of the attempt after the one it hit."""

    seconds: float
    fault: str
    job_id: str
    attempt: int  # the attempt the fault hit

    def __str__(self) -> str:
        return f"{self.seconds:.1f} s: {self.fault} on {self.job_id} (attempt {self.attempt})"


class SplitBrainWatch:
    """For each superseded attempt seen alive beside a newer attempt of its job, how long the
    two were seen together (`overlaps`), and which of them outlived `SUPERSEDED_EXIT_S`: the
    split brains. A brief overlap is a handover with fencing at work."""

    def __init__(self) -> None:
        self._since: dict[tuple[str, int], float] = {}
        self.overlaps: dict[tuple[str, int], float] = {}

    def see(self, alive: dict[str, set[int]], now: float) -> None:
        """One sample: each job's attempts with live learners, at monotonic time `now`."""
        together = {
            (job_id, attempt)
            for job_id, attempts in alive.items()
            for attempt in attempts
            if attempt < max(attempts)
        }
        self._since = {key: self._since.get(key, now) for key in together}
        for key, since in self._since.items():
            self.overlaps[key] = max(self.overlaps.get(key, 0.0), now - since)

    @property
    def split_brains(self) -> list[str]:
        return [
            f"{job_id} (attempt {attempt} alive {seconds:.0f} s beside a newer one)"
            for (job_id, attempt), seconds in sorted(self.overlaps.items())
            if seconds > SUPERSEDED_EXIT_S
        ]


@dataclass
class Report:
    minutes: float
    fault_every: float
    jobs: list[SoakJob]
    injected: list[Injected]
    split_brains: list[str]
    handovers: list[float]  # how long each superseded attempt was seen beside a newer one (s)
    lost: list[str]
    ended_by_faults: list[str]  # failed as a fault that ends a job rightly made them
    duplicated: list[str]
    recoveries: list[Recovery]
    intervals_lost: list[float]
    goodput: float

    @property
    def wrong(self) -> list[str]:
        return [
            f"{fault.fault.name} on {job_id}: {given}"
            for fault in self.injected
            for job_id, given in fault.given.items()
            if given not in fault.right[job_id] and not given.startswith(HIT_AGAIN)
        ]

    @property
    def held(self) -> bool:
        return not (self.split_brains or self.lost or self.duplicated or self.wrong)

    def markdown(self) -> str:
        recovery_s = [r.seconds for r in self.recoveries]
        slowest = max(self.recoveries, key=lambda r: r.seconds, default=None)

        def pct(values: list[float], q: float) -> str:
            if not values:
                return "n/a"
            ranked = sorted(values)
            return f"{ranked[min(len(ranked) - 1, round(q * (len(ranked) - 1)))]:.1f}"

        lines = [
            f"Soak of {self.minutes:g} min, a fault per running job every {self.fault_every:g} s: "
            f"{len(self.jobs)} jobs, {len(self.injected)} faults.",
            "",
            "| figure | value |",
            "| --- | --- |",
            f"| jobs lost | {len(self.lost)} {' '.join(self.lost)} |",
            f"| jobs ended rightly by a fault (out of memory) | {len(self.ended_by_faults)} |",
            f"| duplicated runs | {len(self.duplicated)} {' '.join(self.duplicated)} |",
            f"| split brains seen | {len(self.split_brains)} {' '.join(self.split_brains)} |",
            f"| superseded learners seen beside a newer one, longest overlap | "
            f"{len(self.handovers)}, {max(self.handovers, default=0):.1f} s |",
            f"| faults classed wrong | {len(self.wrong)} {'; '.join(self.wrong)} |",
            f"| recovery, fault -> next metric row (p50 / p99, s) | {pct(recovery_s, 0.5)} "
            f"/ {pct(recovery_s, 0.99)} (n={len(recovery_s)}) |",
            f"| slowest recovery | {slowest or 'n/a'} |",
            f"| steps lost per fault (checkpoint intervals, mean / max) | "
            f"{statistics.mean(self.intervals_lost) if self.intervals_lost else 0:.2f} / "
            f"{max(self.intervals_lost, default=0):.2f} |",
            f"| goodput (training that advanced a checkpoint / learner time held) | "
            f"{self.goodput:.1%} |",
            "",
            "An attempt several faults hit is listed under the last, and is right when it is "
            "right for any of them (their effects pile up).",
            "",
            "| fault | attempts hit | what the platform made of them | right |",
            "| --- | --- | --- | --- |",
        ]
        for fault in FAULTS:
            judged = [
                (given, i.right[job_id])
                for i in self.injected
                if i.fault == fault
                for job_id, given in i.given.items()
                if not given.startswith(HIT_AGAIN)
            ]
            if not judged:
                continue
            hits = [given for given, _ in judged]
            made = ", ".join(f"{name} x{hits.count(name)}" for name in sorted(set(hits)))
            right = all(given in allowed for given, allowed in judged)
            lines.append(f"| {fault.name} | {len(hits)} | {made} | {'yes' if right else 'NO'} |")
        return "\n".join(lines)


class Soak:
    """One soak on a running deployment."""

    def __init__(
        self,
        deployment: Deployment,
        s3_server: S3Server,
        epochs: dict[str, int],
        *,
        parallel: int,
        fault_every: float,
        seed: int,
        kubernetes: FakeKubernetes,
        faults: tuple[Fault, ...] = FAULTS,
    ) -> None:
        """`faults`: the kinds to inject, in turn (in an order the `seed` draws);
        `kubernetes`: the fake cluster ON_KUBERNETES's learners run on."""
        self.deployment = deployment
        self.kubernetes = kubernetes
        self.s3_server = s3_server
        self.cluster = deployment.cluster
        self.epochs = epochs
        self.parallel = parallel
        self.fault_every = fault_every
        self.rng = random.Random(seed)
        self._order = self.rng.sample(faults, len(faults))
        self._turns = list(self._order)  # the kinds still to go, the one whose turn it is first
        self._turn_started = time.monotonic()
        self.client = AirflowClient(ApiSettings.from_env(self.cluster.env))
        self.jobs: dict[str, SoakJob] = {}
        self.injected: list[Injected] = []
        self.overlap_watch = SplitBrainWatch()
        self.hit: set[tuple[str, int]] = set()
        self.later: list[tuple[float, Callable[[], None]]] = []  # (when, undo) of outages
        self._places = itertools.cycle(PLACES)
        self._serial = 0

    # -- jobs --------------------------------------------------------------------------------

    def running(self) -> list[SoakJob]:
        return [job for job in self.jobs.values() if job.state not in TERMINAL_STATES]

    def top_up(self) -> None:
        while len(self.running()) < self.parallel:
            tenant, framework = next(self._places)
            self._serial += 1
            name = f"soak-{framework}-{self._serial}"
            example = EXAMPLES[framework]
            manifest = self.deployment.write_manifest(
                tenant,
                f"soak/{name}.yaml",
                example=example,
                name=name,
                command=f"python {BARE_SCRIPTS[framework]} --epochs {self.epochs[framework]}",
                checkpoint={"interval": f"{CHECKPOINT_INTERVAL}s", "keep": 3},
                watchdog=WATCHDOG,
                watchdog_startup=WATCHDOG_STARTUP,
            )
            try:
                job_id = self.deployment.submit(manifest)
            except AssertionError as refused:  # the API server is down: try again later
                console.print(f"submit refused, trying again: {refused}", style="dim")
                return
            self.jobs[job_id] = SoakJob(job_id, tenant, framework)

    def refresh(self) -> None:
        for job in self.running():
            with contextlib.suppress(Exception):  # Airflow may be down mid-fault
                store = self.deployment.stores[job.tenant]
                job.state = job_status(self.client, store, job.job_id).state

    def sample(self) -> None:
        settling = [
            injected
            for injected in self.injected
            if not injected.fault.per_job
            and injected.fault.right - {UNHARMED}  # one that harms nothing has no late effect
            and time.time() - injected.at < SETTLE_SECONDS
        ]
        alive = {job_id: a for job_id, a in live_attempts().items() if job_id in self.jobs}
        self.overlap_watch.see(alive, time.monotonic())
        for job_id, attempts in alive.items():
            for injected in settling:
                if injected.fault.backend in (None, self.backend_of(job_id)):
                    injected.hit.setdefault(job_id, max(attempts))
                    injected.right.setdefault(job_id, self.right(injected.fault, job_id))

    # -- faults ------------------------------------------------------------------------------

    def backend_of(self, job_id: str) -> str:
        return KUBERNETES if self.jobs[job_id].tenant == ON_KUBERNETES else LOCAL

    def concluding(self, backend: str | None) -> dict[str, int]:
        """Attempts whose end is not recorded yet, learners alive or not: a control-plane fault
        can still cost one its record (a lost try) while its task concludes it, after its
        learners have ended. Not read while storage is down (the read would wait it out)."""
        if self.later:
            return {}
        found = {}
        for job in self.running():
            if backend not in (None, self.backend_of(job.job_id)):
                continue
            with contextlib.suppress(Exception):  # Airflow or storage may be down mid-fault
                record = load_record(self.deployment.stores[job.tenant], job.job_id)
                if record is None or not record.current_attempt:
                    continue
                if all(entry.attempt != record.current_attempt for entry in record.attempts):
                    found[job.job_id] = record.current_attempt
        return found

    def inject_next(self) -> Injected | None:
        """The next fault, each kind in turn (in the order the seed drew). A kind that finds
        nothing to hit (no Kubernetes learner running, say) keeps its turn for MIN_PATIENCE_S
        (or the fault interval, if longer), so a short soak still injects the kinds that come
        first; after that, the kinds behind it may go first, and it goes as soon as it finds
        something."""
        head_waited = time.monotonic() - self._turn_started
        patient = head_waited < max(MIN_PATIENCE_S, self.fault_every)
        for fault in self._turns[:1] if patient else list(self._turns):
            injected = self.inject(fault)
            if injected is not None:
                if fault is self._turns[0]:
                    self._turn_started = time.monotonic()
                self._turns.remove(fault)
                if not self._turns:
                    self._turns = list(self._order)
                return injected
        if not patient and len(self._turns) < 2 * len(self._order):
            self._turns.extend(self._order)  # the next round may go beside the kinds that wait
        return None

    def inject(self, fault: Fault) -> Injected | None:
        """A learner's fault hits a live attempt no fault hit yet; the control plane's (or the
        node's) hit every attempt there that is live or not yet recorded, or that starts within
        SETTLE_SECONDS of it (`sample`). Each attempt is judged once, by the last fault that hit
        it, against what is right for any that did."""
        alive = {
            job_id: max(attempts)
            for job_id, attempts in live_attempts().items()
            if job_id in self.jobs and fault.backend in (None, self.backend_of(job_id))
        }
        if fault.per_job:
            fresh = sorted(
                job_id for job_id, attempt in alive.items() if (job_id, attempt) not in self.hit
            )
            if not fresh:
                return None
            job_id = self.rng.choice(fresh)
            alive = {job_id: alive[job_id]}
            if not self._hit_learner(fault, job_id):
                return None
        else:
            alive = {**self.concluding(fault.backend), **alive}
            if not alive:
                return None
            self._hit_plane(fault)
        right = {job_id: self.right(fault, job_id) for job_id in alive}
        injected = Injected(fault, time.time(), alive, right)
        self.hit.update(alive.items())
        self.injected.append(injected)
        console.print(f"{time.strftime('%X')} {fault.name}: {sorted(alive.items())}")
        return injected

    def right(self, fault: Fault, job_id: str) -> frozenset[str]:
        celery = self.cluster.env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor"
        return fault.right_for(self.backend_of(job_id), celery)

    def _hit_learner(self, fault: Fault, job_id: str) -> bool:
        if fault.backend == KUBERNETES:
            return self._hit_pod(fault, job_id)
        users = learner_processes(job_id, user_code=True, rank=0, mode=RunMode.TRAIN)
        runtimes = learner_processes(job_id, user_code=False, rank=0, mode=RunMode.TRAIN)
        if not users or not runtimes:
            return False
        sig = {
            "learner SIGKILL": signal.SIGKILL,
            "learner SIGTERM": signal.SIGTERM,
            "learner SIGSTOP (hang)": signal.SIGSTOP,
        }.get(fault.name)
        with contextlib.suppress(psutil.Error):
            if sig is not None:
                users[0].send_signal(sig)
            else:  # the task process: the runtime's parent
                parent = runtimes[0].parent()
                if parent is None:
                    return False
                parent.kill()
        return True

    def _hit_pod(self, fault: Fault, job_id: str) -> bool:
        """Rank 0's pod: deleted (SIGTERM, then SIGKILL after its grace period) or OOM-killed
        by the fake kubelet."""
        pods = [
            pod
            for pod in self.kubernetes.pods_of(**{JOB_ID_LABEL: label_value(job_id)})
            if pod.body["metadata"]["labels"].get(RANK_LABEL) == "0"
            and pod.container.get("args") == [RunMode.TRAIN.value]
            and not pod.terminated
        ]
        if not pods:
            return False
        if fault.ends_job:
            self.kubernetes.oom_kill(pods[0])
        else:
            self.kubernetes.delete_pod(pods[0].namespace, pods[0].name, None)
        return True

    def _hit_plane(self, fault: Fault) -> None:
        cluster = self.cluster
        if fault.backend == KUBERNETES:  # the node drained
            self.kubernetes.drain()
            return
        if fault.name.startswith("S3 server"):
            self.s3_server.stop()
            self.later.append((time.monotonic() + OUTAGE_SECONDS, self.s3_server.start))
            return
        if fault.name.startswith("PostgreSQL"):
            start_postgres(crash_postgres(cluster.env[DATABASE_URL]))
            # Components that lost the database exit; the deployments' restart policy (the
            # embedded default's `serve`, docker-compose's) starts them again.
            try:
                cluster.wait_healthy(restart_exited=True)
            except RuntimeError as unhealthy:  # a finding, not the end: the jobs tell the rest
                console.print(f"{time.strftime('%X')} after {fault.name}: {unhealthy}")
            return
        component = {
            "scheduler killed with its process group": ["scheduler"],
            "triggerer killed": ["triggerer"],
            "API server killed": ["api-server"],
            "whole Airflow restarted": list(cluster.processes),
        }[fault.name]
        for name in component:
            cluster.kill(name, signal.SIGKILL)
        for name in component:
            cluster.start(name)
        cluster.wait_healthy()

    def keep_up(self) -> None:
        """Start again a component that exited, as the deployments' restart policy does (the
        embedded default's `devkit.demo serve`, docker-compose's `unless-stopped`)."""
        for name in self.cluster.exited():
            console.print(f"{name} exited; starting it again", style="dim")
            self.cluster.start(name)

    def undo_due(self, everything: bool = False) -> None:
        now = time.monotonic()
        for entry in list(self.later):
            when, undo = entry
            if everything or when <= now:
                undo()
                self.later.remove(entry)

    # -- the run -----------------------------------------------------------------------------

    def run(self, minutes: float, drain_minutes: float) -> Report:
        end = time.monotonic() + minutes * 60
        self._turn_started = time.monotonic()
        next_fault = time.monotonic() + self.fault_every / self.parallel
        next_refresh = 0.0
        while time.monotonic() < end:
            self.undo_due()
            self.keep_up()
            self.sample()
            # Not during a storage outage: reading a job's state would wait it out.
            if time.monotonic() >= next_refresh and not self.later:
                self.refresh()
                self.top_up()
                next_refresh = time.monotonic() + 5
            if time.monotonic() >= next_fault:
                if self.inject_next() is None:  # nothing to hit yet: look again soon
                    next_fault = time.monotonic() + 2
                else:
                    next_fault = time.monotonic() + self.fault_every / max(1, len(self.running()))
            time.sleep(0.5)
        self.undo_due(everything=True)
        drain_end = time.monotonic() + drain_minutes * 60
        while self.running() and time.monotonic() < drain_end:
            self.keep_up()
            self.sample()
            self.refresh()
            time.sleep(1)
        self.client.close()
        return self.report(minutes)

    def report(self, minutes: float) -> Report:
        recovery: list[Recovery] = []
        intervals: list[float] = []
        productive = held = 0.0
        duplicated: list[str] = []
        for job in self.jobs.values():
            store = self.deployment.stores[job.tenant]
            record = load_record(store, job.job_id)
            if record is None:
                continue
            jobs_account = account(record)
            productive += jobs_account.productive_s
            held += jobs_account.learner_s
            if _trained_again_from_scratch(store, job.job_id, record.current_attempt):
                duplicated.append(job.job_id)
        hits = sorted(self.injected, key=lambda injected: injected.at)
        last_hit = {hit: injected for injected in hits for hit in injected.hit.items()}
        ended_by_faults: set[str] = set()
        for injected in self.injected:
            for job_id, attempt in injected.hit.items():
                if last_hit[job_id, attempt] is not injected:
                    injected.given[job_id] = f"{HIT_AGAIN} {last_hit[job_id, attempt].fault.name}"
                    continue
                hit_by = [i for i in self.injected if i.hit.get(job_id) == attempt]
                injected.right[job_id] = frozenset().union(*(i.right[job_id] for i in hit_by))
                job = self.jobs[job_id]
                store = self.deployment.stores[job.tenant]
                record = load_record(store, job_id)
                attempts = record.attempts if record else []
                entry = next((a for a in attempts if a.attempt == attempt), None)
                if entry is not None:
                    given = entry.failure_class or UNHARMED
                elif record and record.current_attempt > attempt:
                    given = LOST
                else:
                    given = f"unknown (job {job.state})"
                injected.given[job_id] = given
                if ended_rightly(hit_by, job_id, given):
                    ended_by_faults.add(job_id)
                if given == UNHARMED:
                    continue
                rows = read_metrics(store, job_id)
                after = [r for r in rows if r.get("attempt", 0) > attempt and "time" in r]
                if after:
                    seconds = after[0]["time"] - injected.at
                    recovery.append(Recovery(seconds, injected.fault.name, job_id, attempt))
                lost = _intervals_lost(store, job_id, attempt, rows)
                if lost is not None:
                    intervals.append(lost)
        return Report(
            minutes=minutes,
            fault_every=self.fault_every,
            jobs=list(self.jobs.values()),
            injected=self.injected,
            split_brains=self.overlap_watch.split_brains,
            handovers=list(self.overlap_watch.overlaps.values()),
            lost=[
                j.job_id
                for j in self.jobs.values()
                if j.state is not JobState.SUCCEEDED and j.job_id not in ended_by_faults
            ],
            ended_by_faults=sorted(ended_by_faults),
            duplicated=duplicated,
            recoveries=recovery,
            intervals_lost=intervals,
            goodput=productive / held if held else 0.0,
        )


def ended_rightly(hit_by: list[Injected], job_id: str, given: str) -> bool:
    """Whether `given` (what the platform made of an attempt that `hit_by` hit) is what one of
    them that rightly ends a job makes of it: an out-of-memory kill that another fault landed
    on after still ended its job rightly."""
    return any(i.fault.ends_job and given in i.right[job_id] for i in hit_by)


_RESUMED = re.compile(r"resumed from step-\d+ \(step (\d+)\)")


def _resumed_step(store: ObjectStore, job_id: str, attempt: int) -> int | None:
    """The step an attempt's training script resumed from (None: it started from scratch)."""
    try:
        log = store.get_bytes(JobLayout(job_id).learner_log(RunMode.TRAIN, attempt, 0)).decode()
    except ObjectNotFound:
        return None
    match = _RESUMED.search(log)
    return int(match.group(1)) if match else None


def _trained_again_from_scratch(store: ObjectStore, job_id: str, last_attempt: int) -> bool:
    """Whether an attempt after the first started from scratch although an earlier attempt
    trained for two checkpoint intervals (so committed a checkpoint)."""
    rows = read_metrics(store, job_id)
    for attempt in range(2, last_attempt + 1):
        earlier = [r for r in rows if r.get("attempt", 0) < attempt and "time" in r]
        if not earlier or earlier[-1]["time"] - earlier[0]["time"] < 2 * CHECKPOINT_INTERVAL:
            continue
        mine = [r for r in rows if r.get("attempt") == attempt]
        if mine and _resumed_step(store, job_id, attempt) is None:
            return True
    return False


def _intervals_lost(
    store: ObjectStore, job_id: str, attempt: int, rows: list[dict[str, Any]]
) -> float | None:
    """Steps between the hit attempt's last metric row and where the next attempt resumed,
    in checkpoint intervals at that attempt's speed."""
    mine = [r for r in rows if r.get("attempt") == attempt and "step" in r]
    later = sorted({r["attempt"] for r in rows if r.get("attempt", 0) > attempt})
    if len(mine) < 2 or not later:
        return None
    resumed = _resumed_step(store, job_id, later[0]) or 0
    try:
        speed = steps_per_second(mine)
    except ValueError:
        return None
    last_step = max(r["step"] for r in mine)
    return max(0, last_step - resumed) / (speed * CHECKPOINT_INTERVAL)


def epochs_per_framework(ctx: Context, job_seconds: float) -> dict[str, int]:
    """Epochs for which each framework's example trains about `job_seconds` bare."""
    epochs = {}
    for framework in sorted({framework for _, framework in PLACES}):
        probe = 50
        bare = run_bare(ctx, probe, interval=CHECKPOINT_INTERVAL, framework=framework)
        per_epoch = max(1e-3, (bare.seconds - bare.startup) / probe)
        epochs[framework] = max(probe, round(job_seconds / per_epoch))
    return epochs


@contextlib.contextmanager
def soak_deployment(
    root: Path,
    s3_server: S3Server,
    *,
    database_url: str | None = None,
    celery_broker_url: str | None = None,
) -> Iterator[tuple[Deployment, FakeKubernetes]]:
    """Airflow for both tenants, ON_KUBERNETES's learners on a fake cluster of one node (which
    runs each pod as a local process) and the other's on the local backend; with
    `database_url` and `celery_broker_url`, the production-like one."""
    images = {IMAGE: [sys.executable, "-m", "trainyard.runtime"]}
    with running_kube_server(root / "kube", images, FakeNode()) as kubernetes:
        kubernetes.add_secret(
            f"trainyard-{ON_KUBERNETES}",
            "trainyard-storage",
            {"access_key": s3_server.access_key, "secret_key": s3_server.secret_key},
        )
        cluster = {
            "images": {"pytorch:2.13": IMAGE},
            "rendezvous_port": free_port(),
            "in_cluster": False,
            "config_file": str(kubernetes.write_kubeconfig(root / "kubeconfig")),
        }
        # A name of its own: it names the deployment's bucket and IAM user on the S3 server,
        # which the soaks of one run (one per fault rate) share.
        home = root / f"airflow-{secrets.token_hex(4)}"
        home.mkdir(parents=True, exist_ok=True)
        with deploy(
            home,
            s3_server,
            {ON_KUBERNETES: {"learner_backend": "kubernetes"}},
            cluster,
            database_url=database_url,
            celery_broker_url=celery_broker_url,
        ) as deployment:
            yield deployment, kubernetes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--fault-every", type=float, nargs="+", default=[60, 120, 300])
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--job-seconds", type=float, default=240)
    parser.add_argument("--production", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    # Kept unless every soak held: its Airflow and learner logs say what went wrong.
    workdir = Path(tempfile.mkdtemp(prefix="trainyard-soak-"))
    ctx = Context(workdir, quick=False, repeats=1, cheap_repeats=1, airflow_settings={})
    held = False
    try:
        epochs = epochs_per_framework(ctx, args.job_seconds)
        reports = [soak_once(ctx, args, epochs, fault_every) for fault_every in args.fault_every]
        held = all(report.held for report in reports)
    finally:
        ctx.close()
        if held:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            console.print(f"the soak's deployments and logs are kept in {workdir}")
    return 0 if held else 1


def soak_once(
    ctx: Context, args: argparse.Namespace, epochs: dict[str, int], fault_every: float
) -> Report:
    """One soak at one fault rate on a deployment of its own; its report printed (and added
    to `--markdown`)."""
    with contextlib.ExitStack() as services:
        database_url = broker_url = None
        if args.production:
            database_url = services.enter_context(postgres_server())
            broker_url = services.enter_context(redis_server())
        deployment, kubernetes = services.enter_context(
            soak_deployment(
                ctx.scratch("deployment"),
                ctx.s3_server(),
                database_url=database_url,
                celery_broker_url=broker_url,
            )
        )
        soak = Soak(
            deployment,
            ctx.s3_server(),
            epochs,
            parallel=args.parallel,
            fault_every=fault_every,
            seed=args.seed,
            kubernetes=kubernetes,
            # The production-like PostgreSQL is Debian's, not the embedded one.
            faults=tuple(f for f in FAULTS if not (args.production and f is POSTGRES)),
        )
        report = soak.run(args.minutes, drain_minutes=max(10, args.minutes / 2))
    text = report.markdown()
    console.print(text)
    if args.markdown:
        with args.markdown.open("a") as out:
            out.write(text + "\n\n")
    return report


if __name__ == "__main__":
    sys.exit(main())
