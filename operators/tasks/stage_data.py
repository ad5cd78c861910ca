"""Stage and validate the job's input data before any learner time is spent (once the
tenant's storage answers)."""

from __future__ import annotations

from airflow.sdk import Context

from operators.tasks.base import classified_failures
from operators.tasks.waiting import STORAGE_ANSWERS, WaitingOperator
from trainyard.data.staging import stage_data
from trainyard.jobs.layout import JobLayout
from trainyard.jobs.records import update_record


class StageDataOperator(WaitingOperator):
    """Snapshot `data.path` into the job's prefix and check it with great-expectations
    (unless the same data passed the same expectations before)."""

    conditions = (STORAGE_ANSWERS,)

    def work(self, context: Context) -> None:
        _, manifest = self.load_job()
        if manifest.data is None:
            self.log.info("the manifest names no data: nothing to stage")
            return
        layout = JobLayout(self.job_id)
        with classified_failures():
            report = stage_data(self.store, manifest.data, layout)
            update_record(
                self.store,
                self.job_id,
                data_digest=report.data_digest,
                data_validation={"success": report.success, "expectations": len(report.outcomes)},
            )
        self.log.info("staged %s: %d expectations met", manifest.data.path, len(report.outcomes))
