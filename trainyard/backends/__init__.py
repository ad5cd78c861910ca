"""Learner backends: where a learner process runs. The DAG is the same for every backend."""

from __future__ import annotations

from trainyard.backends.base import OOM_KILLED, LearnerBackend, LearnerExit, LearnerSpec, RunMode


def get_backend(name: str) -> LearnerBackend:
    """The backend named in the deployment config (`learner_backend`)."""
    if name == "local":
        from trainyard.backends.local import LocalProcessBackend

        return LocalProcessBackend()
    raise ValueError(f"unknown learner backend {name!r}: supported backends are: local")


__all__ = ["OOM_KILLED", "LearnerBackend", "LearnerExit", "LearnerSpec", "RunMode", "get_backend"]
