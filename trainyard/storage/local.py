"""ObjectStore on a local directory: the embedded default, and S3's stand-in on one machine."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from trainyard.storage.base import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    Rewindable,
    StorageError,
    check_key,
    check_object_key,
)

# Temp files of in-flight (or crashed) writes end with this; `list` skips them and no key may
# end with it, so a real object is never hidden.
TMP_SUFFIX = ".trainyard-tmp"
_CHUNK = 1 << 20
_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


def _lock_path(target: Path) -> Path:
    """The lock file of conditional writes to `target`: hidden from `list` by TMP_SUFFIX, and
    never a temp file's name (those carry 12 hex digits). Names sharing their first 100
    characters share a lock, which only serialises them more."""
    return target.with_name(f".{target.name[:100]}.lock{TMP_SUFFIX}")


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Hold the exclusive fcntl lock of `target` (processes and threads alike).

    `delete` unlinks the lock file while holding it, so a waiter may end up locking an
    unlinked file: it checks that the path still names the file it locked, else tries again.
    """
    lock = _lock_path(target)
    while True:
        lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # a delete removed the emptied folder meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                current = os.stat(lock)
            except FileNotFoundError:
                current = None
        except BaseException:
            os.close(fd)
            raise
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def _token(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(target: Path, source: Rewindable) -> None:
    """Copy `source` to `target` so that readers see the old file or the whole new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name[:100]}.{secrets.token_hex(6)}{TMP_SUFFIX}")
    try:
        with open(tmp, "xb") as out:
            shutil.copyfileobj(source, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class LocalStore(ObjectStore):
    """Each key is a file under `root`; writes are atomic (temp file + os.replace)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        """The path of `key`, refused if it (or a symlink on the way) leads outside root."""
        check_key(key)
        path = self.root / key
        if not path.resolve().is_relative_to(self.root):
            raise InvalidKey(f"storage key {key!r} resolves outside {self.root}")
        return path

    def _object_path(self, key: str) -> Path:
        if check_object_key(key).endswith(TMP_SUFFIX):
            raise InvalidKey(f"invalid object key {key!r}: the suffix {TMP_SUFFIX!r} is reserved")
        return self._path(key)

    def _open(self, key: str) -> BinaryIO:
        path = self._object_path(key)
        try:
            return open(path, "rb")  # the callers close it
        except _MISSING as exc:
            raise ObjectNotFound(f"no object {key!r} in {self.root}") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {key!r} in {self.root}: {exc}") from exc

    def _write(self, key: str, source: Rewindable) -> None:
        path = self._object_path(key)
        try:
            atomic_write(path, source)
        except OSError as exc:
            raise StorageError(f"cannot write {key!r} in {self.root}: {exc}") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, io.BytesIO(data))

    def get_bytes(self, key: str) -> bytes:
        with self._open(key) as src:
            return src.read()

    def put_stream(self, key: str, stream: Rewindable, size: int) -> None:
        self._write(key, stream)

    def get_file(self, key: str, path: Path) -> None:
        with self._open(key) as src:
            atomic_write(path, src)

    def copy(self, src: str, dst: str) -> None:
        with self._open(src) as source:
            self._write(dst, source)

    def exists(self, key: str) -> bool:
        return self._object_path(key).is_file()

    def read_with_token(self, key: str) -> tuple[bytes, str]:
        # No lock needed: writes replace the file atomically, and the token is derived from
        # exactly the bytes returned.
        data = self.get_bytes(key)
        return data, _token(data)

    def write_if(self, key: str, data: bytes, expected_token: str | None) -> bool:
        path = self._object_path(key)
        try:
            with _locked(path):
                try:
                    current: str | None = _token(path.read_bytes())
                except _MISSING:
                    current = None
                if current != expected_token:
                    return False
                self._write(key, io.BytesIO(data))
                return True
        except OSError as exc:
            raise StorageError(f"cannot write {key!r} in {self.root}: {exc}") from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        top = self._path(prefix) if prefix else self.root
        found = []
        for folder, _dirs, names in os.walk(top):
            for name in names:
                path = Path(folder, name)
                try:
                    info = path.lstat()
                except FileNotFoundError:  # deleted while we walked
                    continue
                # Symlinks are never objects: they could point anywhere.
                if name.endswith(TMP_SUFFIX) or not stat.S_ISREG(info.st_mode):
                    continue
                found.append(ObjectInfo(path.relative_to(self.root).as_posix(), info.st_size))
        yield from sorted(found, key=lambda item: item.key)

    def delete(self, key: str) -> None:
        path = self._object_path(key)
        try:
            if _lock_path(path).exists():
                # A key written with write_if: drop its lock file too, or the folder could
                # never be removed, but only while holding it, so no writer is inside.
                with _locked(path):
                    path.unlink(missing_ok=True)
                    _lock_path(path).unlink()
            else:
                path.unlink()
        except _MISSING:
            return
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r} in {self.root}: {exc}") from exc
        # Drop folders left empty, as S3 has none: a later key may need the name for a file.
        folder = path.parent
        while folder != self.root:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent
