"""(5) Storage path: checkpoint upload through the runtime vs a plain minio SDK upload.

Both upload the same files to the same S3 server (moto behind the test proxy, standing in for
MinIO) in turn. The runtime's `CheckpointStore.commit` also hashes every file for the manifest,
writes the manifest and the `latest` pointer and prunes old checkpoints: that is its price for
never exposing a half-written checkpoint. The plain upload is one `fput_object` per file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from minio import Minio

from bench.common import Context, Figure, Table, Target, environment
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.layout import JobLayout
from trainyard.storage.s3 import S3Store

MIB = 2**20
#: (size in bytes, count): a few large shards plus small files, as real checkpoints have.
FULL_FILES = ((16 * MIB, 4), (64 * 1024, 16))
QUICK_FILES = ((MIB, 2), (16 * 1024, 4))
BUCKET = "bench-storage-path"


def write_checkpoint(directory: Path, files: tuple[tuple[int, int], ...]) -> int:
    """Random (incompressible) files; return their total size."""
    total = 0
    for size, count in files:
        for index in range(count):
            (directory / f"shard-{size}-{index:02d}.bin").write_bytes(os.urandom(size))
            total += size
    return total


def run(ctx: Context) -> list[Table]:
    s3 = ctx.s3_server()
    with environment(s3.env()):
        store = S3Store.from_config(s3.config(BUCKET))
    store.ensure_bucket()
    plain = Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False)
    checkpoints = CheckpointStore(store, JobLayout("bench.storage-path.run"), keep=3)
    directory = ctx.scratch("checkpoint")
    total = write_checkpoint(directory, QUICK_FILES if ctx.quick else FULL_FILES)
    paths = sorted(directory.iterdir())

    def through_runtime(step: int) -> float:
        started = time.perf_counter()
        checkpoints.commit(directory, step)
        return time.perf_counter() - started

    def plain_sdk(step: int) -> float:
        names = [f"plain/step-{step}/{path.name}" for path in paths]
        started = time.perf_counter()
        for name, path in zip(names, paths, strict=True):
            plain.fput_object(BUCKET, name, str(path))
        seconds = time.perf_counter() - started
        for name in names:
            plain.remove_object(BUCKET, name)
        return seconds

    runtime_speed = Figure("runtime: CheckpointStore.commit", "MiB/s", digits=1)
    plain_speed = Figure("plain minio fput_object loop", "MiB/s", digits=1)
    ratio = Figure("runtime / plain", "", target=Target(0.9, at_most=False))
    for step in range(1, ctx.cheap_repeats + 1):
        if step % 2:
            runtime_seconds, plain_seconds = through_runtime(step), plain_sdk(step)
        else:
            plain_seconds, runtime_seconds = plain_sdk(step), through_runtime(step)
        runtime_speed.add(total / MIB / runtime_seconds)
        plain_speed.add(total / MIB / plain_seconds)
        ratio.add(plain_seconds / runtime_seconds)
    notes = [
        f"{len(paths)} files, {total / MIB:.1f} MiB per checkpoint; the two uploads alternate",
        f"server: moto {s3.endpoint} through a TCP proxy on this machine (sharing its cores)",
    ]
    return [
        Table(
            "Storage path: checkpoint upload throughput (S3)",
            [runtime_speed, plain_speed, ratio],
            notes,
        )
    ]
