"""Evaluate the committed model: run the evaluation command and store its metrics."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from operators.learner import LearnerRunningOperator
from trainyard.backends import RunMode
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.records import update_record


class EvaluateModelOperator(LearnerRunningOperator):
    """Run `evaluation.command` against the model and store its metrics in the job record.

    Returns the metrics (XCom). Judging them (threshold, comparison with production) is the
    register_model task's job, so that a rejected model is still kept as a version.
    """

    mode = RunMode.EVALUATE

    def execute(self, context: Context) -> dict[str, Any]:
        _, manifest = self.load_job()
        if manifest.evaluation is None:
            self.log.info("the manifest names no evaluation")
            return {}
        self.run_learners(manifest, context)
        return self.record_metrics()

    def record_metrics(self) -> dict[str, Any]:
        """The metrics the evaluation stored, copied into the job record."""
        metrics: dict[str, Any] = self.store.get_json(JobLayout(self.job_id).evaluation)["metrics"]
        update_record(self.store, self.job_id, evaluation=metrics)
        self.log.info("evaluation metrics: %s", metrics)
        return metrics
