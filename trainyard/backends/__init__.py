"""Learner backends: where a learner process runs. The DAG is the same for every backend."""

from __future__ import annotations

from trainyard.backends.base import OOM_KILLED, LearnerBackend, LearnerExit, LearnerSpec, RunMode


def get_backend(name: str) -> LearnerBackend:
    """The process backend named in the deployment config (`learner_backend`).

    Kubernetes learners are pods run by operators/kubernetes_learner.py, the tasks the DAG
    factory builds for such tenants: they never ask for a process backend.
    """
    if name == "local":
        from trainyard.backends.local.backend import LocalProcessBackend

        return LocalProcessBackend()
    raise ValueError(
        f"learner_backend {name!r} has no process backend: Kubernetes learners run as pods of "
        "the KubernetesLearnerOperator task, which the DAG factory builds for such tenants"
    )


__all__ = ["OOM_KILLED", "LearnerBackend", "LearnerExit", "LearnerSpec", "RunMode", "get_backend"]
