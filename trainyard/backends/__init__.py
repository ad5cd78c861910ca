"""Learner backends: where a learner process runs. The DAG is the same for every backend."""

from __future__ import annotations

from trainyard.backends.base import OOM_KILLED, LearnerBackend, LearnerExit, LearnerSpec, RunMode


def get_backend(name: str) -> LearnerBackend:
    """The process backend named in the deployment config (`learner_backend`).

    Kubernetes learners are pods run by operators/kubernetes_learner.py, not a process
    backend, and the DAG factory does not use that operator yet.
    """
    if name == "local":
        from trainyard.backends.local import LocalProcessBackend

        return LocalProcessBackend()
    raise ValueError(
        f"learner_backend {name!r} cannot run learners in this version of the training DAG "
        "(the Kubernetes learner task is not wired in yet): use learner_backend: local"
    )


__all__ = ["OOM_KILLED", "LearnerBackend", "LearnerExit", "LearnerSpec", "RunMode", "get_backend"]
