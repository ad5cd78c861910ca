"""Uploading a user's directory (job code, datasets) into the tenant's storage.

Unlike the runtime's own uploads, these directories come from people: symlinks are refused
(they could point anywhere) and tool caches are left out.
"""

from __future__ import annotations

from pathlib import Path

from trainyard.storage import ObjectStore, join_key

#: Directories that are never uploaded.
SKIPPED_DIRECTORIES = {".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache"}


class PackagingError(ValueError):
    """The directory cannot be uploaded; the message names the file and the fix."""


def directory_files(local_dir: Path, what: str) -> list[Path]:
    """The files to upload from `local_dir`; `what` names it in errors (e.g. 'code.path')."""
    if not local_dir.is_dir():
        raise PackagingError(f"{what}: {local_dir} is not a directory")
    files = []
    for path in sorted(local_dir.rglob("*")):
        relative = path.relative_to(local_dir)
        if SKIPPED_DIRECTORIES.intersection(relative.parts):
            continue
        if path.is_symlink():
            raise PackagingError(
                f"{what}: {relative} is a symbolic link; replace it with the file it points to"
            )
        if path.is_file():
            files.append(path)
    if not files:
        raise PackagingError(f"{what}: {local_dir} holds no files")
    return files


def upload_directory(store: ObjectStore, local_dir: Path, prefix: str, what: str) -> list[str]:
    """Upload the files of `local_dir` under `prefix`; return the keys written."""
    keys = []
    for path in directory_files(local_dir, what):
        key = join_key(prefix, path.relative_to(local_dir).as_posix())
        store.put_file(key, path)
        keys.append(key)
    return keys
