"""The limits on what people send Trainyard, in one place, and the one way to echo their input.

Every document from outside (a manifest, a run conf, an FfDL manifest, the deployment config)
is read with `trainyard.safe_yaml.load_yaml` and checked with `check_document` before any
model sees it, so that
no input can exhaust the stack (deep nesting), memory or time (YAML alias bombs, huge
documents), or a float (integers of hundreds of digits). Values echoed in error messages go
through `shorten`, so a 5,000-character field gives a short message, not a 10 kB one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: Size of a manifest, run conf or config document, in characters.
MAX_DOCUMENT_CHARS = 256 * 1024
#: Nesting depth of mappings and lists in a document (a manifest needs 4).
MAX_DEPTH = 16
#: YAML aliases (`*name`) a document may use: a few are handy, many are an alias bomb.
MAX_YAML_ALIASES = 16
#: Length of any one string in a document (commands included).
MAX_STRING_CHARS = 8192
#: Magnitude of any integer in a document: far beyond any real quantity, well inside a float.
MAX_INTEGER = 10**18
#: Upper bounds of manifest fields.
MAX_LEARNERS = 64
MAX_GPUS = 16
MAX_CPUS = 512.0
MAX_MEMORY_BYTES = 16 * 2**40
MAX_CHECKPOINTS_KEPT = 100
MAX_DURATION_SECONDS = 7 * 86400.0
#: Code archives: their size, their number of entries and what they unpack to.
MAX_ARCHIVE_BYTES = 512 * 2**20
MAX_ARCHIVE_ENTRIES = 20_000
MAX_UNPACKED_BYTES = 2 * 2**30
#: Storage keys: what S3 allows whole, what filesystems allow per segment (in UTF-8 bytes).
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
#: Characters of an echoed value kept in error messages.
ECHO_CHARS = 60


_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,60}")


def field_name(part: object) -> str:
    """One part of a dotted field path: a plain key or list index as it is, any other key
    (empty, dotted, long, odd characters) quoted and cut short."""
    if isinstance(part, int) and not isinstance(part, bool) and abs(part) <= MAX_INTEGER:
        return str(part)
    return part if isinstance(part, str) and _PLAIN_KEY_RE.fullmatch(part) else shorten(part)


def key_length_problem(key: str) -> str | None:
    """Why a storage key (or a path to become one) is too long, or None."""
    if len(key.encode()) > MAX_KEY_BYTES:
        return f"is longer than {MAX_KEY_BYTES} bytes"
    if any(len(segment.encode()) > MAX_SEGMENT_BYTES for segment in key.split("/")):
        return f"has a name longer than {MAX_SEGMENT_BYTES} bytes"
    return None


class LimitError(ValueError):
    """Input goes beyond a limit; `path` names the field (empty: the document as a whole)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def shorten(value: object, limit: int = ECHO_CHARS) -> str:
    """`repr(value)` for an error message, cut to `limit` characters with '...' when longer."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # a self-referencing or a huge-integer value
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def check_document(document: object, path: str = "") -> None:
    """Check a parsed document (YAML, JSON or a mapping from Python) against the limits.

    Walks without recursion, so that a nesting deeper than Python's stack is an error too.

    Raises:
        LimitError: naming the first field that goes beyond a limit.
    """
    nodes = 0
    stack: list[tuple[str, object, int]] = [(path, document, 0)]
    while stack:
        where, value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_DOCUMENT_CHARS:
            raise LimitError(path, f"the document has more than {MAX_DOCUMENT_CHARS:,} values")
        if isinstance(value, str):
            if len(value) > MAX_STRING_CHARS:
                raise LimitError(
                    where,
                    f"{len(value):,} characters, more than the limit of {MAX_STRING_CHARS:,} "
                    f"({shorten(value)})",
                )
        elif isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INTEGER:
                raise LimitError(
                    where, f"the number is too large: use a value of at most {MAX_INTEGER:.0e}"
                )
        elif isinstance(value, Mapping | list | tuple):
            if depth >= MAX_DEPTH:
                raise LimitError(where, f"nests deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and len(key) > MAX_STRING_CHARS:
                    raise LimitError(where, f"a field name is too long ({shorten(key)})")
                child = f"{where}.{field_name(key)}" if where else field_name(key)
                stack.append((child if len(child) <= 200 else f"{child[:197]}...", item, depth + 1))
