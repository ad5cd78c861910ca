"""Evaluate the committed model: run the evaluation command and store its metrics."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from operators.base import TrainyardOperator
from operators.learner import LearnerRunningOperator
from trainyard.backends import RunMode
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.records import update_record


def run_evaluation(task: LearnerRunningOperator, context: Context) -> dict[str, Any]:
    """An evaluate task's run: none for a manifest without evaluation, else the learners in
    `evaluate` mode; returns the metrics (`learners_done`: `record_metrics`). Shared by the
    local and the Kubernetes task."""
    _, manifest = task.load_job()
    if manifest.evaluation is None:
        task.log.info("the manifest names no evaluation")
        return {}
    task.run_learners(manifest, context)
    metrics: dict[str, Any] = task.learners_done()
    return metrics


def record_metrics(task: TrainyardOperator) -> dict[str, Any]:
    """The metrics the evaluation stored, copied into the job record."""
    metrics: dict[str, Any] = task.store.get_json(JobLayout(task.job_id).evaluation)["metrics"]
    update_record(task.store, task.job_id, evaluation=metrics)
    task.log.info("evaluation metrics: %s", metrics)
    return metrics


class EvaluateModelOperator(LearnerRunningOperator):
    """Run `evaluation.command` against the model and store its metrics in the job record.

    Returns the metrics (XCom). Judging them (threshold, comparison with production) is the
    register_model task's job, so that a rejected model is still kept as a version.
    """

    mode = RunMode.EVALUATE

    def run_task(self, context: Context) -> dict[str, Any]:
        return run_evaluation(self, context)

    def learners_done(self) -> dict[str, Any]:
        return record_metrics(self)
