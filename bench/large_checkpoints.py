"""(8) Large checkpoints: a learner that writes a 1 GiB checkpoint every interval (several files,
one over 512 MiB), through the learner runtime to the S3 server.

- **Commit throughput**: the runtime's commit (`CheckpointStore.commit`: each file hashed while
  it streams up in multipart, `UPLOAD_THREADS` files at a time, then the manifest and the
  pointer) against a plain parallel upload of the same files to the same server (minio's
  `fput_object`, as many at a time), back to back, order alternated: their ratio per repeat.
- **Training not blocked**: the learner's steps per second through the runtime, which uploads
  each 1 GiB checkpoint while the command trains, over the same learner run bare (it writes
  the same checkpoints, which nothing uploads): what the upload costs training. On a 2-core
  machine that also runs the S3 server, part of it is only CPU taken from the learner.
- **Memory**: the runtime process's peak resident memory, sampled while it uploads.
- **Never half**: every step the runtime committed is restored and verified against its
  manifest's digests; the learner writes each checkpoint into `tmp-*` and renames it to
  `step-N` when complete, the contract the runtime relies on (it never reads a `tmp-*`).

The S3 server is moto's (tests' stand-in for MinIO) on loopback: absolute throughput says little
about MinIO; the ratio to the plain upload through the same server is the figure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.common import Context, Figure, Table, Target, read_rows, steps_per_second
from devkit.learners import learner_processes
from trainyard.backends.base import LearnerSpec
from trainyard.backends.local.backend import LocalProcessBackend
from trainyard.data.packaging import upload_directory
from trainyard.jobs.checkpoints import UPLOAD_THREADS, CheckpointStore
from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.jobs.progress import read_metrics
from trainyard.storage.config import S3StorageConfig, StorageCredentials
from trainyard.storage.s3 import S3Store
from trainyard.tenancy.config import TenantConfig, TrainyardConfig

MiB = 2**20
#: One checkpoint: a file over 512 MiB and four smaller ones, 1 GiB together (quick: 64 MiB).
FULL_SIZES = (600 * MiB, 106 * MiB, 106 * MiB, 106 * MiB, 106 * MiB)
QUICK_SIZES = (40 * MiB, 8 * MiB, 8 * MiB, 8 * MiB)
INTERVAL = {True: 2.0, False: 10.0}
TRAIN_SECONDS = {True: 8.0, False: 60.0}
MEMORY_SAMPLE_SECONDS = 0.1

#: A learner that trains (a fixed CPU step) for argv[1] seconds and, every interval, writes a
#: checkpoint of the sizes in argv[2] (incompressible bytes) into tmp-<step>, renamed to
#: step-<step> once complete; it keeps its newest three.
LEARNER = """
import json, os, shutil, sys, time
from pathlib import Path
directory = Path(os.environ["TRAINYARD_CHECKPOINT_DIR"])
interval = float(os.environ["TRAINYARD_CHECKPOINT_INTERVAL"])
seconds, sizes = float(sys.argv[1]), [int(size) for size in sys.argv[2].split(",")]
block = os.urandom(1 << 20)
step, started = 0, time.monotonic()
saved = started
with open(os.environ["TRAINYARD_METRICS_FILE"], "a") as metrics:
    while time.monotonic() - started < seconds:
        sum(i * i for i in range(20000))
        step += 1
        if step % 20 == 0:
            metrics.write(json.dumps({"step": step, "time": time.time()}) + "\\n")
            metrics.flush()
        if time.monotonic() - saved >= interval:
            scratch = directory / f"tmp-{step}"
            scratch.mkdir()
            for number, size in enumerate(sizes):
                with open(scratch / f"part-{number}.bin", "wb") as out:
                    for _ in range(size // len(block)):
                        out.write(block)
            scratch.rename(directory / f"step-{step}")
            for old in sorted(directory.glob("step-*"), key=lambda p: int(p.name[5:]))[:-3]:
                shutil.rmtree(old)
            saved = time.monotonic()
"""


@dataclass(frozen=True)
class RuntimeRun:
    speed: float  # the learner's steps per second
    committed: list[int]  # steps the runtime committed
    peak_rss: int  # the runtime process's peak resident memory (bytes)


def _storage(ctx: Context, bucket: str) -> tuple[S3StorageConfig, StorageCredentials, S3Store]:
    server = ctx.s3_server()
    storage = server.config(bucket)
    credentials = StorageCredentials(server.access_key, server.secret_key)
    store = S3Store.from_config(storage, credentials=credentials)
    store.ensure_bucket()
    return storage, credentials, store


def run_runtime(ctx: Context, sizes: tuple[int, ...], interval: float) -> RuntimeRun:
    """Run the LEARNER through the learner runtime (local backend) to the S3 server."""
    root = ctx.scratch("large-checkpoints")
    storage, credentials, store = _storage(ctx, f"bench-{root.name}")
    code = root / "code"
    code.mkdir()
    (code / "learner.py").write_text(LEARNER)
    job_id = f"bench.large-checkpoints.{root.name}"
    upload_directory(store, code, JobLayout(job_id).code, "code.path")
    seconds = TRAIN_SECONDS[ctx.quick]
    spec = LearnerSpec(
        job_id=job_id,
        tenant="bench",
        mode=RunMode.TRAIN,
        command=f"python learner.py {seconds} {','.join(map(str, sizes))}",
        attempt=1,
        num_learners=1,
        checkpoint_interval=interval,
        checkpoint_keep=2,
        watchdog=0,
        watchdog_startup=0,
        storage=storage,
        work_dir=root / "work",
        cpus=1,
        memory_bytes=4 * 2**30,
        gpus=0,
        credentials=credentials,
    )
    backend = LocalProcessBackend(
        TrainyardConfig(
            work_dir=root / "work", tenants=[TenantConfig(name="bench", storage=storage)]
        ),
        "bench",
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(MEMORY_SAMPLE_SECONDS):
            for runtime in learner_processes(job_id, user_code=False):
                try:
                    peak = max(peak, runtime.memory_info().rss)
                except psutil.Error:
                    continue

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lines: list[str] = []
    try:
        [learner] = backend.run(spec, on_output=lines.append)
    finally:
        done.set()
        sampler.join()
    if learner.exit_code != 0:
        raise RuntimeError(f"the runtime exited {learner.exit_code}:\n" + "\n".join(lines[-20:]))
    checkpoints = CheckpointStore(store, JobLayout(job_id))
    committed = checkpoints.committed_steps()
    restored = checkpoints.restore(root / "restored")  # verifies every file's digest
    if committed and restored != committed[-1]:
        raise RuntimeError(f"restored step {restored}, not the newest committed {committed[-1]}")
    return RuntimeRun(steps_per_second(read_metrics(store, job_id)), committed, peak)


def run_bare(ctx: Context, sizes: tuple[int, ...], interval: float) -> float:
    """The LEARNER's steps per second without the runtime: nothing uploads its checkpoints."""
    root = ctx.scratch("large-checkpoints-bare")
    (root / "learner.py").write_text(LEARNER)
    (root / "checkpoints").mkdir()
    env = {
        **os.environ,
        "TRAINYARD_CHECKPOINT_DIR": str(root / "checkpoints"),
        "TRAINYARD_CHECKPOINT_INTERVAL": str(interval),
        "TRAINYARD_METRICS_FILE": str(root / "metrics.jsonl"),
    }
    command = [sys.executable, "learner.py", str(TRAIN_SECONDS[ctx.quick])]
    subprocess.run([*command, ",".join(map(str, sizes))], cwd=root, env=env, check=True)
    return steps_per_second(read_rows(root / "metrics.jsonl"))


def write_checkpoint(folder: Path, sizes: tuple[int, ...]) -> None:
    folder.mkdir(parents=True)
    block = bytes(range(256)) * (MiB // 256)
    for number, size in enumerate(sizes):
        with open(folder / f"part-{number}.bin", "wb") as out:
            for _ in range(size // MiB):
                out.write(block)


def upload_rates(ctx: Context, sizes: tuple[int, ...], repeat: int) -> tuple[float, float]:
    """MiB/s of the runtime's commit and of a plain parallel upload of the same checkpoint."""
    root = ctx.scratch("upload")
    folder = root / "step-1"
    write_checkpoint(folder, sizes)
    _, _, store = _storage(ctx, f"bench-{root.name}")
    total = sum(sizes) / MiB

    def commit() -> float:
        started = time.perf_counter()
        CheckpointStore(store, JobLayout(f"bench.commit.{root.name}"), attempt=1).commit(folder, 1)
        return total / (time.perf_counter() - started)

    def plain() -> float:
        files = sorted(folder.iterdir())
        started = time.perf_counter()
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            list(
                pool.map(
                    lambda path: store.client.fput_object(
                        store.bucket, f"plain/{path.name}", str(path)
                    ),
                    files,
                )
            )
        return total / (time.perf_counter() - started)

    if repeat % 2 == 0:
        committed, uploaded = commit(), plain()
    else:
        uploaded, committed = plain(), commit()
    return committed, uploaded


def run(ctx: Context) -> list[Table]:
    sizes = QUICK_SIZES if ctx.quick else FULL_SIZES
    interval = INTERVAL[ctx.quick]
    commit_rate = Figure("runtime commit (hash + multipart upload + manifest)", "MiB/s", digits=0)
    plain_rate = Figure("plain parallel upload of the same files", "MiB/s", digits=0)
    ratio = Figure("commit / plain upload", "", target=Target(0.9, at_most=False), digits=2)
    speed_ratio = Figure(
        f"training speed, checkpoint every {interval:g} s: runtime uploading / bare",
        "",
        target=Target(0.95, at_most=False, why="the upload runs beside training"),
        digits=2,
    )
    memory = Figure(
        "the runtime's peak resident memory while uploading", "MiB", target=Target(256), digits=0
    )
    committed = Figure("checkpoints committed per run", "", digits=0)
    for repeat in range(ctx.repeats):
        commit, plain = upload_rates(ctx, sizes, repeat)
        commit_rate.add(commit)
        plain_rate.add(plain)
        ratio.add(commit / plain)
        with_checkpoints = run_runtime(ctx, sizes, interval)
        speed_ratio.add(with_checkpoints.speed / run_bare(ctx, sizes, interval))
        memory.add(with_checkpoints.peak_rss / MiB)
        committed.add(len(with_checkpoints.committed))
    return [
        Table(
            f"Large checkpoints: {sum(sizes) / MiB:.0f} MiB in {len(sizes)} files "
            f"(largest {max(sizes) / MiB:.0f} MiB) to the S3 server",
            [commit_rate, plain_rate, ratio, speed_ratio, memory, committed],
            [
                "commit and plain upload run back to back, order alternated per repeat",
                "moto's S3 server on loopback stands in for MinIO: compare the ratio, not MiB/s",
                "training speed: the learner's steps/s between its first and last metric row; "
                "bare writes the same checkpoints, which nothing uploads",
                "committed per run: the upload of one checkpoint outlasts the interval, so the "
                "runtime commits the newest complete one when it is free (the learner keeps 3)",
                "every committed step was restored and its files' digests verified",
            ],
        )
    ]
