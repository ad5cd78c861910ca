"""The learner tasks on Kubernetes: the provider's KubernetesPodOperator, set up per job.

Training and evaluation both run the learner runtime in a pod (`train` and `evaluate` mode), so
a Kubernetes tenant's user code never runs on an Airflow worker.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    RESUME_FIX,
    classify_pod_failure,
    learner_exit,
    learner_pod,
)
from trainyard.failures import PlatformFault, TrainyardFailure
from trainyard.manifest import JobManifest


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
        super().cleanup(pod, remote_pod, xcom_result, context)

    def conclude(
        self, manifest: JobManifest, started_at: datetime, error: Exception | None
    ) -> None:
        """Record the attempt and raise its failure class, as the local learner task does."""
        spec = self.learner_spec(manifest, self.pod_attempt())
        with classified_failures():
            failure = self.attempt_failure(spec, manifest, error)
        if failure is None and error is not None:
            self.log.warning("the learner succeeded; ignoring the pod operator's %r", error)
        self.conclude_attempt(manifest, spec.attempt, started_at, failure)

    def pod_attempt(self) -> int:
        """The attempt the pod ran: an earlier one when this try reattached to its pod."""
        labels = (self.pod.metadata.labels if self.pod is not None else None) or {}
        return int(labels.get(ATTEMPT_LABEL) or self.attempt_labels[ATTEMPT_LABEL])

    def attempt_failure(
        self, spec: LearnerSpec, manifest: JobManifest, error: Exception | None
    ) -> TrainyardFailure | None:
        """The pod's failure (OOM, eviction, image, scheduling), else the learner's outcome."""
        status = self.final_status or {}
        failure = classify_pod_failure(status, manifest.resources)
        if failure is not None:
            return failure
        ended = learner_exit(status)
        if ended is not None:
            return learner_failure(self.store, spec, [ended])
        if error is None:  # the provider saw the pod succeed
            return None
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        return PlatformFault(
            f"learner pod ended before its {LEARNER_CONTAINER!r} container did: {reason}",
            RESUME_FIX,
        )


class KubernetesEvaluateOperator(KubernetesLearnerOperator, EvaluateModelOperator):
    """Evaluate in a pod: the runtime's `evaluate` mode, in the same image, namespace and
    resources as training; the metrics are stored as the local evaluate task stores them."""

    mode = RunMode.EVALUATE

    def execute(self, context: Context) -> Any:
        return EvaluateModelOperator.execute(self, context)
