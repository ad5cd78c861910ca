"""Uploading a user's directory (job code, datasets) or code archive into the tenant's storage.

Unlike the runtime's own uploads, these come from people: symlinks are refused (they could
point anywhere) and tool caches are left out. A code archive (.tar, .tar.gz, .tgz, .zip) is
checked entry by entry before anything of it is written: links, special files, absolute names
and '..' are refused (tarfile's `data` filter refuses those too, but lets links inside the
archive through). Its files go straight into object storage, never through a local directory.
"""

from __future__ import annotations

import io
import lzma
import stat
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from trainyard.limits import (
    MAX_ARCHIVE_BYTES,
    MAX_ARCHIVE_ENTRIES,
    MAX_UNPACKED_BYTES,
    key_length_problem,
    shorten,
)
from trainyard.storage import ObjectStore, join_key

#: What to do about an archive that cannot be unpacked.
ARCHIVE_FIX = (
    "rebuild the archive from regular files under relative paths, such as "
    "`tar -czf code.tar.gz -C DIR .` after replacing links with the files they point to"
)
#: Names of code archives that `code.path` or `code.uri` may give instead of a directory.
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")

#: Directories that are never uploaded.
SKIPPED_DIRECTORIES = {".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache"}


class PackagingError(ValueError):
    """The directory cannot be uploaded; the message names the file and the fix."""


def directory_files(local_dir: Path, what: str) -> list[Path]:
    """The files to upload from `local_dir`; `what` names it in errors (e.g. 'code.path')."""
    try:
        is_dir = local_dir.is_dir()
    except OSError as error:  # a name too long for the filesystem, ...
        raise PackagingError(
            f"{what}: {shorten(str(local_dir))} cannot be read ({error.strerror})"
        ) from error
    if not is_dir:
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
            problem = _entry_problem(relative.as_posix(), "file")
            if problem is not None:
                raise PackagingError(
                    f"{what}: {shorten(relative.as_posix())} {problem}: rename it or leave it out"
                )
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


def is_archive(name: str) -> bool:
    """Whether `name` (a file or storage key) is a code archive, by its suffix."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _entry_problem(name: str, kind: str) -> str | None:
    """Why an archive entry may not be unpacked, or None. `kind`: file, dir, symlink, ..."""
    normal = unicodedata.normalize("NFKC", name)
    if kind == "symlink":
        return "is a symbolic link"
    if kind == "hardlink":
        return "is a hard link"
    if kind not in ("file", "dir"):
        return f"is a special file ({kind})"
    if normal.startswith("/") or normal[1:2] == ":":
        return "has an absolute name"
    if "\\" in normal:
        return "has a backslash in its name"
    if ".." in normal.split("/"):
        return "leaves the archive ('..')"
    if any(unicodedata.category(char) == "Cc" for char in normal):
        return "has a control character in its name"
    if kind == "file" and not _relative(name):
        return "has an empty name"
    return key_length_problem(normal)


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.isreg():
        return "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    return "device or FIFO"


def _zip_kind(info: zipfile.ZipInfo) -> str:
    # The Unix file type, where the zip tool recorded one (many record only permissions).
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        return "symlink"
    if info.filename.endswith("/"):  # ZipInfo.is_dir() fails on an empty name
        return "dir"
    if file_type not in (0, stat.S_IFREG):
        return "device or FIFO"
    return "file"


def archive_files(data: bytes, name: str, what: str) -> dict[str, bytes]:
    """The regular files of a code archive, by their relative path, after checking every entry.

    Args:
        data: the archive's bytes; its type is found from `name`'s suffix.
        name: the archive's file name or storage key, for messages.
        what: the manifest field it came from (code.path or code.uri), for messages.

    Raises:
        PackagingError: naming the field and every entry that cannot be unpacked, or the limit
            (see trainyard.limits) it goes beyond.
    """
    if len(data) > MAX_ARCHIVE_BYTES:
        raise PackagingError(
            f"{what}: {name} has {len(data):,} bytes, more than the limit of "
            f"{MAX_ARCHIVE_BYTES:,}: keep data out of the code archive and upload it with "
            "'trainyard data upload'"
        )
    try:
        if name.lower().endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                entries = [(info.filename, _zip_kind(info), info) for info in archive.infolist()]
                _check_sizes(name, what, [info.file_size for info in archive.infolist()])
                problems = _problems(entries)
                if not problems:
                    return {
                        _relative(entry): _read_zip_entry(archive, info)
                        for entry, kind, info in entries
                        if kind == "file"
                    }
        else:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                members = [(m.name, _tar_kind(m), m) for m in _tar_members(tar, name, what)]
                _check_sizes(name, what, [member.size for _, _, member in members])
                problems = _problems(members)
                if not problems:
                    files = {}
                    for entry, kind, member in members:
                        if kind == "file":
                            reader = tar.extractfile(member)
                            assert reader is not None  # a regular file always has data
                            files[_relative(entry)] = reader.read()
                    return files
    except PackagingError:
        raise
    # What a damaged or unusual archive makes zipfile/tarfile raise: bad headers, checksums,
    # compression streams; encrypted entries (RuntimeError); unknown methods (NotImplemented).
    except (
        tarfile.TarError,
        zipfile.BadZipFile,
        EOFError,
        OSError,
        ValueError,
        RuntimeError,
        NotImplementedError,
        zlib.error,
        lzma.LZMAError,
    ) as error:
        raise PackagingError(
            f"{what}: {name} is not a readable archive ({shorten(str(error), 200)})"
        ) from error
    shown = problems[:10] + ([f"and {len(problems) - 10} more"] if len(problems) > 10 else [])
    raise PackagingError(f"{what}: {name} cannot be unpacked: {'; '.join(shown)}")


def _read_zip_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """An entry's bytes, never more than its header declares (which the limits checked)."""
    with archive.open(info) as entry:
        content = entry.read(info.file_size + 1)
    if len(content) > info.file_size:
        raise zipfile.BadZipFile(f"entry {shorten(info.filename)} is larger than its header says")
    return content


