"""ObjectStore on an S3-compatible server (MinIO in production, moto in tests), via the minio SDK.

Imported only by `open_store` when a tenant uses S3, so that DAG parsing never loads minio.
Transient faults (connection refused, timeouts, 5xx) are retried with exponential backoff so that
a storage restart does not fail a job; every other fault becomes a StorageError naming the
endpoint and bucket, never a raw minio or urllib3 exception.
"""

from __future__ import annotations

import builtins
import io
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import DictType
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from trainyard.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    Rewindable,
    StorageError,
    check_key,
    check_object_key,
    join_key,
)
from trainyard.storage.config import S3StorageConfig, StorageCredentials

log = logging.getLogger(__name__)

T = TypeVar("T")

# A dead endpoint must fail fast: tenacity does the retrying, not urllib3 (whose default in
# minio is 5 retries with 5-minute timeouts).
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0

# A conditional PUT lost: the object changed (412), or a concurrent conditional write to it
# was in flight (409).
_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


@dataclass(frozen=True)
class RetryPolicy:
    """How long to ride out transient faults: up to `attempts` tries, waits doubling from
    `initial_wait` to at most `max_wait` seconds, no new try after `deadline` seconds."""

    attempts: int = 6
    initial_wait: float = 0.5
    max_wait: float = 5.0
    deadline: float = 20.0


DEFAULT_RETRY = RetryPolicy()


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, S3Error):
        return exc.response.status >= 500
    return isinstance(exc, urllib3.exceptions.HTTPError | ServerError | InvalidResponseError)


#: Connections kept per host: a checkpoint commit uploads 4 files at once, each in up to 3
#: parts at once (minio's `num_parallel_uploads`); with fewer, urllib3 discards connections
#: and opens new ones mid-upload ("Connection pool is full").
POOL_SIZE = 16


def _http_client() -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        retries=False,
        maxsize=POOL_SIZE,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )


