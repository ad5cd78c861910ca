"""The learner task on Kubernetes: the provider's KubernetesPodOperator, set up per job by the
Kubernetes backend (`trainyard.backends.kubernetes`), the adapter between the two.

Training and evaluation both run the learner runtime in a pod (`train` and `evaluate` mode), so
a Kubernetes tenant's user code never runs on an Airflow worker.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.utils.pod_manager import PodNotFoundException
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowSkipException, TaskDeferred
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from operators.tasks.base import TrainyardOperator, classified_failures
from operators.tasks.learner import LearnerOperator
from operators.triggers.learner_group import LearnerGroupTrigger
from trainyard.backends import LearnerSpec, RunMode
from trainyard.backends.kubernetes import KubernetesBackend
from trainyard.backends.kubernetes.pods import ATTEMPT_LABEL, RANK_LABEL, rank_hostname
from trainyard.failures import InternalError
from trainyard.manifest.schema import JobManifest
from trainyard.sweeps.trials import record_pruned, trial_of


class KubernetesLearnerOperator(KubernetesPodOperator, LearnerOperator):
    """The learners in pods: the runtime in the framework's image, in the tenant's namespace, in
    the task's `mode` (evaluation: the same image, namespace and resources as training).

    Both the provider's operator and Trainyard's learner task, by multiple inheritance rather
    than composition: the pod's life (creation, reattaching to the pod of an interrupted try,
    following its log, events on failure, deletion) is the provider's, and the job's side
    (tenant, storage, job record, learner spec, attempt record, evaluate mode) is the generic
    learner task's code, and the pods' specs and the judging of their ends are the Kubernetes
    backend's.
    The retry policy and the failure callback also need the task itself to be a
    TrainyardOperator. Both bases share Airflow's BaseOperator, and their `__init__`s pass
    keyword arguments along cooperatively.

    The pod is set up in `execute`, after Airflow rendered the template fields, so that no
    manifest value (a command with `{{`) is ever taken for a template.

    It runs in the provider's deferrable mode: the worker creates the pods and waits until all
    of them run (gang start: each within the startup timeout, or the attempt fails), then the
    task defers and the triggerer watches the group (`LearnerGroupTrigger`), so no worker slot
    is held while the learners train, and a worker or triggerer that dies meanwhile loses
    nothing: the pods keep running and the watch resumes from the trigger's serialized state.
    When rank 0 ends (or the trigger stopped the group for a failed rank), the task resumes on
    a worker in `resume_learners`: it reads every pod's final status before deleting it and
    concludes the attempt from them.

    A multi-learner job (`resources.learners > 1`) is a group: the provider's pod is rank 0 (the
    one whose log is followed and that a retry reattaches to); the task creates the other ranks
    from the same pod spec, plus a headless Service through which they reach rank 0 (PyTorch's
    `env://` rendezvous). Once running, a failed rank stops the group (rank 0 is deleted with
    its grace period, so it commits a final checkpoint), and the whole group goes with the
    attempt, so the retry starts every rank afresh from the newest committed checkpoint.
    """

    template_fields: Sequence[str] = (
        *KubernetesPodOperator.template_fields,
        *TrainyardOperator.template_fields,
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            # The cluster comes from the Trainyard config (in_cluster, config_file), not from
            # an Airflow connection.
            kubernetes_conn_id=None,
            # Reattach to a still-running pod on retry (`durable` replaces the deprecated
            # `reattach_on_restart` on Airflow 3.3 and sets it).
            durable=True,
            deferrable=True,
            poll_interval=POLL_SECONDS,
            get_logs=True,
            log_events_on_failure=True,
            on_finish_action="delete_pod",
            **kwargs,
        )
        self.attempt_labels: dict[str, str] = {}
        self.final_status: dict[str, Any] | None = None
        # The other ranks of a multi-learner job: their env, then their pods once created.
        self.rank_envs: dict[int, list[k8s.V1EnvVar]] = {}
        self.rendezvous: k8s.V1Service | None = None
        self.group_spec: LearnerSpec | None = None
        self.workers: dict[int, k8s.V1Pod] = {}
        self.worker_statuses: dict[int, dict[str, Any]] = {}
        self.failed_rank: int | None = None
        self.started_at = datetime.now(UTC)
        self._resuming = False
        self._group_stopped = False

    def execute(self, context: Context) -> Any:
        # The provider's execute comes first in the method order; the task's flow is the
        # learner's, which starts the pods through the provider's execute (run_learners).
        return self.run_task(context)

    def run_learners(self, manifest: JobManifest, context: Context) -> None:
        """Start the learner pods (the provider's execute), then defer until they end.

        An attempt whose pods cannot start ends here; one that started ends in
        `resume_learners`.
        """
        with classified_failures():
            self.configure(manifest, context)
        self.started_at = datetime.now(UTC)
        try:
            super().execute(context)  # the provider's
        except Exception as error:  # what happened is read from the pod, not the exception
            self.conclude(manifest, self.started_at, error)
        else:
            self.conclude(manifest, self.started_at, None)

    def resume_learners(self, context: Context, event: dict[str, Any]) -> Any:
        """The trigger saw rank 0 end: the provider's re-entry (log, final status, deletion),
        then the group's, then the attempt concluded from the pods' ends."""
        _, manifest = self.load_job()
        with classified_failures():
            self.configure(manifest, context)
        self._resuming = True
        self.attempt_labels = {ATTEMPT_LABEL: str(event["attempt"])}
        self.started_at = datetime.fromisoformat(event["started_at"])
        self.workers = {
            int(rank): k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=name, namespace=self.namespace))
            for rank, name in (event.get("workers") or {}).items()
        }
        self.failed_rank = event.get("failed_rank")
        if event.get("service_name"):  # the group's, of the attempt its pods run
            self.rendezvous = k8s.V1Service(
                metadata=k8s.V1ObjectMeta(name=event["service_name"], namespace=self.namespace)
            )
        error: Exception | None = None
        try:
            self.trigger_reentry(context, event)  # the provider's
        except TaskDeferred:  # the provider watches again (its trigger's watch failed)
            raise
        except Exception as raised:  # read from the pods, as in run_learners
            error = raised
        self.stop_group()  # also when rank 0 was gone, so the provider skipped its cleanup
        if event.get("pruned"):  # as the local learner task ends a pruned trial
            with classified_failures():
                record_pruned(self.store, self.job_id, self.pod_attempt(), self.started_at)
            raise AirflowSkipException(f"{self.job_id} was pruned by its sweep")
        self.conclude(manifest, self.started_at, error)
        return self.learners_done()

    @property
    def kubernetes(self) -> KubernetesBackend:
        """The tenant's backend, which the DAG factory gave this task type: Kubernetes."""
        backend = self.backend
        if not isinstance(backend, KubernetesBackend):
            raise InternalError(
                f"the {backend.name} backend's learners are not pods: the DAG was built for "
                "another backend",
                "none needed if the retry runs the rebuilt DAG; otherwise report it to the "
                "platform team (operators/dag_factory.py builds the DAG)",
            )
        return backend

    def configure(self, manifest: JobManifest, context: Context) -> None:
        """Set the pod up for this job and attempt, from its manifest and the deployment config."""
        backend = self.kubernetes
        cluster = backend.cluster
        spec = self.learner_spec(manifest, self.attempt(context))
        pod = backend.pod(spec, manifest)
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
        self.security_context = pod.security_context
        self.container_security_context = pod.container_security_context
        self.automount_service_account_token = pod.automount_service_account_token
        self.startup_timeout_seconds = cluster.startup_timeout_seconds
        self.schedule_timeout_seconds = cluster.startup_timeout_seconds
        self.in_cluster = cluster.in_cluster
        self.config_file = str(cluster.config_file) if cluster.config_file else None
        self.group_spec = spec
        if spec.num_learners > 1:
            self.rank_envs = {
                rank: backend.pod(spec, manifest, rank).env for rank in range(1, spec.num_learners)
            }
            self.rendezvous = backend.rendezvous_service(spec)

    # Overridden, not a `callbacks=` hook: the group must exist before the task waits for the
    # gang start, and a callback's `on_pod_creation` comes after an extra read of the pod.
    def get_or_create_pod(self, pod_request_obj: k8s.V1Pod, context: Context) -> k8s.V1Pod:
        """Rank 0 as the provider creates (or finds) it, then the group's other pods.

        A group reattached to runs the attempt of its pods: its Service is that attempt's, and
        it is the attempt the job record names as current.
        """
        pod = super().get_or_create_pod(pod_request_obj, context)
        attempt = int((pod.metadata.labels or {}).get(ATTEMPT_LABEL) or 0)
        if attempt:  # the reattached pod's own attempt: the provider's reattach is the fence
            try:
                self.claim(attempt)
            except Exception:
                self.remote_pod = pod  # cleanup deletes a pod of an attempt superseded meanwhile
                raise
        if self.rendezvous is not None and self.group_spec is not None and attempt:
            spec = replace(self.group_spec, attempt=attempt)
            self.rendezvous = self.kubernetes.rendezvous_service(spec)
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
            worker.spec.hostname = rank_hostname(rank)
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

    def await_group_start(self) -> None:
        """Gang start: rank 0, then every other rank, each within the startup timeout."""
        assert self.pod is not None  # the provider created (or found) it
        for pod in (self.pod, *self.workers.values()):
            self.await_pod_start(pod)

    # Overridden: the provider has no hook to wait before deferring or to choose the trigger
    # (its own defers at once and watches rank 0 alone); the rest is its deferral's.
    def invoke_defer_method(
        self, last_log_time: Any = None, context: Context | None = None
    ) -> None:
        """Once every pod runs (gang start, on the worker), hand the watch to the triggerer.

        The provider's own deferral would defer at once and watch rank 0 alone. A pod that
        cannot start ends the attempt here, its final status kept and the group deleted.
        """
        assert self.pod is not None  # the provider created (or found) it
        assert context is not None  # the provider passes it
        if not self._resuming:
            try:
                self.await_group_start()
            except Exception:
                with contextlib.suppress(AirflowException):  # its "pod returned a failure"
                    self.post_complete_action(
                        pod=self.pod, remote_pod=self.pod, context=context, result=None
                    )
                raise
        self.convert_config_file_to_dict()
        trigger = LearnerGroupTrigger(
            pod_name=self.pod.metadata.name,
            pod_namespace=self.pod.metadata.namespace,
            trigger_start_time=datetime.now(UTC),
            base_container_name=self.base_container_name,
            config_dict=self._config_dict,
            in_cluster=self.in_cluster,
            poll_interval=self.poll_interval,
            get_logs=self.get_logs,
            startup_timeout=self.startup_timeout_seconds,
            startup_check_interval=self.startup_check_interval_seconds,
            schedule_timeout=self.schedule_timeout_seconds,
            on_finish_action=self.on_finish_action.value,
            on_kill_action=self.on_kill_action.value,
            termination_grace_period=self.termination_grace_period,
            last_log_time=last_log_time,
            trigger_kwargs={
                **(self.trigger_kwargs or {}),
                "attempt": self.pod_attempt(),
                "started_at": self.started_at.isoformat(),
            },
            log_events_on_startup=False,  # they were logged while the worker waited
            workers={str(rank): worker.metadata.name for rank, worker in self.workers.items()},
            service_name=self.rendezvous.metadata.name if self.rendezvous else None,
            # A sweep's trial: the triggerer also watches for its sweep's early-stopping rule.
            early_stop={"tenant": self.tenant, "job_id": self.job_id}
            if self.mode is RunMode.TRAIN and trial_of(self.job_id)
            else None,
        )
        self.defer(trigger=trigger, method_name="resume_learners")

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
        """Keep each other rank's final status, then delete its pod and the Service (once)."""
        if self._group_stopped:
            return
        self._group_stopped = True
        for rank, worker in self.workers.items():
            try:
                self.worker_statuses[rank] = self.pod_manager.read_pod(worker).status.to_dict()
            except (AirflowException, ApiException) as error:
                self.log.warning("cannot read the final status of learner rank %d: %s", rank, error)
            self._delete_pod(worker)
        self._delete_rendezvous()

    def _delete_rendezvous(self) -> None:
        if self.rendezvous is None:
            return
        try:
            self.client.delete_namespaced_service(
                self.rendezvous.metadata.name, self.rendezvous.metadata.namespace
            )
        except ApiException as error:
            if error.status != 404:
                self.log.warning("cannot delete the rendezvous Service: %s", error)

    # Extended: no callback runs when a user kills the task.
    def on_kill(self) -> None:
        """A kill (cancel, mark failed) on the worker: the Service first, as it takes one call
        and the kill may turn into SIGKILL before the pods' final statuses are read."""
        self._delete_rendezvous()
        super().on_kill()
        self.stop_group()

    # Extended, not `on_pod_manifest_created`: that callback runs only on the provider's way to
    # creating the pod, and the attempt's labels belong on every build of it (the tests', a
    # dry run's).
    def build_pod_request_obj(
        self, context: Context | None = None, *, dry_run: bool = False
    ) -> k8s.V1Pod:
        """The provider's pod, plus the labels of this attempt (see `LearnerPod`)."""
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        pod.metadata.labels.update(self.attempt_labels)
        if self.rendezvous is not None:  # DNS names of the ranks (TF_CONFIG, MASTER_ADDR)
            pod.spec.hostname = rank_hostname(0)
            pod.spec.subdomain = self.rendezvous.metadata.name
        return pod

    # Extended, not `on_pod_teardown`: that callback runs only when a trigger event finds the
    # pod, not after a failed start (`invoke_defer_method`) or a vanished pod, and the final
    # status must be kept on each of those paths before the provider deletes the pod.
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
        reason = None
        if error is not None:  # its first line: the rest is the whole pod
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            self.log.info("the pod operator raised %s: %s", type(error).__name__, reason)
        spec = self.learner_spec(manifest, self.pod_attempt())
        statuses = {0: self.final_status or {}, **self.worker_statuses}
        with classified_failures():
            failure = self.kubernetes.judge_pods(
                self.store,
                spec,
                statuses,
                manifest.resources,
                first=self.failed_rank,
                error=reason,
                deleted=isinstance(error, PodNotFoundException),
            )
        if failure is None and error is not None:
            self.log.warning("the learner succeeded; ignoring the pod operator's error")
        self.conclude_attempt(manifest, spec.attempt, started_at, failure)

    def pod_attempt(self) -> int:
        """The attempt the pod ran: an earlier one when this try reattached to its pod."""
        labels = (self.pod.metadata.labels if self.pod is not None else None) or {}
        return int(labels.get(ATTEMPT_LABEL) or self.attempt_labels[ATTEMPT_LABEL])


#: How often the triggerer reads the pods of a running group.
POLL_SECONDS = 2.0
