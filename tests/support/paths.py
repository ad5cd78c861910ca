"""A PATH without one program: how the tests show a machine where it is not installed (the
program stays installed for everything else running here)."""

from __future__ import annotations

import os
from pathlib import Path


def path_without(program: str, into: Path, path: str | None = None) -> str:
    """A PATH (one directory, `into`) with a link to every program on `path` (default: this
    process's PATH) except `program`; the first of each name wins, as on the PATH itself."""
    into.mkdir(parents=True, exist_ok=True)
    for directory in (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep):
        if not directory or not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            link = into / entry.name
            if entry.name == program or link.exists() or link.is_symlink():
                continue
            if entry.is_file() and os.access(entry.path, os.X_OK):
                link.symlink_to(entry.path)
    return str(into)
