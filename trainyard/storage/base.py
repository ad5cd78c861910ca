"""The storage interface every Trainyard component talks to.

Keys are '/'-separated and relative to the tenant's storage root (a bucket + prefix on S3,
a directory locally). A key never starts with '/' and never contains '.' or '..' segments:
`check_key` enforces this so that no caller can leave the tenant's storage.
"""

from __future__ import annotations

import builtins
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from trainyard.limits import shorten


class StorageError(Exception):
    """Storage is unreachable or refused an operation (a platform fault, retryable)."""


class ObjectNotFound(StorageError, KeyError):
    """The key does not exist."""

    def __str__(self) -> str:
        # KeyError would repr() the message, quoting it a second time.
        return Exception.__str__(self)


class InvalidKey(ValueError):
    """A key that would leave the tenant's storage or is malformed."""


class Rewindable(Protocol):
    """A binary stream to upload: read from its start, rewound with `seek(0)` to retry."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative key, else raise InvalidKey naming the problem."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKey(f"invalid storage key {shorten(key)}: use a relative '/'-separated path")
    parts = key.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidKey(
            f"invalid storage key {shorten(key)}: empty, '.' and '..' segments are not allowed"
        )
    return key


def check_object_key(key: str) -> str:
    """`check_key` for one object: a trailing '/' names a folder, which only S3 could store."""
    if check_key(key).endswith("/"):
        raise InvalidKey(f"invalid object key {shorten(key)}: it ends with '/'")
    return key


def join_key(*parts: str) -> str:
    """Join key segments with '/', ignoring empty ones and stray slashes."""
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


class ObjectStore(ABC):
    """A tenant's object storage. Single-object writes are atomic on every backend."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write `data` at `key`, replacing it atomically."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read the object at `key`; raise ObjectNotFound if absent."""

    @abstractmethod
    def put_stream(self, key: str, stream: Rewindable, size: int) -> None:
        """Upload the `size` bytes of `stream` to `key`, replacing it atomically.

        The caller sees every byte uploaded pass through `stream.read` (a retry rewinds it
        first), so it can hash what it uploads in the same single read of the data.
        """

    @abstractmethod
    def get_file(self, key: str, path: Path) -> None:
        """Download `key` to a local file (parents created); raise ObjectNotFound if absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object under the folder `prefix` (recursively), sorted by key.

        'a/b' lists 'a/b/x' but never 'a/bc/x'; '' lists everything.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete one object; deleting a missing key is not an error."""

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, for people (e.g. 's3://bucket/prefix' or a directory)."""

    # Conditional writes: racing writers (two runs promoting a model) need no lock server.

    @abstractmethod
    def read_with_token(self, key: str) -> tuple[bytes, str]:
        """Read `key` with an opaque version token for `write_if`; ObjectNotFound if absent.

        The token identifies the content: a rewrite with identical bytes may keep it.
        """

    @abstractmethod
    def write_if(self, key: str, data: bytes, expected_token: str | None) -> bool:
        """Write `data` at `key` only if it still holds the version `expected_token` (None:
        only if `key` does not exist); return False, writing nothing, on a conflict.

        Callers loop: re-read with `read_with_token`, decide again, retry. After a transient
        fault a retried write may report a conflict with its own first try, so the re-read
        must recognise that (the object holds what the caller meant to write).
        """

    # Conveniences built on the primitives above: backends need not override them.

    def exists(self, key: str) -> bool:
        try:
            self.get_bytes(key)
        except ObjectNotFound:
            return False
        return True

    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file to `key`, replacing it atomically."""
        with path.open("rb") as source:
            self.put_stream(key, source, os.fstat(source.fileno()).st_size)

    def put_json(self, key: str, value: Any) -> None:
        self.put_bytes(key, json.dumps(value, indent=2, sort_keys=True).encode())

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def delete_prefix(self, prefix: str) -> None:
        for info in list(self.list(prefix)):
            self.delete(info.key)

    def upload_dir(self, local_dir: Path, prefix: str) -> builtins.list[str]:
        """Upload every regular file under `local_dir` to `prefix`; return the keys written."""
        keys = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file() and not p.is_symlink()):
            key = join_key(prefix, path.relative_to(local_dir).as_posix())
            self.put_file(key, path)
            keys.append(key)
        return keys

    def download_dir(self, prefix: str, local_dir: Path) -> builtins.list[Path]:
        """Download every object under `prefix` into `local_dir`; return the files written."""
        base = prefix.rstrip("/") + "/" if prefix else ""
        paths = []
        for info in self.list(prefix):
            relative = info.key[len(base) :]
            check_key(relative)
            target = local_dir / relative
            self.get_file(info.key, target)
            paths.append(target)
        return paths

    def copy(self, src: str, dst: str) -> None:
        """Copy one object; backends override this to avoid holding the object in memory."""
        self.put_bytes(dst, self.get_bytes(src))

    def copy_prefix(self, src: str, dst: str) -> builtins.list[str]:
        """Copy every object under `src` to the same relative key under `dst`."""
        base = src.rstrip("/") + "/" if src else ""
        keys = []
        # Materialise the listing first: `dst` may lie under `src`.
        for info in list(self.list(src)):
            key = join_key(dst, info.key[len(base) :])
            self.copy(info.key, key)
            keys.append(key)
        return keys
