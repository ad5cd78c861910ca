"""How a DAG run's conf becomes a job manifest: the trigger form and the REST API meet here.

The trigger form shows the whole manifest (a JSON object) plus a few common fields; a common
field that is set overrides the manifest, so a user can re-run a job with another command or
more GPUs without editing JSON. `trainyard submit` and plain REST calls send
`{"manifest": {...}}` and leave the overrides empty.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from trainyard.limits import shorten
from trainyard.manifest.schema import (
    JobManifest,
    ManifestError,
    check_dns_label,
    load_document,
    parse_manifest,
)

#: Trigger-form field -> path of the manifest field it overrides.
OVERRIDES: dict[str, tuple[str, ...]] = {
    "job_name": ("name",),
    "command": ("command",),
    "data_path": ("data", "path"),
    "gpus": ("resources", "gpus"),
    "cpus": ("resources", "cpus"),
    "memory": ("resources", "memory"),
    "learners": ("resources", "learners"),
}


def example_manifest(tenant: str) -> dict[str, Any]:
    """The trigger form's starting manifest: the digits example, code in the tenant's storage."""
    return {
        "name": "digits-mlp",
        "tenant": tenant,
        "framework": {"name": "pytorch", "version": "2.13"},
        "code": {"uri": "examples/pytorch-digits"},
        "command": "python train.py --epochs 8",
        "data": {"path": "datasets/digits"},
        "resources": {"gpus": 0, "cpus": 1, "memory": "2Gi", "learners": 1},
        "checkpoint": {"interval": "10s", "keep": 3},
        "evaluation": {"command": "python evaluate.py", "metric": "accuracy", "threshold": 0.9},
    }


def example_sweep_manifest(tenant: str) -> dict[str, Any]:
    """The sweeps' trigger form's starting manifest: the digits example's learning rate
    searched over 8 trials, 2 at once, by its held-out accuracy, the worst stopped early (ASHA)."""
    return example_manifest(tenant) | {
        "command": "python train.py --epochs 8 --lr {lr}",
        "sweep": {
            "parameters": {"lr": {"distribution": "log_uniform", "low": 1e-4, "high": 1e-1}},
            "trials": 8,
            "parallel": 2,
            "algorithm": "random",
            "metric": "val_accuracy",  # the example's held-out accuracy at each epoch's end
            "goal": "maximize",
            "early_stopping": {"rule": "asha", "min_steps": 40},
        },
    }


def manifest_from_conf(conf: object) -> JobManifest:
    """Build and validate the manifest of a run from its params/conf.

    The manifest is the conf's `manifest`: a mapping, or YAML/JSON text. Each trigger-form
    field that is set overrides the manifest field of `OVERRIDES`.

    Raises:
        ManifestError: naming each invalid field (`manifest` for a manifest that is not a
            mapping, the manifest field for an override that cannot apply); nothing else.
    """
    if not isinstance(conf, Mapping):
        raise ManifestError(
            [
                (
                    "",
                    "the run conf must be a mapping such as "
                    f'{{"manifest": {{...}}}}, got {shorten(conf)}',
                )
            ]
        )
    raw = conf.get("manifest")
    if raw is None or isinstance(raw, str):
        return parse_manifest(raw or "")
    if not isinstance(raw, Mapping):
        raise ManifestError(
            [
                (
                    "manifest",
                    "must be a mapping of fields such as name and command, got "
                    f"{shorten(raw)} (of type {type(raw).__name__})",
                )
            ]
        )
    document = load_document(raw, "the manifest")  # within the limits before it is copied
    document = copy.deepcopy(document)
    for field, path in OVERRIDES.items():
        value = conf.get(field)
        if value is None or value == "":
            continue
        target: Any = document
        for depth, part in enumerate(path[:-1]):
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                where = ".".join(path[: depth + 1])
                raise ManifestError(
                    [
                        (
                            where,
                            f"is {shorten(target)} (of type {type(target).__name__}), so the "
                            f"trigger form's {field} cannot set {'.'.join(path)}: make {where} "
                            f"a mapping or leave {field} empty",
                        )
                    ]
                )
        target[path[-1]] = value
    return parse_manifest(document)


def run_job_name(conf: object) -> str:
    """The job name a run's conf gives, for its job id: the trigger form's job_name or the
    manifest's name when it is a valid name, else 'job' (a run whose manifest is missing or
    invalid still has a job id)."""
    if not isinstance(conf, Mapping):
        return "job"
    manifest = conf.get("manifest")
    name = conf.get("job_name") or (manifest.get("name") if isinstance(manifest, Mapping) else None)
    try:
        return check_dns_label(name) if isinstance(name, str) else "job"
    except ValueError:
        return "job"
