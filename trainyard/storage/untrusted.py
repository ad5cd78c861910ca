"""Reading files that sandboxed user code wrote, from outside its sandbox, without its tricks.

The runtime uploads the checkpoints and results the user's command leaves in its workspace.
The command could leave a symlink (`results/x -> $AIRFLOW_HOME/airflow.cfg`) or a FIFO there
for the runtime, which sees the whole machine, to follow. So no symlink is followed at any
level, only regular files are read, and directories are walked by file descriptor (os.fwalk),
so that a directory swapped for a link mid-walk is not entered either.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

_NO_FOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK  # NONBLOCK: a FIFO cannot hang us


class UnsafeFile(ValueError):
    """A path under user control that is a symlink or not a regular file or directory."""


def _open_dir(directory: Path) -> int:
    try:
        return os.open(directory, _NO_FOLLOW | os.O_DIRECTORY)
    except OSError as error:
        raise UnsafeFile(f"{directory} is not a directory (a symlink?): {error.strerror}") from None


def regular_files(directory: Path) -> list[str]:
    """The relative names (a/b.txt) of the regular files under `directory`, sorted.

    Raises:
        UnsafeFile: `directory` itself is a symlink or not a directory.
    """
    top = _open_dir(directory)
    try:
        names = []
        for root, _dirs, files, root_fd in os.fwalk(".", dir_fd=top):
            for name in files:
                info = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
                if stat.S_ISREG(info.st_mode):
                    names.append(os.path.normpath(os.path.join(root, name)))
        return sorted(names)
    finally:
        os.close(top)


def open_regular(directory: Path, name: str) -> BinaryIO:
    """Open `directory/name` for reading, following no symlink on the way.

    Raises:
        UnsafeFile: a part of the path is a symlink, or the file is not a regular file.
    """
    fd = _open_dir(directory)
    try:
        *parents, leaf = Path(name).parts
        for part in parents:
            next_fd = os.open(part, _NO_FOLLOW | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        file_fd = os.open(leaf, _NO_FOLLOW, dir_fd=fd)
    except OSError as error:
        raise UnsafeFile(f"{directory / name}: not a plain path ({error.strerror})") from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise UnsafeFile(f"{directory / name} is not a regular file")
    return os.fdopen(file_fd, "rb")
