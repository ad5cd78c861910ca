"""Units people write in manifests: Kubernetes memory and CPU quantities, and durations.

Manifests use the same spellings as Kubernetes pod specs so that a value can be copied
between them; everything is converted to plain numbers (bytes, cores, seconds) on the way in.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import TypeGuard

from trainyard.limits import shorten

_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIXES = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# At most 30 digits either side of the point: more is no quantity, and could not be a float.
_NUMBER = r"(?P<number>\d{1,30}(?:\.\d{1,30})?)"
_MEMORY_RE = re.compile(_NUMBER + r"(?P<suffix>[KMGTPE]i|[kMGTPE])?")
_CPU_RE = re.compile(_NUMBER + r"(?P<milli>m)?")
_DURATION_RE = re.compile(_NUMBER + r"(?P<unit>[smhd])?")

MEMORY_HINT = (
    "use a Kubernetes quantity such as 2Gi or 512Mi "
    "(suffixes Ki Mi Gi Ti Pi Ei, or k M G T P E for powers of 1000)"
)
CPU_HINT = "use cores such as 2 or 1.5, or millicores such as 500m"
DURATION_HINT = "use seconds such as 90, or a number with a unit s, m, h or d, such as 10s or 5m"


def _is_number(value: object) -> TypeGuard[int | float]:
    """True for int and float but not bool, which YAML produces from yes/no/true/false."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_float(value: int | float, hint: str) -> float:
    try:
        return float(value)
    except OverflowError as error:  # an int beyond any float
        raise ValueError(
            f"invalid quantity {shorten(value)}: the number is too large; {hint}"
        ) from error


def parse_memory(value: str | int | float) -> int:
    """Return a memory quantity ("2Gi", "1500M", 1024) in bytes."""
    if _is_number(value):
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(
                f"invalid quantity {shorten(value)}: not a whole number of bytes; {MEMORY_HINT}"
            )
        return int(value)
    match = _MEMORY_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"invalid quantity {shorten(value)}: {MEMORY_HINT}")
    suffix = match["suffix"] or ""
    multiplier = _BINARY_SUFFIXES.get(suffix) or _DECIMAL_SUFFIXES.get(suffix) or 1
    size = Fraction(match["number"]) * multiplier
    if size.denominator != 1:
        raise ValueError(
            f"invalid quantity {shorten(value)}: not a whole number of bytes; {MEMORY_HINT}"
        )
    return int(size)


def parse_cpu(value: str | int | float) -> float:
    """Return a CPU quantity ("500m", "2", 1.5) in cores."""
    if _is_number(value):
        return _as_float(value, CPU_HINT)
    match = _CPU_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"invalid CPU quantity {shorten(value)}: {CPU_HINT}")
    cores = float(match["number"])
    return cores / 1000 if match["milli"] else cores


def parse_duration(value: str | int | float) -> float:
    """Return a duration ("10s", "5m", "1h", "90", 30) in seconds."""
    if _is_number(value):
        return _as_float(value, DURATION_HINT)
    match = _DURATION_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"invalid duration {shorten(value)}: {DURATION_HINT}")
    return float(match["number"]) * _DURATION_UNITS[match["unit"] or "s"]


def format_bytes(size: int) -> str:
    """Render bytes in the shortest exact binary form ("2Gi"), or as a plain integer."""
    for suffix, multiplier in reversed(_BINARY_SUFFIXES.items()):
        if size and size % multiplier == 0:
            return f"{size // multiplier}{suffix}"
    return str(size)
