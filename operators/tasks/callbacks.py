"""Task callbacks that keep the job record in step with Airflow."""

from __future__ import annotations

from airflow.sdk import Context

from operators.deployment import notify
from operators.tasks.base import TrainyardOperator, failure_of_exception
from trainyard.failures import FailureClass
from trainyard.jobs.records import FailureInfo, JobState, load_record, save_record
from trainyard.jobs.state import RunFacts, job_view


def record_failure(context: Context) -> None:
    """on_failure_callback: store the failure's class, task and message in the job record, and
    tell the tenant's notification channels (operators/deployment/notify.py).

    Runs only once a task has failed for good (retries exhausted or not retryable). A job whose
    cancel was requested ends as cancelled, not failed; a run the job has left changes nothing.
    """
    task = context["task"]
    if not isinstance(task, TrainyardOperator) or not task.job_id:
        return  # the manifest never validated: the validate task's log is the whole story
    exception = context.get("exception")
    cause = failure_of_exception(exception)
    failure_class = cause.failure_class
    record = load_record(task.store, task.job_id)
    if record is None or record.dag_run_id != context["run_id"]:
        # No record, or one that went on in another run (a paused job's resume, before this
        # stopped run's task ended): the job's end is not this run's.
        return
    message = str(exception)
    if failure_class is FailureClass.HANG:
        hung = record.count_attempts(FailureClass.HANG.value)
        message += f" (hung on {hung} of {len(record.attempts)} attempts)"
    failure = FailureInfo(
        failure_class=failure_class.value,
        task=task.task_id,
        message=message,
        fix=cause.fix,
    )
    record.failure = failure
    view = job_view(RunFacts(state="failed"), record, [])  # the run fails with this task
    record.state = view.state
    save_record(task.store, record)
    if record.state is JobState.FAILED:
        told = cause.cause
        notify.send(task.tenant_config, notify.failure_notice(record, view, told), context)
