"""A stand-in for nvidia-ml-py's `pynvml`: the GPUs of a machine that has none.

Put this directory first on sys.path (or PYTHONPATH) and point `TRAINYARD_FAKE_NVML` at a JSON
file (`tests.support.gpus.StandInGpus` writes it): `{"gpus": [{"uuid", "name", "memory",
"minor", "xids": [...], "remap_failed": bool}]}`. Without the variable it behaves as pynvml
does on a machine without a driver. The file is read on every call, so a test can make a GPU
fail (append an XID) while a learner runs; each event set delivers each XID once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

FAKE_NVML_ENV = "TRAINYARD_FAKE_NVML"
nvmlEventTypeXidCriticalError = 8


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):
    pass


class NVMLError_Timeout(NVMLError):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


@dataclass(frozen=True)
class _Memory:
    total: int
    free: int
    used: int = 0


@dataclass(frozen=True)
class _Event:
    device: int  # the handle: the GPU's index
    eventType: int
    eventData: int


@dataclass
class _EventSet:
    devices: set[int] = field(default_factory=set)
    delivered: set[tuple[int, int, int]] = field(default_factory=set)


def _gpus() -> list[dict[str, Any]]:
    path = os.environ.get(FAKE_NVML_ENV)
    if not path:
        raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")
    with open(path, encoding="utf-8") as handle:
        gpus: list[dict[str, Any]] = json.load(handle)["gpus"]
    return gpus


def nvmlInit() -> None:
    _gpus()


def nvmlShutdown() -> None:
    pass


def nvmlDeviceGetCount() -> int:
    return len(_gpus())


def nvmlDeviceGetHandleByIndex(index: int) -> int:
    if not 0 <= index < len(_gpus()):
        raise NVMLError("Invalid Argument")
    return index


def nvmlDeviceGetUUID(handle: int) -> str:
    return str(_gpus()[handle]["uuid"])


def nvmlDeviceGetName(handle: int) -> str:
    return str(_gpus()[handle]["name"])


def nvmlDeviceGetMinorNumber(handle: int) -> int:
    return int(_gpus()[handle].get("minor", handle))


def nvmlDeviceGetMemoryInfo(handle: int) -> _Memory:
    total = int(_gpus()[handle]["memory"])
    return _Memory(total=total, free=total)


def nvmlDeviceGetRemappedRows(handle: int) -> tuple[int, int, int, int]:
    gpu = _gpus()[handle]
    if "remap_failed" not in gpu:
        raise NVMLError_NotSupported("Not Supported")
    return 0, 0, 0, int(bool(gpu["remap_failed"]))


def nvmlEventSetCreate() -> _EventSet:
    return _EventSet()


def nvmlDeviceRegisterEvents(handle: int, event_types: int, event_set: _EventSet) -> None:
    event_set.devices.add(handle)


def nvmlEventSetWait_v2(event_set: _EventSet, timeout_ms: int) -> _Event:
    for index, gpu in enumerate(_gpus()):
        if index not in event_set.devices:
            continue
        for number, xid in enumerate(gpu.get("xids", [])):
            if (index, number, xid) not in event_set.delivered:
                event_set.delivered.add((index, number, xid))
                return _Event(index, nvmlEventTypeXidCriticalError, int(xid))
    raise NVMLError_Timeout("Timeout")
