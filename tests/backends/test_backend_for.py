"""`backend_for`: the one place a tenant's `learner_backend` setting becomes a backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.backends import LearnerBackend, ProcessBackend, backend_for
from trainyard.backends.bare import BareProcessBackend
from trainyard.backends.kubernetes import KubernetesBackend
from trainyard.backends.local import LocalProcessBackend
from trainyard.tenancy.config import TrainyardConfig


def config(tmp_path: Path) -> TrainyardConfig:
    s3 = {"kind": "s3", "endpoint": "minio:9000", "bucket": "b"}
    return TrainyardConfig.model_validate(
        {
            "work_dir": str(tmp_path / "work"),
            "learner_backend": "local",
            "tenants": [
                {"name": "acme", "storage": {"kind": "local", "root": str(tmp_path / "acme")}},
                {"name": "globex", "storage": s3, "learner_backend": "kubernetes"},
                {"name": "hooli", "storage": {"kind": "local", "root": str(tmp_path / "h")}}
                | {"learner_backend": "bare"},
            ],
            "kubernetes": {"images": {"pytorch:2.13": "registry.example/pytorch:2.13"}},
        }
    )


@pytest.mark.parametrize(
    ("tenant", "expected", "runs_in_the_task"),
    [
        pytest.param("acme", LocalProcessBackend, True, id="deployment-default-local"),
        pytest.param("globex", KubernetesBackend, False, id="tenant-on-kubernetes"),
        pytest.param("hooli", BareProcessBackend, True, id="tenant-on-the-test-backend"),
    ],
)
def test_each_setting_chooses_its_backend_for_that_tenant(
    tmp_path: Path, tenant: str, expected: type[LearnerBackend], runs_in_the_task: bool
) -> None:
    backend = backend_for(config(tmp_path), tenant)

    assert type(backend) is expected
    assert backend.tenant.name == tenant
    assert backend.name == config(tmp_path).learner_backend_of(tenant)
    assert isinstance(backend, ProcessBackend) is runs_in_the_task


def test_an_unknown_tenant_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="initech"):
        backend_for(config(tmp_path), "initech")
