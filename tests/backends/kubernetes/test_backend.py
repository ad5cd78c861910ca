"""The Kubernetes backend's check at validate, and its pods' ends judged as an attempt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trainyard.backends import RunMode, backend_for
from trainyard.backends.kubernetes import KubernetesBackend
from trainyard.failures import PlatformFault, Preemption, ResourceError
from trainyard.manifest.schema import parse_manifest
from trainyard.manifest.submission import example_manifest
from trainyard.storage.local import LocalStore
from trainyard.tenancy.config import TrainyardConfig

JOB_ID = "acme.digits-mlp.20261124-215908-abcd"
SUCCEEDED = {"container_statuses": [{"name": "base", "state": {"terminated": {"exit_code": 0}}}]}
EVICTED = {"reason": "Evicted", "message": "the node was low on memory"}


def kubernetes_backend(tmp_path: Path) -> KubernetesBackend:
    config = TrainyardConfig.model_validate(
        {
            "work_dir": str(tmp_path / "work"),
            "learner_backend": "kubernetes",
            "tenants": [
                {"name": "acme", "storage": {"kind": "s3", "endpoint": "minio:9000", "bucket": "a"}}
            ],
            "kubernetes": {
                "images": {"pytorch:2.13": "registry.example/pytorch:2.13"},
                "gpu_node_selectors": {"t4": {"gpu.example/type": "t4"}},
            },
        }
    )
    backend = backend_for(config, "acme")
    assert isinstance(backend, KubernetesBackend)
    return backend


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param(
            {"framework": {"name": "pytorch", "version": "1.0"}},
            "framework.version",
            id="no-image",
        ),
        pytest.param(
            {"resources": {"gpus": 1, "gpu_type": "h100"}}, "resources.gpu_type", id="gpu"
        ),
    ],
)
def test_a_job_the_cluster_cannot_run_is_refused_naming_the_field(
    tmp_path: Path, changes: dict[str, Any], field: str
) -> None:
    manifest = parse_manifest(example_manifest("acme") | changes)

    with pytest.raises(ResourceError) as refused:
        kubernetes_backend(tmp_path).check(manifest)

    assert refused.value.cause.startswith(f"{field}: ")


def test_a_job_the_cluster_can_run_passes(tmp_path: Path) -> None:
    changes = {"resources": {"gpus": 1, "gpu_type": "t4"}}
    kubernetes_backend(tmp_path).check(parse_manifest(example_manifest("acme") | changes))


@pytest.mark.parametrize(
    ("statuses", "error", "deleted", "expected"),
    [
        pytest.param({0: SUCCEEDED}, None, False, None, id="succeeded"),
        pytest.param({0: SUCCEEDED, 1: EVICTED}, None, False, Preemption, id="evicted-rank"),
        pytest.param({0: {}}, "(500) Internal", False, PlatformFault, id="unread-pod"),
        pytest.param({0: {}}, "Pod not found", True, Preemption, id="deleted-pod"),
    ],
)
def test_the_pods_ends_are_judged_as_an_attempt(
    tmp_path: Path,
    statuses: dict[int, dict[str, Any]],
    error: str | None,
    deleted: bool,
    expected: type | None,
) -> None:
    backend = kubernetes_backend(tmp_path)
    manifest = parse_manifest(example_manifest("acme") | {"resources": {"learners": len(statuses)}})
    spec = backend.learner_spec(
        manifest, job_id=JOB_ID, mode=RunMode.TRAIN, attempt=1, credentials=None, on_output=print
    )

    failure = backend.judge_pods(
        LocalStore(tmp_path), spec, statuses, manifest.resources, error=error, deleted=deleted
    )

    assert (failure is None) if expected is None else isinstance(failure, expected)
