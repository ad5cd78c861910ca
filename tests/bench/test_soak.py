"""The chaos soak's short profile (`make soak` runs the long ones): three minutes of faults of
many kinds on the embedded default (one tenant's learners on the fake Kubernetes cluster), with
nothing lost, duplicated or split, and every fault classed right."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.common import Context, console
from bench.soak import FAULTS, KUBERNETES, Soak, epochs_per_framework, soak_deployment
from devkit.s3_server import S3Server, running_s3_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto server of this module's own: the session's holds every other module's buckets,
    users and objects by now, and this module writes more than any (its faults, or its
    seventeen jobs, need the storage to answer as fast as a fresh server does)."""
    with running_s3_server(tmp_path_factory.mktemp("own-s3"), authenticate=True) as server:
        yield server


def test_three_minutes_of_faults_lose_nothing(tmp_path: Path, s3_server: S3Server) -> None:
    ctx = Context(tmp_path / "bench", quick=True, repeats=1, cheap_repeats=1, airflow_settings={})
    ctx.workdir.mkdir()
    try:
        epochs = epochs_per_framework(ctx, job_seconds=30)
        with soak_deployment(tmp_path, s3_server) as (deployment, kubernetes):
            soak = Soak(
                deployment,
                s3_server,
                epochs,
                parallel=3,
                fault_every=30,
                # Draws learner, pod and node faults first, then the control plane's.
                seed=8,
                kubernetes=kubernetes,
            )
            report = soak.run(minutes=3, drain_minutes=10)
    finally:
        ctx.close()
    console.print(report.markdown())

    kinds = {injected.fault for injected in report.injected}
    assert len(kinds) >= len(FAULTS) // 2, f"only {len(kinds)} kinds of fault were injected"
    assert any(fault.backend == KUBERNETES for fault in kinds), "no Kubernetes fault landed"
    assert not report.split_brains
    assert not report.lost
    assert not report.duplicated
    assert not report.wrong
