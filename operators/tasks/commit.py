"""Commit the job's model: the results the learner published are complete and recorded."""

from __future__ import annotations

from airflow.sdk import Context

from operators.tasks.base import classified_failures
from operators.tasks.waiting import MODEL_PUBLISHED, STORAGE_ANSWERS, WaitingOperator
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.model import commit_model
from trainyard.jobs.records import update_record


class CommitModelOperator(WaitingOperator):
    """Verify the published model against its manifest and record it with the newest checkpoint,
    once storage answers and shows the learner's published results.

    Until this task succeeds the job has no model: evaluation and downloads only ever see a
    complete, verified set of files.
    """

    conditions = (STORAGE_ANSWERS, MODEL_PUBLISHED)

    def work(self, context: Context) -> str:
        layout = JobLayout(self.job_id)
        record, _ = self.load_job()
        with classified_failures():
            model = commit_model(self.store, layout, record.current_attempt)
            update_record(
                self.store, self.job_id, model_key=model.key, final_step=model.checkpoint_step
            )
        self.log.info(
            "model committed: %d files at %s/%s (newest checkpoint: step %s)",
            len(model.files),
            self.store.describe(),
            model.key,
            model.checkpoint_step,
        )
        return model.key
