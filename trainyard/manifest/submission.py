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

from trainyard.manifest.schema import JobManifest, parse_manifest

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


def manifest_from_conf(conf: Mapping[str, Any]) -> JobManifest:
    """Build and validate the manifest of a run from its params/conf.

    Raises:
        ManifestError: naming each invalid field.
    """
    raw = conf.get("manifest")
    document: Any = copy.deepcopy(raw) if isinstance(raw, Mapping) else raw
    if isinstance(document, Mapping):
        document = dict(document)
        for field, path in OVERRIDES.items():
            value = conf.get(field)
            if value is None or value == "":
                continue
            target = document
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
    return parse_manifest(document if document is not None else "")
