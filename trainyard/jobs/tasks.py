"""The task ids of a tenant's training DAG and of a scheduled job's DAG.

The DAG factory (`operators/dag_factory.py`) names its tasks with these, and the CLI and the
cluster policy look tasks up by them, so a renamed or added task cannot be missed by one of
them.
"""

from __future__ import annotations

from enum import StrEnum


class TaskId(StrEnum):
    VALIDATE = "validate"
    STAGE_DATA = "stage_data"
    LEARNER = "learner"
    COMMIT = "commit"
    EVALUATE = "evaluate"
    REGISTER_MODEL = "register_model"
    #: The one task of a scheduled job's DAG: it runs the job in the tenant's DAG.
    SUBMIT_JOB = "submit_job"
    #: The one task of the DAG standing in for a broken scheduled manifest.
    INVALID_MANIFEST = "invalid_manifest"
    #: A sweep's controller (after its validate): it runs the trials as jobs.
    RUN_TRIALS = "run_trials"


#: Every task of a tenant's training DAG, in the order a run reaches them (for `trainyard logs`).
TRAINING_TASKS: tuple[TaskId, ...] = (
    TaskId.VALIDATE,
    TaskId.STAGE_DATA,
    TaskId.LEARNER,
    TaskId.COMMIT,
    TaskId.EVALUATE,
    TaskId.REGISTER_MODEL,
)
