"""Fencing: once a newer attempt of a job has started, an older one's writes are refused.

A task process whose supervisor died (a scheduler killed with its process group) can outlive
it with its learners while Airflow starts the next try, so two attempts of one job may run at
once. Each writes only what its attempt number (`TRAINYARD_ATTEMPT`, unique per job) is still
entitled to, checked by conditional writes (`ObjectStore.write_if`) on the two objects that
say which attempt is current:

- the **job record** (`records.claim_attempt`): the learner task claims it before its learners
  start; recording an attempt's end (`attempts.record_attempt`) is refused to an older one;
- the **checkpoint pointer** (`checkpoints.CheckpointStore.claim`): the learner runtime claims
  it before it restores; moving `latest`, pruning and publishing the results are refused to an
  older one, whose runtime then stops its command and exits without writing anything more.

The commit task takes only results published by the record's current attempt.
"""

from __future__ import annotations


class Superseded(Exception):
    """A newer attempt of the job has claimed it: this attempt must not write."""

    def __init__(self, job_id: str, attempt: int, newer: int) -> None:
        super().__init__(
            f"attempt {attempt} of {job_id} is superseded by attempt {newer}: its writes are "
            "refused"
        )
        self.attempt = attempt
        self.newer = newer
