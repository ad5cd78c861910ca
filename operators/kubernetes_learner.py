"""The learner tasks on Kubernetes: the provider's KubernetesPodOperator, set up per job.

Training and evaluation both run the learner runtime in a pod (`train` and `evaluate` mode), so
a Kubernetes tenant's user code never runs on an Airflow worker.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from operators.base import TrainyardOperator, classified_failures
from operators.evaluate import EvaluateModelOperator
from operators.learner import LearnerOperator, learner_failure
from trainyard.backends import RunMode
from trainyard.backends.base import LearnerSpec
from trainyard.backends.kubernetes import (
    ATTEMPT_LABEL,
    LEARNER_CONTAINER,
    RANK_LABEL,
    RESUME_FIX,
    classify_pod_failure,
    learner_exit,
    learner_pod,
    rendezvous_service,
)
from trainyard.failures import PlatformFault, TrainyardFailure
from trainyard.manifest.schema import JobManifest


class KubernetesLearnerOperator(KubernetesPodOperator, LearnerOperator):
    """Train in a pod: the runtime in the framework's image, in the tenant's namespace.

    Both the provider's operator and Trainyard's learner task, by multiple inheritance rather
    than composition: the pod's life (creation, reattaching to the pod of an interrupted try,
    following its log, events on failure, deletion) is the provider's, and the job's side
    (tenant, storage, job record, learner spec, attempt record) is the local learner's code.
    The retry policy and the failure callback also need the task itself to be a
    TrainyardOperator. Both bases share Airflow's BaseOperator, and their `__init__`s pass
    keyword arguments along cooperatively.

    The pod is set up in `execute`, after Airflow rendered the template fields, so that no
    manifest value (a command with `{{`) is ever taken for a template. It runs synchronously:
    classifying its end needs its final status, read before the provider deletes it.

    A multi-learner job (`resources.learners > 1`) is a group: the provider's pod is rank 0 (the
    one whose log is followed and that a retry reattaches to); the task creates the other ranks
    from the same pod spec, plus a headless Service through which they reach rank 0 (PyTorch's
    `env://` rendezvous). All pods must start, each within the startup timeout, or the attempt
    fails (gang start); once running, a failed rank stops the group (rank 0 is deleted with its
    grace period, so it commits a final checkpoint), and the whole group goes with the attempt,
    so the retry starts every rank afresh from the newest committed checkpoint.
    """

    template_fields: Sequence[str] = (
        *KubernetesPodOperator.template_fields,
        *TrainyardOperator.template_fields,
    )
    mode = RunMode.TRAIN

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            # The cluster comes from the Trainyard config (in_cluster, config_file), not from
            # an Airflow connection.
            kubernetes_conn_id=None,
            # Reattach to a still-running pod on retry (`durable` replaces the deprecated
            # `reattach_on_restart` on Airflow 3.3 and sets it).
            durable=True,
            deferrable=False,
            get_logs=True,
            log_events_on_failure=True,
            on_finish_action="delete_pod",
            security_context=k8s.V1PodSecurityContext(run_as_non_root=True),
            container_security_context=k8s.V1SecurityContext(allow_privilege_escalation=False),
            **kwargs,
        )
        self.attempt_labels: dict[str, str] = {}
        self.final_status: dict[str, Any] | None = None
        # The other ranks of a multi-learner job: their env, then their pods once created.
        self.rank_envs: dict[int, list[k8s.V1EnvVar]] = {}
        self.rendezvous: k8s.V1Service | None = None
        self.workers: dict[int, k8s.V1Pod] = {}
        self.worker_statuses: dict[int, dict[str, Any]] = {}
        self.failed_rank: int | None = None
        self._group_done = threading.Event()

    def execute(self, context: Context) -> Any:
        # The provider's execute comes first in the method order; the task's is the learner's.
        return LearnerOperator.execute(self, context)

    def run_learners(self, manifest: JobManifest, context: Context) -> None:
        """Run the learner pod (the provider's execute) and conclude the attempt from its end."""
        with classified_failures():
            self.configure(manifest, context)
        started_at = datetime.now(UTC)
        try:
            KubernetesPodOperator.execute(self, context)
        except Exception as error:  # what happened is read from the pod, not the exception
            self.conclude(manifest, started_at, error)
        else:
            self.conclude(manifest, started_at, None)

    def configure(self, manifest: JobManifest, context: Context) -> None:
        """Set the pod up for this job and attempt, from its manifest and the deployment config."""
        cluster = self.trainyard_config.kubernetes
        if cluster is None:
            raise PlatformFault(
                "the deployment config describes no Kubernetes cluster",
                "an admin must add the config's kubernetes section",
            )
        spec = self.learner_spec(manifest, context["ti"].try_number)
        pod = learner_pod(spec, manifest, self.tenant_config, cluster)
        self.name = pod.name
        self.image = pod.image
        self.namespace = pod.namespace
        self.service_account_name = pod.service_account
        self.arguments = pod.arguments
        self.env_vars = pod.env
        self.container_resources = pod.resources
        self.labels = pod.labels
        self.attempt_labels = pod.attempt_labels
        self.annotations = pod.annotations
        self.node_selector = pod.node_selector
        self.tolerations = pod.tolerations
        self.volumes = pod.volumes
        self.volume_mounts = pod.volume_mounts
        self.termination_grace_period = pod.termination_grace_seconds
        self.startup_timeout_seconds = cluster.startup_timeout_seconds
        self.schedule_timeout_seconds = cluster.startup_timeout_seconds
        self.in_cluster = cluster.in_cluster
        self.config_file = str(cluster.config_file) if cluster.config_file else None
        if spec.num_learners > 1:
            self.rank_envs = {
                rank: learner_pod(spec, manifest, self.tenant_config, cluster, rank).env
                for rank in range(1, spec.num_learners)
            }
            self.rendezvous = rendezvous_service(spec, self.tenant_config, cluster)

    def get_or_create_pod(self, pod_request_obj: k8s.V1Pod, context: Context) -> k8s.V1Pod:
        """Rank 0 as the provider creates (or finds) it, then the group's other pods."""
        pod = super().get_or_create_pod(pod_request_obj, context)
        if self.rendezvous is not None:
            try:
                self.start_group(pod)
            except Exception:
                self.remote_pod = pod  # so that cleanup deletes rank 0 and what was created
                raise
        return pod

    def start_group(self, leader: k8s.V1Pod) -> None:
        """The rendezvous Service and ranks 1..N-1, named after rank 0 (kept on reattach)."""
        assert self.rendezvous is not None
        assert self.pod_request_obj is not None
        self._create(self.client.create_namespaced_service, self.rendezvous)
        for rank, env in self.rank_envs.items():
            worker = copy.deepcopy(self.pod_request_obj)
            worker.metadata.name = f"{leader.metadata.name}-rank-{rank}"
            worker.metadata.labels[RANK_LABEL] = str(rank)
            worker.spec.containers[0].env = env
            self._create(self.client.create_namespaced_pod, worker)
            self.workers[rank] = worker
        self.log.info(
            "started learner ranks 1-%d beside %s", len(self.workers), leader.metadata.name
        )

    def _create(self, create: Callable[..., Any], body: Any) -> None:
        """Create `body`; one that exists already (a reattached group) is kept."""
        try:
            create(namespace=self.namespace, body=body)
        except ApiException as error:
            if error.status != 409:
                raise

    def await_pod_start(self, pod: k8s.V1Pod) -> None:
        """Gang start: rank 0, then every other rank, each within the startup timeout."""
        super().await_pod_start(pod)
        for worker in self.workers.values():
            super().await_pod_start(worker)
        if self.workers:
            threading.Thread(
                target=self.watch_group, args=(pod,), name="trainyard-group", daemon=True
            ).start()

    def watch_group(self, leader: k8s.V1Pod) -> None:
        """Stop rank 0 once another rank failed, so that the group does not hang in a
        collective: its deletion gives it the grace period for a final checkpoint."""
        while not self._group_done.wait(GROUP_POLL_SECONDS):
            for rank, worker in self.workers.items():
                try:
                    phase = self.pod_manager.read_pod(worker).status.phase
                except ApiException as error:
                    phase = "Deleted" if error.status == 404 else None
                except AirflowException:  # the API is unreachable: look again next time
                    phase = None
                if phase not in ("Failed", "Deleted"):
                    continue
                self.failed_rank = rank
                self.log.warning("learner rank %d ended (%s): stopping the group", rank, phase)
                self._delete_pod(leader)
                return

    def _delete_pod(self, pod: k8s.V1Pod) -> None:
        try:
            self.client.delete_namespaced_pod(
                pod.metadata.name,
                pod.metadata.namespace,
                grace_period_seconds=self.termination_grace_period,
            )
        except ApiException as error:
            if error.status != 404:
                self.log.warning("cannot delete pod %s: %s", pod.metadata.name, error)

    def stop_group(self) -> None:
        """Keep each other rank's final status, then delete its pod and the Service."""
        self._group_done.set()
        for rank, worker in self.workers.items():
            try:
                self.worker_statuses[rank] = self.pod_manager.read_pod(worker).status.to_dict()
            except (AirflowException, ApiException) as error:
                self.log.warning("cannot read the final status of learner rank %d: %s", rank, error)
            self._delete_pod(worker)
        if self.rendezvous is not None:
            try:
                self.client.delete_namespaced_service(
                    self.rendezvous.metadata.name, self.rendezvous.metadata.namespace
                )
            except ApiException as error:
                if error.status != 404:
                    self.log.warning("cannot delete the rendezvous Service: %s", error)

    def on_kill(self) -> None:
        super().on_kill()
        self.stop_group()

    def build_pod_request_obj(
        self, context: Context | None = None, *, dry_run: bool = False
    ) -> k8s.V1Pod:
        """The provider's pod, plus the labels of this attempt (see `LearnerPod`)."""
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        pod.metadata.labels.update(self.attempt_labels)
        return pod

    def cleanup(
        self,
        pod: k8s.V1Pod,
        remote_pod: k8s.V1Pod,
        xcom_result: dict[str, Any] | None = None,
        context: Context | None = None,
    ) -> None:
        """Keep the pod's final status, read afresh, before the provider deletes the pod.

        After a failed start, `remote_pod` is as it was right after creation.
        """
        if remote_pod is not None and not self._killed:
            try:
                remote_pod = self.pod_manager.read_pod(remote_pod)
            except (AirflowException, ApiException) as error:  # keep the last status seen
                self.log.warning("cannot read the final status of the pod: %s", error)
            self.final_status = remote_pod.status.to_dict()
        if not self._killed:
            self.stop_group()
        super().cleanup(pod, remote_pod, xcom_result, context)

    def conclude(
        self, manifest: JobManifest, started_at: datetime, error: Exception | None
    ) -> None:
        """Record the attempt and raise its failure class, as the local learner task does."""
        if error is not None:  # its first line: the rest is the whole pod
            first = (str(error).splitlines() or [""])[0]
            self.log.info("the pod operator raised %s: %s", type(error).__name__, first)
        spec = self.learner_spec(manifest, self.pod_attempt())
        with classified_failures():
            failure = self.attempt_failure(spec, manifest, error)
        if failure is None and error is not None:
            self.log.warning("the learner succeeded; ignoring the pod operator's error")
        self.conclude_attempt(manifest, spec.attempt, started_at, failure)

    def pod_attempt(self) -> int:
        """The attempt the pod ran: an earlier one when this try reattached to its pod."""
        labels = (self.pod.metadata.labels if self.pod is not None else None) or {}
        return int(labels.get(ATTEMPT_LABEL) or self.attempt_labels[ATTEMPT_LABEL])

    def attempt_failure(
        self, spec: LearnerSpec, manifest: JobManifest, error: Exception | None
    ) -> TrainyardFailure | None:
        """A pod's failure (OOM, eviction, image, scheduling), else the learners' outcomes.

        In a group, the rank that failed first (and stopped the others) is looked at first.
        """
        statuses = {0: self.final_status or {}, **self.worker_statuses}
        ranks = sorted(statuses, key=lambda rank: rank != self.failed_rank)
        for rank in ranks:
            failure = classify_pod_failure(statuses[rank], manifest.resources)
            if failure is not None:
                return failure
        ended = {rank: learner_exit(statuses[rank]) for rank in ranks}
        known = {rank: end for rank, end in ended.items() if end is not None}
        if known:
            failure = learner_failure(self.store, spec, list(known.values()), ranks=list(known))
            if failure is not None or len(known) == spec.num_learners:
                return failure
        if error is None:  # the provider saw the pod succeed
            return None
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        return PlatformFault(
            f"learner pod ended before its {LEARNER_CONTAINER!r} container did: {reason}",
            RESUME_FIX,
        )


#: How often the other ranks of a running group are checked for a failure.
GROUP_POLL_SECONDS = 2.0


class KubernetesEvaluateOperator(KubernetesLearnerOperator, EvaluateModelOperator):
    """Evaluate in a pod: the runtime's `evaluate` mode, in the same image, namespace and
    resources as training; the metrics are stored as the local evaluate task stores them."""

    mode = RunMode.EVALUATE

    def execute(self, context: Context) -> Any:
        return EvaluateModelOperator.execute(self, context)
