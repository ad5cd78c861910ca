"""Last task of a training run: evaluate the committed model and apply the threshold gate."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from operators.base import classified_failures
from operators.learner import LearnerRunningOperator
from trainyard.backends import RunMode
from trainyard.evaluation import check_threshold
from trainyard.jobs import JobLayout
from trainyard.records import JobState, update_record


class EvaluateModelOperator(LearnerRunningOperator):
    """Run `evaluation.command` against the model, store its metrics, gate on the threshold.

    Returns the evaluation metrics (XCom). A job without an evaluation succeeds here as is.
    """

    mode = RunMode.EVALUATE

    def execute(self, context: Context) -> dict[str, Any]:
        _, manifest = self.load_job()
        metrics: dict[str, Any] = {}
        if manifest.evaluation is None:
            self.log.info("the manifest names no evaluation")
        else:
            self.run_learners(manifest, context)
            metrics = self.store.get_json(JobLayout(self.job_id).evaluation)["metrics"]
            update_record(self.store, self.job_id, evaluation=metrics)
            with classified_failures():
                value = check_threshold(manifest.evaluation, metrics)
            self.log.info("evaluation passed: %s = %s", manifest.evaluation.metric, value)
        update_record(self.store, self.job_id, state=JobState.SUCCEEDED)
        return metrics
