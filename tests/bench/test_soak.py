"""The chaos soak's short profile (`make soak` runs the long ones): three minutes of faults of
many kinds on the embedded default (one tenant's learners on the fake Kubernetes cluster), with
nothing lost, duplicated or split, and every fault classed right."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.common import Context, console
from bench.soak import (
    FAULTS,
    KUBERNETES,
    SUPERSEDED_EXIT_S,
    Injected,
    Soak,
    SplitBrainWatch,
    ended_rightly,
    epochs_per_framework,
    soak_deployment,
)
from devkit.s3_server import S3Server, running_s3_server


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto server of this module's own: the session's holds every other module's buckets,
    users and objects by now, and this module writes more than any (its faults, or its
    seventeen jobs, need the storage to answer as fast as a fresh server does)."""
    with running_s3_server(tmp_path_factory.mktemp("own-s3"), authenticate=True) as server:
        yield server


@pytest.mark.e2e
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


def test_a_job_an_out_of_memory_kill_ended_is_not_lost_when_a_later_fault_hit_it_too() -> None:
    """The 3-minute profile once counted such a job lost: the triggerer's kill landed on the
    attempt after the out-of-memory kill, and only the last fault's kind was asked."""
    by_name = {fault.name: fault for fault in FAULTS}
    job = "acme.soak-pytorch-4.20261207-121412-8c12"

    def hit(name: str, at: float) -> Injected:
        fault = by_name[name]
        return Injected(fault, at, {job: 1}, {job: fault.right_for(KUBERNETES, celery=False)})

    oom, triggerer = hit("out of memory (OOMKilled)", 1.0), hit("triggerer killed", 2.0)

    assert ended_rightly([oom, triggerer], job, "resource_error")
    assert not ended_rightly([oom, triggerer], job, "platform_fault")
    assert not ended_rightly([triggerer], job, "unharmed")  # the triggerer's ends no job


def test_a_handover_is_no_split_brain_but_a_superseded_learner_that_lives_on_is() -> None:
    """The 1-minute soak's two "split brains" were handovers: the old attempt, told to stop,
    was alive 1-2 s beside the new one, its writes refused. One alive past the time a
    superseded learner takes to notice and exit is a split brain."""
    watch = SplitBrainWatch()
    handover, stuck = "globex.soak-jax-10.20261207-115435-46a4", "acme.soak-pytorch-2.x"
    watch.see({handover: {1}, stuck: {1}}, now=0.0)
    watch.see({handover: {1, 2}, stuck: {1, 2}}, now=1.0)
    watch.see({handover: {1, 2}, stuck: {1, 2}}, now=3.0)
    watch.see({handover: {2}, stuck: {1, 2}}, now=4.0)
    watch.see({handover: {2, 3}, stuck: {1, 2}}, now=2.0 + SUPERSEDED_EXIT_S)  # a new handover

    assert watch.split_brains == [
        f"{stuck} (attempt 1 alive {SUPERSEDED_EXIT_S + 1:.0f} s beside a newer one)"
    ]
    assert watch.overlaps[handover, 1] == 2.0
    assert watch.overlaps[handover, 2] == 0.0
