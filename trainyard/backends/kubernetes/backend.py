"""The Kubernetes backend: what a tenant's learner pods look like, and what their ends mean.

The pods themselves run in the learner task, `operators.tasks.kubernetes_learner` (the provider's
KubernetesPodOperator); this class holds the parts that need no Airflow: the check at validate,
each rank's pod and the rendezvous Service (`pods.py`), and each pod's end as a `LearnerEnd`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from trainyard.backends.base import LearnerBackend, LearnerEnd, LearnerSpec
from trainyard.backends.kubernetes.pods import (
    LEARNER_CONTAINER,
    LearnerPod,
    classify_pod_failure,
    gpu_placement,
    learner_exit,
    learner_image,
    learner_pod,
    rendezvous_service,
)
from trainyard.failures import RESUME_FIX, PlatformFault, Preemption, TrainyardFailure
from trainyard.jobs.attempts import judge_attempt
from trainyard.manifest.schema import JobManifest, Resources
from trainyard.storage import ObjectStore
from trainyard.tenancy.config import KubernetesConfig

if TYPE_CHECKING:
    from kubernetes.client import models as k8s


class KubernetesBackend(LearnerBackend):
    """Learners as pods in the tenant's namespace (`learner_backend: kubernetes`)."""

    name = "kubernetes"

    @cached_property
    def cluster(self) -> KubernetesConfig:
        """The config's cluster section (the config refuses Kubernetes tenants without one)."""
        if self.config.kubernetes is None:
            raise PlatformFault(
                "the deployment config describes no Kubernetes cluster",
                "an admin must add the config's kubernetes section",
            )
        return self.config.kubernetes

    def check(self, manifest: JobManifest) -> None:
        """The framework needs an image, and a GPU type nodes of that type."""
        learner_image(manifest.framework, self.cluster)
        gpu_placement(manifest.resources, self.cluster)

    def pod(self, spec: LearnerSpec, manifest: JobManifest, rank: int = 0) -> LearnerPod:
        """The pod of learner `rank` in the attempt of `spec`."""
        return learner_pod(spec, manifest, self.tenant, self.cluster, rank)

    def rendezvous_service(self, spec: LearnerSpec) -> k8s.V1Service:
        """The headless Service through which a group's ranks reach each other."""
        return rendezvous_service(spec, self.tenant, self.cluster)

    def judge_pods(
        self,
        store: ObjectStore,
        spec: LearnerSpec,
        statuses: Mapping[int, Mapping[str, Any]],
        resources: Resources,
        *,
        first: int | None = None,
        error: str | None = None,
        deleted: bool = False,
    ) -> TrainyardFailure | None:
        """The attempt's failure from its pods' final statuses (by rank; a rank whose status
        could not be read is missing), judged by `judge_attempt`.

        Each pod's own failure (OOM, eviction, image, scheduling) comes before the learners'
        outcomes; `first` is the rank that stopped the group, looked at first. `error` is the
        pod operator's, when it raised: a learner whose end no status shows, and that wrote no
        outcome, then ended with its pod. `deleted`: the error is that the pod was gone, which
        only a deletion does (a drain, an eviction, a user), the cluster's graceful stop: such
        a learner was stopped before its runtime could say so, a preemption; any other error
        leaves it a platform fault.
        """
        ranks = sorted(statuses, key=lambda rank: rank != first)
        ends = [
            LearnerEnd(
                rank,
                learner_exit(statuses[rank]),
                classify_pod_failure(statuses[rank], resources),
            )
            for rank in ranks
        ]
        unseen: TrainyardFailure | None = None
        if deleted:
            unseen = Preemption(
                f"learner pod was deleted before its runtime wrote how it ended: {error}",
                RESUME_FIX,
            )
        elif error is not None:
            unseen = PlatformFault(
                f"learner pod ended before its {LEARNER_CONTAINER!r} container did: {error}",
                RESUME_FIX,
            )
        return judge_attempt(store, spec, ends, unseen)