def _tar_members(tar: tarfile.TarFile, name: str, what: str) -> list[tarfile.TarInfo]:
    """The archive's members, read one by one so that a huge member list stops at the limit."""
    members = []
    for member in tar:
        members.append(member)
        if len(members) > MAX_ARCHIVE_ENTRIES:
            raise _too_many_entries(name, what)
    return members


def _too_many_entries(name: str, what: str) -> PackagingError:
    return PackagingError(
        f"{what}: {name} has more than {MAX_ARCHIVE_ENTRIES:,} entries: archive the code "
        "alone, and upload data with 'trainyard data upload'"
    )


def _check_sizes(name: str, what: str, sizes: list[int]) -> None:
    """Refuse archives that would unpack to too many files or bytes (a zip bomb), from the
    sizes their headers declare, before anything is decompressed."""
    if len(sizes) > MAX_ARCHIVE_ENTRIES:
        raise _too_many_entries(name, what)
    if sum(sizes) > MAX_UNPACKED_BYTES:
        raise PackagingError(
            f"{what}: {name} unpacks to {sum(sizes):,} bytes, more than the limit of "
            f"{MAX_UNPACKED_BYTES:,}: keep data out of the code archive"
        )


def _problems(entries: Sequence[tuple[str, str, object]]) -> list[str]:
    problems = [
        f"entry {shorten(entry)} {problem}"
        for entry, kind, _ in entries
        if (problem := _entry_problem(entry, kind)) is not None
    ]
    if problems:
        return problems
    # A file cannot also be a folder: 'a' and 'a/b' would collide in storage.
    files = {_relative(entry) for entry, kind, _ in entries if kind == "file"}
    return [
        f"entry {shorten(name)} is inside {shorten(folder)}, which is a file"
        for name in sorted(files)
        for folder in ("/".join(name.split("/")[:end]) for end in range(1, name.count("/") + 1))
        if folder in files
    ]


def _relative(entry: str) -> str:
    """An entry's name as a key: './a//b' -> 'a/b' (checked by _entry_problem already)."""
    parts = unicodedata.normalize("NFKC", entry).split("/")
    return "/".join(part for part in parts if part not in ("", "."))


def unpack_archive(store: ObjectStore, data: bytes, name: str, prefix: str, what: str) -> list[str]:
    """Check a code archive whole, then write its files under `prefix`; return the keys.

    Raises:
        PackagingError: an entry cannot be unpacked (nothing is written) or none is a file.
    """
    files = archive_files(data, name, what)
    if not files:
        raise PackagingError(f"{what}: {name} holds no files")
    keys = []
    for relative, content in sorted(files.items()):
        key = join_key(prefix, relative)
        store.put_bytes(key, content)
        keys.append(key)
    return keys
