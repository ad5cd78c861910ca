"""One attempt of a job's learners, judged and recorded the same way on every backend.

`judge_attempt` is the one place that decides whether an attempt failed, and as what: the
backends only report how each learner ended (`LearnerEnd`), and the learners' own outcome files
say the rest. The Airflow tasks turn its answer into retry semantics.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from trainyard.backends.base import (
    GANG_STOPPED,
    GPU_FAILED,
    OOM_KILLED,
    LearnerEnd,
    LearnerExit,
    LearnerSpec,
)
from trainyard.failures import (
    RESUME_FIX,
    FailureClass,
    PlatformFault,
    TrainyardFailure,
    out_of_memory,
)
from trainyard.jobs.checkpoints import CheckpointStore
from trainyard.jobs.fencing import Superseded
from trainyard.jobs.layout import JobLayout, published_manifest
from trainyard.jobs.records import AttemptInfo, JobRecord, change_record, update_record
from trainyard.manifest.units import format_bytes
from trainyard.runtime.outcome import Outcome
from trainyard.storage import ObjectNotFound, ObjectStore


def judge_attempt(
    store: ObjectStore,
    spec: LearnerSpec,
    ends: Sequence[LearnerEnd],
    unseen: TrainyardFailure | None = None,
) -> TrainyardFailure | None:
    """The failure of one attempt, or None when every learner succeeded.

    `ends` come in the order the backend saw the learners fail (the rank that stopped its gang
    first); ranks stopped because another had failed are looked at last, so the gang's cause is
    the failure. The backend's own view wins where it knows more (a pod evicted, a learner
    OOM-killed); then each learner's outcome file, also of a learner whose end the backend
    never saw (its pod deleted and gone). A learner that died without writing its outcome
    (killed hard, node lost) is a platform fault: the retry resumes from the newest committed
    checkpoint. `unseen` is the failure when some learner's end went unseen, without an
    outcome, and the others succeeded (None: the backend saw the attempt succeed).
    """
    order = sorted(ends, key=lambda end: end.exit is not None and end.exit.reason == GANG_STOPPED)
    for end in order:
        if end.failure is not None:
            return end.failure
    seen = 0
    for end in order:
        outcome = _outcome(store, spec, end.rank)
        if end.exit is None and outcome is None:
            continue  # its end went unseen
        seen += 1
        failure = _learner_failure(spec, end.rank, end.exit, outcome)
        if failure is not None:
            return failure
    return None if seen == spec.num_learners else unseen


def _outcome(store: ObjectStore, spec: LearnerSpec, rank: int) -> Outcome | None:
    """The outcome learner `rank`'s runtime wrote for the attempt (None: it wrote none)."""
    try:
        return Outcome.from_json(
            store.get_json(JobLayout(spec.job_id).outcome(spec.mode, spec.attempt, rank))
        )
    except ObjectNotFound:
        return None


def _learner_failure(
    spec: LearnerSpec, rank: int, learner: LearnerExit | None, outcome: Outcome | None
) -> TrainyardFailure | None:
    """One learner's failure, from its exit and the outcome it wrote, or None.

    `learner` is None when the backend never saw it end (its pod was deleted and gone before
    it was read): its outcome then says how it ended (a deleted or drained pod's runtime got
    SIGTERM and reported a preemption)."""
    if learner is not None and learner.reason == OOM_KILLED:
        limit = format_bytes(spec.memory_bytes)
        return out_of_memory(
            f"learner {rank} was OOM-killed: it needed more than resources.memory = {limit}",
            limit,
        )
    if learner is not None and learner.reason == GPU_FAILED:
        return PlatformFault(
            f"learner {rank}'s GPU failed during the attempt (NVML reports it unhealthy; the "
            "learner task's log names it and its XID)",
            f"{RESUME_FIX}, on a healthy GPU: the failed one is not handed out again",
        )
    if outcome is None:
        assert learner is not None  # an unseen end without an outcome is not judged here
        if learner.exit_code == 0:
            return None
        return PlatformFault(
            f"learner {rank} exited with code {learner.exit_code} without reporting an outcome",
            RESUME_FIX,
        )
    if outcome.failure is not None:
        failure = outcome.failure
        return type(failure)(f"learner {rank}: {failure.cause}", failure.fix)
    if learner is not None and learner.exit_code != 0:
        return PlatformFault(
            f"learner {rank} reported success but exited with code {learner.exit_code}",
            RESUME_FIX,
        )
    return None