class S3Store(ObjectStore):
    """Keys live in `bucket` under `prefix`. Writes are single PUTs (or multipart uploads),
    which S3 makes visible atomically."""

    def __init__(
        self, client: Minio, bucket: str, prefix: str = "", *, retry: RetryPolicy = DEFAULT_RETRY
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.retry = retry
        # minio has no public accessor for its endpoint; errors must name it.
        self.endpoint = client._base_url.host

    @classmethod
    def from_config(
        cls,
        cfg: S3StorageConfig,
        *,
        credentials: StorageCredentials | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> S3Store:
        """Build a store whose client fails fast on a dead endpoint (see CONNECT_TIMEOUT_S).

        `credentials` default to the ones in this process's environment (`cfg.credentials()`).
        """
        access_key, secret_key = credentials or cfg.credentials()
        client = Minio(
            cfg.endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=cfg.secure,
            region=cfg.region,
            http_client=_http_client(),
        )
        return cls(client, cfg.bucket, cfg.prefix, retry=retry)

    def describe(self) -> str:
        return f"s3://{join_key(self.bucket, self.prefix)}"

    def _name(self, key: str) -> str:
        return join_key(self.prefix, check_object_key(key))

    def _call(self, action: str, operation: Callable[[], T]) -> T:
        """Run `operation`, retrying transient faults; map failures to storage errors."""
        policy = self.retry
        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.deadline),
            wait=wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait),
            retry=retry_if_exception(_is_transient),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        where = f"{self.describe()} at {self.endpoint}"
        try:
            return retrying(operation)
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                raise ObjectNotFound(f"cannot {action}: no such object in {where}") from exc
            raise StorageError(f"cannot {action} in {where}: {exc.code}: {exc.message}") from exc
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise StorageError(f"cannot {action} in {where}: {exc}") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (tests, the demo); production buckets are
        provisioned by operators."""

        def create() -> None:
            if self.client.bucket_exists(self.bucket):
                return
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":  # lost a race with another creator
                    raise

        self._call("create the bucket", create)

    def put_bytes(self, key: str, data: bytes) -> None:
        name = self._name(key)
        self._call(
            f"write {key!r}",
            lambda: self.client.put_object(self.bucket, name, io.BytesIO(data), len(data)),
        )

    def get_bytes(self, key: str) -> bytes:
        name = self._name(key)

        def read() -> bytes:
            response = self.client.get_object(self.bucket, name)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call(f"read {key!r}", read)

    def read_with_token(self, key: str) -> tuple[bytes, str]:
        name = self._name(key)

        def read() -> tuple[bytes, str]:
            response = self.client.get_object(self.bucket, name)
            try:
                # The ETag of the same response, so it belongs to exactly these bytes.
                return response.read(), str(response.headers["ETag"])
            finally:
                response.close()
                response.release_conn()

        return self._call(f"read {key!r}", read)

    def write_if(self, key: str, data: bytes, expected_token: str | None) -> bool:
        name = self._name(key)
        condition = (
            {"If-None-Match": "*"} if expected_token is None else {"If-Match": expected_token}
        )
        headers: DictType = {"Content-Type": "application/octet-stream", **condition}

        def put() -> bool:
            try:
                # One PutObject with raw headers: the public put_object would send them as
                # user metadata (x-amz-meta-*). Conditional objects are small, never multipart.
                self.client._put_object(self.bucket, name, data, headers)
            except S3Error as exc:
                gone = expected_token is not None and exc.code == "NoSuchKey"
                if exc.code in _CONFLICT_CODES or gone:
                    return False
                raise
            return True

        return self._call(f"write {key!r} conditionally", put)

    def put_stream(self, key: str, stream: Rewindable, size: int) -> None:
        name = self._name(key)

        def put() -> None:
            stream.seek(0)  # a retry starts over
            # minio reads the stream in parts (multipart above 5 MiB), never past `size`.
            self.client.put_object(self.bucket, name, cast(BinaryIO, stream), size)

        self._call(f"upload {key!r}", put)

    def get_file(self, key: str, path: Path) -> None:
        name = self._name(key)
        self._call(
            f"download {key!r}", lambda: self.client.fget_object(self.bucket, name, str(path))
        )

    def copy(self, src: str, dst: str) -> None:
        source = CopySource(self.bucket, self._name(src))
        name = self._name(dst)
        self._call(
            f"copy {src!r} to {dst!r}", lambda: self.client.copy_object(self.bucket, name, source)
        )

    def exists(self, key: str) -> bool:
        name = self._name(key)
        try:
            self._call(f"stat {key!r}", lambda: self.client.stat_object(self.bucket, name))
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        folder = join_key(self.prefix, check_key(prefix)) if prefix else self.prefix
        skip = len(self.prefix) + 1 if self.prefix else 0

        # Listing pages lazily would make a mid-listing fault unretryable: fetch all first.
        def fetch() -> builtins.list[ObjectInfo]:
            objects = self.client.list_objects(
                self.bucket, prefix=folder + "/" if folder else None, recursive=True
            )
            return [ObjectInfo(str(obj.object_name)[skip:], obj.size or 0) for obj in objects]

        yield from sorted(self._call(f"list {prefix!r}", fetch), key=lambda item: item.key)

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._call(f"delete {key!r}", lambda: self.client.remove_object(self.bucket, name))

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under `prefix` with one DeleteObjects request per 1000 keys
        (pruning a checkpoint of many files costs one round trip, not one per file)."""
        doomed = [DeleteObject(self._name(info.key)) for info in self.list(prefix)]

        def delete() -> None:
            # The iterator sends the requests as it is consumed; it yields only failures.
            failed = next(iter(self.client.remove_objects(self.bucket, doomed)), None)
            if failed is not None:
                raise StorageError(
                    f"cannot delete {failed.name!r} in {self.describe()}: "
                    f"{failed.code}: {failed.message}"
                )

        if doomed:
            self._call(f"delete under {prefix!r}", delete)
