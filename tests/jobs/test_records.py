"""The job record in storage: saved, loaded and updated as one JSON object."""

from __future__ import annotations

from trainyard.jobs.layout import JobLayout
from trainyard.jobs.records import (
    FailureInfo,
    JobRecord,
    JobState,
    list_records,
    load_record,
    save_record,
    update_record,
)
from trainyard.storage.local import LocalStore

JOB_ID = "acme.digits-mlp.20261124-215908-abcd"


def a_record() -> JobRecord:
    return JobRecord(
        job_id=JOB_ID,
        tenant="acme",
        dag_id="trainyard_acme",
        dag_run_id=JOB_ID,
        manifest={"name": "digits-mlp", "resources": {"memory": "2Gi"}},
    )


def test_record_round_trips_through_storage(local_store: LocalStore) -> None:
    record = a_record()
    record.failure = FailureInfo(failure_class="user_error", task="learner", message="boom")
    record.evaluation = {"accuracy": 0.97}

    save_record(local_store, record)

    assert local_store.exists(JobLayout(JOB_ID).record)
    assert load_record(local_store, JOB_ID) == record


def test_missing_record_loads_as_none(local_store: LocalStore) -> None:
    assert load_record(local_store, JOB_ID) is None


def test_update_changes_the_fields_and_keeps_the_rest(local_store: LocalStore) -> None:
    record = a_record()
    save_record(local_store, record)
    saved_at = record.updated_at

    updated = update_record(
        local_store, JOB_ID, state=JobState.SUCCEEDED, model_key="jobs/x/results", final_step=120
    )

    loaded = load_record(local_store, JOB_ID)
    assert loaded == updated
    assert loaded is not None
    assert (loaded.state, loaded.model_key, loaded.final_step) == (
        JobState.SUCCEEDED,
        "jobs/x/results",
        120,
    )
    assert loaded.manifest == record.manifest
    assert loaded.created_at == record.created_at
    assert loaded.updated_at >= saved_at


def test_update_of_a_missing_record_writes_nothing(local_store: LocalStore) -> None:
    assert update_record(local_store, JOB_ID, state=JobState.FAILED) is None
    assert list(local_store.list()) == []


def test_list_records_finds_each_jobs_record_and_nothing_else(local_store: LocalStore) -> None:
    first, second = a_record(), a_record().model_copy(update={"job_id": "acme.other.run-2"})
    save_record(local_store, first)
    save_record(local_store, second)
    local_store.put_json(f"{JobLayout(JOB_ID).results}/job.json", {"not": "a record"})

    assert sorted(r.job_id for r in list_records(local_store)) == sorted([JOB_ID, second.job_id])
