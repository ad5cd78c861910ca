"""Learner backends: where a tenant's learners run. The DAG is the same for every backend.

`backend_for` is the one place that decides which backend a tenant's `learner_backend` setting
means; everything else (validate, the learner task, the DAG factory) asks it.
"""

from __future__ import annotations

import importlib

from trainyard.backends.base import (
    OOM_KILLED,
    LearnerBackend,
    LearnerEnd,
    LearnerExit,
    LearnerSpec,
    ProcessBackend,
    RunMode,
)
from trainyard.tenancy.config import LearnerBackendName, TrainyardConfig

#: The backend class of each `learner_backend` setting, imported only once chosen.
BACKENDS: dict[LearnerBackendName, str] = {
    "local": "trainyard.backends.local:LocalProcessBackend",
    "kubernetes": "trainyard.backends.kubernetes:KubernetesBackend",
    "bare": "trainyard.backends.bare:BareProcessBackend",  # for tests only
}


def backend_for(config: TrainyardConfig, tenant: str) -> LearnerBackend:
    """The backend that runs `tenant`'s learners, as the deployment config sets it.

    Raises:
        KeyError: no tenant of that name.
    """
    module, _, name = BACKENDS[config.learner_backend_of(tenant)].partition(":")
    backend: type[LearnerBackend] = getattr(importlib.import_module(module), name)
    return backend(config, tenant)


__all__ = [
    "OOM_KILLED",
    "LearnerBackend",
    "LearnerEnd",
    "LearnerExit",
    "LearnerSpec",
    "ProcessBackend",
    "RunMode",
    "backend_for",
]
