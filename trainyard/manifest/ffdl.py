"""FfDL manifests (Trainyard's ancestor format) imported as Trainyard job manifests."""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from trainyard.limits import shorten
from trainyard.manifest.schema import (
    MAX_NAME_LENGTH,
    FrameworkName,
    JobManifest,
    ManifestError,
    load_document,
    parse_manifest,
)

# FfDL spells memory like "1Gb", "1000MiB" or "8GiB": GB are powers of 1000, GiB of 1024.
_FFDL_MEMORY_RE = re.compile(
    r"(?P<number>\d{1,30}(?:\.\d{1,30})?)\s*(?P<prefix>[kmgt])(?P<binary>i?)b", re.I
)
_FFDL_MEMORY_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}
# FfDL learners read these variables; Trainyard's runtime provides the same under new names.
_FFDL_ENV = {
    "DATA_DIR": "TRAINYARD_DATA_DIR",
    "RESULT_DIR": "TRAINYARD_RESULT_DIR",
    "NUM_LEARNERS": "TRAINYARD_NUM_LEARNERS",
    "TRAINING_ID": "TRAINYARD_JOB_ID",
}
_FFDL_ENV_RE = re.compile(r"\$(\{?)(" + "|".join(_FFDL_ENV) + r")\b")


def _ffdl_memory(value: Any) -> int:
    match = _FFDL_MEMORY_RE.fullmatch(str(value).strip())
    if match is None:
        raise ValueError(
            f"invalid FfDL memory {shorten(value)}: use a number with a unit MB, MiB, GB, GiB, "
            "TB or TiB"
        )
    base = 1024 if match["binary"] else 1000
    return int(Fraction(match["number"]) * base ** _FFDL_MEMORY_POWERS[match["prefix"].lower()])


def _ffdl_name(value: Any) -> str:
    """FfDL names allow '_' and capitals; make the nearest DNS label."""
    label = re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-")
    return label[:MAX_NAME_LENGTH].rstrip("-")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def import_ffdl_manifest(
    source: str | Mapping[str, Any], tenant: str, *, image: str | None = None
) -> JobManifest:
    """Convert an FfDL manifest (Trainyard's ancestor format) into a job manifest of `tenant`.

    FfDL frameworks Trainyard has no image for (caffe, h2o3, ...) become `custom` and need
    `image`. The code is the manifest's directory; the training data is the first data
    store's `training_data` container. FfDL's evaluation_metrics (a log-collector spec) and
    result containers have no Trainyard equivalent and are dropped. Problems name Trainyard
    fields, except an unreadable FfDL `memory`.
    """
    ffdl = load_document(source, "an FfDL manifest")
    ffdl_framework = _mapping(ffdl.get("framework"))
    framework_name = str(ffdl_framework.get("name", "")).lower()
    if framework_name not in (FrameworkName.PYTORCH, FrameworkName.TENSORFLOW, FrameworkName.JAX):
        if image is None:
            raise ManifestError(
                [
                    (
                        "framework.name",
                        f"FfDL framework {shorten(framework_name)} has no Trainyard image: pass "
                        "an image to import it as a custom framework",
                    )
                ]
            )
        framework_name = FrameworkName.CUSTOM
    command = _FFDL_ENV_RE.sub(
        lambda match: f"${match[1]}{_FFDL_ENV[match[2]]}",
        str(ffdl_framework.get("command", "")).strip(),
    )
    manifest: dict[str, Any] = {
        "name": _ffdl_name(ffdl.get("name", "")),
        "description": str(ffdl.get("description", "")),
        "tenant": tenant,
        "framework": {
            "name": framework_name,
            "version": str(ffdl_framework.get("version", "")),
            "image": image,
        },
        "code": {"path": "."},
        "command": command,
    }
    resources: dict[str, Any] = {
        key: ffdl[key] for key in ("gpus", "cpus", "learners") if key in ffdl
    }
    if "memory" in ffdl:
        try:
            resources["memory"] = _ffdl_memory(ffdl["memory"])
        except ValueError as error:
            raise ManifestError([("memory", str(error))]) from error
    manifest["resources"] = resources
    data_stores = ffdl.get("data_stores")
    if isinstance(data_stores, list) and data_stores:
        container = _mapping(_mapping(data_stores[0]).get("training_data")).get("container")
        if container is not None:
            manifest["data"] = {"path": str(container)}
    return parse_manifest(manifest)
