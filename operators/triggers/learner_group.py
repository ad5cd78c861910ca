"""The triggerer's watch over a deferred learner group: the provider's pod trigger, plus ranks.

The provider's KubernetesPodTrigger follows one pod (rank 0) until its container ends. A
multi-learner job also needs the other ranks watched: one that fails or disappears leaves the
others hanging in a collective, so the trigger stops the group (deletes rank 0 with its grace
period, in which it commits a final checkpoint) and reports the rank that failed. The task,
resumed on a worker, reads every rank's final status, deletes the rest and classifies the end.
A sweep's trial is also watched for its sweep's early-stopping rule, which stops the group the
same way (`pruned` in the event).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.cncf.kubernetes.triggers.pod import ContainerState, KubernetesPodTrigger
from airflow.triggers.base import TriggerEvent

from operators.triggers.deferral import DEFER_SETTLE_SECONDS

#: Pod phases of a rank that has stopped for good; "Deleted" is a pod that is gone.
ENDED_PHASES = ("Failed", "Deleted")


class LearnerGroupTrigger(KubernetesPodTrigger):
    """Watch rank 0 as the provider does, and ranks 1..N-1 beside it.

    Yields exactly one event: the provider's (rank 0 ended, or the watch failed), with the
    group added: `workers` (rank -> pod name, as the task gave them), `service_name` and
    `failed_rank` (the rank that stopped the group, or None). Serialized as classpath and
    keyword arguments, so a restarted triggerer picks the watch up where it was: the pods keep
    running meanwhile.
    """

    def __init__(
        self,
        *,
        workers: dict[str, str] | None = None,
        service_name: str | None = None,
        early_stop: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        """`early_stop`: the `tenant` and `job_id` of a sweep's trial, whose learners the
        sweep's early-stopping rule may stop (`pruned` in the event)."""
        super().__init__(**kwargs)
        self.workers = dict(workers or {})
        self.service_name = service_name
        self.early_stop = dict(early_stop) if early_stop else None
        self.failed_rank: int | None = None
        self.pruned = False
        # on_kill's deletions, held here: the event loop keeps only a weak reference to a task.
        self._deleting: asyncio.Future[None] | None = None

    # Extended: a trigger's state is its serialized kwargs, so the group's go with the provider's.
    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        kwargs.update(
            workers=self.workers, service_name=self.service_name, early_stop=self.early_stop
        )
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    # Extended: the provider's event, with the group added (the operator's callbacks do not
    # run in the triggerer, and the provider's trigger offers no hook of its own).
    async def run(self) -> AsyncIterator[TriggerEvent]:
        settled = time.monotonic() + DEFER_SETTLE_SECONDS
        async for event in super().run():
            # A group that ended at once (a bad image, an OOM kill) is reported only once the
            # deferral has settled (operators/triggers/deferral.py: else Airflow retries the task).
            await asyncio.sleep(max(0.0, settled - time.monotonic()))
            yield TriggerEvent(
                {
                    **event.payload,
                    "workers": self.workers,
                    "service_name": self.service_name,
                    "failed_rank": self.failed_rank,
                    "pruned": self.pruned,
                }
            )

    # The one provider internal overridden: its wait for rank 0 is where a failed rank, or the
    # sweep's early-stopping rule, must interrupt; no public hook lets anything else end it.
    async def _wait_for_container_completion(self) -> TriggerEvent:
        """The provider's wait for rank 0, raced against the first rank that ends early and
        against the early-stopping rule of a sweep's trial."""
        leader = asyncio.ensure_future(super()._wait_for_container_completion())
        stoppers: dict[asyncio.Future[Any], str] = {}
        if self.workers:
            stoppers[asyncio.ensure_future(self._wait_for_failed_rank())] = "rank"
        if self.early_stop:
            stoppers[asyncio.ensure_future(self._wait_for_pruning(**self.early_stop))] = "rule"
        if not stoppers:
            return await leader
        try:
            done, _ = await asyncio.wait({leader, *stoppers}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # a cancelled trigger (a user's kill) leaves no watch polling a deleted pod
            for stopper in stoppers:
                stopper.cancel()
            if not leader.done():
                leader.cancel()
        if leader in done:
            return leader.result()
        first = next(stopper for stopper in stoppers if stopper in done)
        if stoppers[first] == "rank":
            self.failed_rank = first.result()
            self.log.warning("learner rank %d ended: stopping the group", self.failed_rank)
        else:
            self.pruned = True
            self.log.info("the sweep's early-stopping rule stops the trial: stopping the group")
        await self.hook.delete_pod(
            name=self.pod_name,
            namespace=self.pod_namespace,
            grace_period_seconds=self.termination_grace_period,
        )
        return await self._wait_for_leader_end()

    async def _wait_for_pruning(self, tenant: str, job_id: str) -> None:
        """Return once the sweep's early-stopping rule stops the trial (never, for a trial
        whose sweep stops none early). Each look (storage and the study's database, blocking)
        runs in a thread; a look that fails waits for the next."""
        from operators.hooks.storage import TenantStorageHook
        from operators.hooks.sweeps import SweepStudyHook
        from trainyard.jobs.progress import read_metrics
        from trainyard.sweeps.trials import EARLY_STOP_POLL_SECONDS
        from trainyard.tenancy.config import load_config

        def search() -> tuple[Any, ...] | None:
            store = TenantStorageHook(load_config().tenant(tenant)).get_store()
            trial = SweepStudyHook().trial_search(store, job_id)
            return None if trial is None else (store, *trial)

        watched: tuple[Any, ...] | None = None
        while watched is None:
            await asyncio.sleep(EARLY_STOP_POLL_SECONDS)
            try:
                watched = await asyncio.to_thread(search)
            except Exception:
                self.log.warning("early stopping of %s: no study yet", job_id, exc_info=True)
                continue
            if watched is None:
                await asyncio.Event().wait()  # no rule to watch for: the leader's end decides
        store, study, number = watched
        while True:
            await asyncio.sleep(EARLY_STOP_POLL_SECONDS)
            try:
                rows = await asyncio.to_thread(read_metrics, store, job_id)
                if await asyncio.to_thread(study.hear, number, rows):
                    return
            except Exception:
                self.log.warning("early stopping of %s: this look failed", job_id, exc_info=True)

    async def _wait_for_failed_rank(self) -> int:
        while True:
            for rank, name in self.workers.items():
                if await self._phase(name) in ENDED_PHASES:
                    return int(rank)
            await asyncio.sleep(self.poll_interval)

    async def _wait_for_leader_end(self) -> TriggerEvent:
        """Rank 0 once it has stopped (its final checkpoint committed) or is gone."""
        while await self._phase(self.pod_name) not in (*ENDED_PHASES, "Succeeded"):
            await asyncio.sleep(self.poll_interval)
        return TriggerEvent(
            {
                "status": "failed",
                "namespace": self.pod_namespace,
                "name": self.pod_name,
                "message": "the sweep's early-stopping rule stopped the trial"
                if self.pruned
                else f"learner rank {self.failed_rank} ended: the group was stopped",
                "last_log_time": self.last_log_time,
                **self.trigger_kwargs,
            }
        )

    async def _phase(self, name: str) -> str | None:
        """A pod's phase, "Deleted" once it is gone, None while the API does not answer."""
        try:
            pod = await self.hook.get_pod(name=name, namespace=self.pod_namespace)
        except Exception as error:  # the client's ApiException, or the hook's wrapper of it
            status = getattr(error, "status", None) or getattr(error.__cause__, "status", None)
            if status == 404:
                return "Deleted"
            self.log.warning("cannot read pod %s: %s", name, error)
            return None
        if pod.status is None:
            return None
        if self.define_container_state(pod) == ContainerState.FAILED:
            return "Failed"
        return str(pod.status.phase)

    # Extended: the provider deletes rank 0 only.
    async def on_kill(self) -> None:
        """A user stopped the deferred task: delete the rendezvous Service, rank 0 (the
        provider's) and the other ranks, each rank with its grace period, all at once.

        Shielded: Airflow 3.3's triggerer cancels a trigger again at each of its loops (about
        1 s) until the trigger has ended, and that cancel lands in on_kill. Unshielded, a slow
        API answer left the ranks after the first one running (seen in CI). The deletions go
        on in the triggerer's event loop after the second cancel.
        """
        if self._fired_event:  # the task resumes on a worker and cleans up there
            return
        self._deleting = asyncio.ensure_future(self._delete_group())
        await asyncio.shield(self._deleting)

    async def _delete_group(self) -> None:
        deletions = [super().on_kill(), *map(self._delete_rank, self.workers.values())]
        if self.service_name is not None:
            deletions.append(self._delete_service(self.service_name))
        await asyncio.gather(*deletions)

    async def _delete_rank(self, name: str) -> None:
        try:
            await self.hook.delete_pod(
                name=name,
                namespace=self.pod_namespace,
                grace_period_seconds=self.termination_grace_period,
            )
        except Exception:
            self.log.exception("cannot delete pod %s", name)

    async def _delete_service(self, name: str) -> None:
        from kubernetes_asyncio.client import CoreV1Api

        try:
            async with self.hook.get_conn() as connection:
                await CoreV1Api(connection).delete_namespaced_service(
                    name=name, namespace=self.pod_namespace
                )
        except Exception:
            self.log.exception("cannot delete the Service %s", name)