def claim_attempt(store: ObjectStore, job_id: str, attempt: int) -> None:
    """Make `attempt` the job's current one before its learners start: from now on an older
    attempt's end is not recorded. Raises Superseded when a newer one already started."""

    def claim(record: JobRecord) -> None:
        _check_current(record, attempt)
        record.current_attempt = attempt

    change_record(store, job_id, claim)


def _check_current(record: JobRecord, attempt: int) -> None:
    if record.current_attempt > attempt:
        raise Superseded(record.job_id, attempt, record.current_attempt)


def record_attempt(
    store: ObjectStore,
    job_id: str,
    attempt: int,
    started_at: datetime,
    failure: TrainyardFailure | None,
) -> int:
    """Append a training attempt's end to the job record, where the retry budgets count from.

    Returns how many attempts so far ended in a user error (0 for a job without a record).
    Raises Superseded for an attempt older than the job's current one.
    """
    record = record_attempt_end(
        store,
        job_id,
        attempt,
        started_at,
        failure_class=failure.failure_class.value if failure else None,
        message=failure.cause if failure else "",
        fix=failure.fix if failure else "",
    )
    return 0 if record is None else record.count_attempts(FailureClass.USER_ERROR.value)


def record_attempt_end(
    store: ObjectStore,
    job_id: str,
    attempt: int,
    started_at: datetime,
    *,
    failure_class: str | None,
    message: str,
    fix: str,
) -> JobRecord | None:
    """Record how an attempt ended (a failure class, or another end such as a pause).

    The entry holds the newest committed checkpoint step now, and whether the attempt advanced
    it: beyond the step the previous recorded attempt ended at (a try lost to a crash records
    nothing, so its progress counts for the next). Recording an attempt again replaces its
    entry. Raises Superseded for an attempt older than the job's current one.
    """
    layout = JobLayout(job_id)
    step = CheckpointStore(store, layout).latest_step()
    committed_at = _committed_at(store, layout, step)

    def append(record: JobRecord) -> None:
        _check_current(record, attempt)
        earlier = [a for a in record.attempts if a.attempt != attempt]
        before = earlier[-1].checkpoint_step if earlier else None
        record.attempts = [
            *earlier,
            AttemptInfo(
                attempt=attempt,
                started_at=started_at,
                failure_class=failure_class,
                message=message,
                fix=fix,
                checkpoint_step=step,
                progressed=step is not None and (before is None or step > before),
                checkpoint_at=committed_at,
            ),
        ]

    return change_record(store, job_id, append)


def _committed_at(store: ObjectStore, layout: JobLayout, step: int | None) -> datetime | None:
    """When checkpoint `step` was committed, from its manifest (None: no step, or a manifest
    without the time, or pruned meanwhile)."""
    if step is None:
        return None
    try:
        stamp = store.get_json(published_manifest(layout.checkpoint(step))).get("committed_at")
    except ObjectNotFound:
        return None
    return datetime.fromisoformat(stamp) if isinstance(stamp, str) else None


def faults_in_a_row(record: JobRecord, failure_class: FailureClass) -> int:
    """How many attempts ended as `failure_class` since the job last made progress.

    Walking back from the newest attempt, counting those of the class, up to and including
    the newest one that advanced the committed checkpoint (of whatever class): a job that
    keeps checkpointing between faults starts its count over, so it is never failed by faults
    it outlives.
    """
    count = 0
    for attempt in reversed(record.attempts):
        count += attempt.failure_class == failure_class.value
        if attempt.progressed:
            break
    return count


def record_evaluation(store: ObjectStore, job_id: str) -> dict[str, Any]:
    """Copy the metrics a successful evaluation attempt stored into the job record; return them."""
    metrics: dict[str, Any] = store.get_json(JobLayout(job_id).evaluation)["metrics"]
    update_record(store, job_id, evaluation=metrics)
    return metrics
