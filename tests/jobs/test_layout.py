"""Job ids (fresh ids for the CLI, stable ids for UI runs, the tenant they belong to) and the
storage keys every component derives from the layout."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from trainyard.jobs.layout import (
    JOB_ID_PATTERN,
    JobId,
    JobLayout,
    ModelLayout,
    RunMode,
    job_id_for_run,
    new_job_id,
    parse_job_id,
    published_manifest,
    tenant_of,
    validation_report,
)

NOW = datetime(2026, 11, 24, 21, 59, 8, 434661, tzinfo=UTC)


def test_new_job_id_names_tenant_job_and_time() -> None:
    job_id = new_job_id("acme", "digits-mlp", now=NOW)

    assert job_id.startswith("acme.digits-mlp.20261124-215908-")
    assert JOB_ID_PATTERN.match(job_id)
    assert tenant_of(job_id) == "acme"


def test_new_job_ids_differ_within_the_same_second() -> None:
    ids = {new_job_id("acme", "digits-mlp", now=NOW) for _ in range(8)}

    assert len(ids) > 1


def test_new_job_id_defaults_to_now() -> None:
    before = datetime.now(UTC).strftime("%Y%m%d")
    job_id = new_job_id("acme", "digits-mlp")
    after = datetime.now(UTC).strftime("%Y%m%d")

    assert job_id.split(".")[2][:8] in {before, after}


RUN_IDS = [
    pytest.param(
        "acme.digits-mlp.20261124-215908-3f2a",
        "acme.digits-mlp.20261124-215908-3f2a",
        id="cli-id-is-kept",
    ),
    pytest.param(
        "manual__2026-11-24T21:59:08.434661+00:00",
        "acme.digits-mlp.manual-2026-11-24t21-59-08-434661-00-00",
        id="ui-run-id-is-sanitised",
    ),
    pytest.param(
        "scheduled__2026-11-24T00:00:00+00:00",
        "acme.digits-mlp.scheduled-2026-11-24t00-00-00-00-00",
        id="scheduled-run-id-is-sanitised",
    ),
    pytest.param(
        "globex.digits-mlp.20261124-215908-3f2a",
        "acme.digits-mlp.globex-digits-mlp-20261124-215908-3f2a",
        id="another-tenants-id-is-not-taken-over",
    ),
    pytest.param("__++__", "acme.digits-mlp.run", id="nothing-left-becomes-run"),
]


@pytest.mark.parametrize(("run_id", "expected"), RUN_IDS)
def test_job_id_for_run(run_id: str, expected: str) -> None:
    job_id = job_id_for_run("acme", "digits-mlp", run_id)

    assert job_id == expected
    assert job_id_for_run("acme", "digits-mlp", run_id) == job_id, "stable across retries"
    assert tenant_of(job_id) == "acme"


def test_long_run_id_still_gives_a_valid_bounded_id() -> None:
    run_id = "manual__" + "x" * 200

    job_id = job_id_for_run("acme", "digits-mlp", run_id)

    assert JOB_ID_PATTERN.match(job_id)
    assert len(job_id) <= len("acme.digits-mlp.") + 60


@pytest.mark.parametrize(
    "job_id",
    [
        pytest.param("", id="empty"),
        pytest.param("acme", id="tenant-only"),
        pytest.param("acme.digits-mlp", id="no-suffix"),
        pytest.param("acme.digits-mlp.x.y", id="too-many-parts"),
        pytest.param("Acme.digits-mlp.x", id="uppercase"),
        pytest.param("manual__2026-11-24T21:59:08+00:00", id="raw-run-id"),
        pytest.param("../acme.digits-mlp.x", id="path-traversal"),
    ],
)
def test_tenant_of_rejects_what_is_not_a_job_id(job_id: str) -> None:
    with pytest.raises(ValueError, match="is not a Trainyard job id") as raised:
        tenant_of(job_id)

    assert repr(job_id) in str(raised.value)
    assert "<tenant>.<job-name>.<suffix>" in str(raised.value)


def test_a_job_id_parses_into_tenant_manifest_name_and_suffix() -> None:
    job_id = new_job_id("acme", "digits-mlp", datetime(2026, 11, 24, 21, 59, 8, tzinfo=UTC))

    parsed = parse_job_id(job_id)

    assert parsed == JobId("acme", "digits-mlp", job_id.rsplit(".", 1)[1])
    assert ".".join(parsed) == job_id


def test_a_record_key_names_its_job_and_no_other_key_does() -> None:
    record = JobLayout("acme.digits-mlp.run-1").record

    assert JobLayout.of_record(record) == JobLayout("acme.digits-mlp.run-1")
    assert JobLayout.of_record("jobs/acme.digits-mlp.run-1/results/job.json") is None
    assert JobLayout.of_record("jobs/job.json") is None
    assert JobLayout.of_record("models/digits-mlp/job.json") is None
    assert JobLayout.of_record("jobs/acme.digits-mlp.run-1/job.jsonl") is None


JOB = JobLayout("acme.digits-mlp.run-1")
MODEL = ModelLayout("digits-mlp")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param(JOB.root, "jobs/acme.digits-mlp.run-1", id="job-root"),
        pytest.param(JOB.record, "jobs/acme.digits-mlp.run-1/job.json", id="record"),
        pytest.param(JOB.code, "jobs/acme.digits-mlp.run-1/code", id="code"),
        pytest.param(JOB.data, "jobs/acme.digits-mlp.run-1/data", id="staged-data"),
        pytest.param(
            JOB.data_validation,
            "jobs/acme.digits-mlp.run-1/logs/data-validation.json",
            id="data-validation-report",
        ),
        pytest.param(
            JOB.checkpoint(7),
            "jobs/acme.digits-mlp.run-1/checkpoints/step-000000007",
            id="checkpoint",
        ),
        pytest.param(
            JOB.checkpoint_pointer,
            "jobs/acme.digits-mlp.run-1/checkpoints/latest",
            id="checkpoint-pointer",
        ),
        pytest.param(JOB.results, "jobs/acme.digits-mlp.run-1/results", id="results"),
        pytest.param(
            JOB.results_manifest,
            "jobs/acme.digits-mlp.run-1/results/_MANIFEST.json",
            id="results-manifest",
        ),
        pytest.param(
            JOB.evaluation, "jobs/acme.digits-mlp.run-1/results/evaluation.json", id="evaluation"
        ),
        pytest.param(
            JOB.metrics(2), "jobs/acme.digits-mlp.run-1/logs/metrics-attempt-2.jsonl", id="metrics"
        ),
        pytest.param(
            JOB.utilisation(2, 1),
            "jobs/acme.digits-mlp.run-1/logs/utilisation-attempt-2-rank-1.jsonl",
            id="utilisation",
        ),
        pytest.param(
            JOB.outcome(RunMode.EVALUATE, 1, 0),
            "jobs/acme.digits-mlp.run-1/logs/evaluate-outcome-attempt-1-rank-0.json",
            id="outcome",
        ),
        pytest.param(MODEL.root, "models/digits-mlp", id="registry-root"),
        pytest.param(MODEL.production, "models/digits-mlp/production", id="production-pointer"),
        pytest.param(MODEL.model(3), "models/digits-mlp/v3/model", id="model-files"),
        pytest.param(
            published_manifest(MODEL.model(3)),
            "models/digits-mlp/v3/model/_MANIFEST.json",
            id="model-manifest",
        ),
        pytest.param(
            MODEL.version_record(3), "models/digits-mlp/v3/version.json", id="version-record"
        ),
        pytest.param(validation_report("ab12"), "validations/ab12.json", id="passed-validation"),
    ],
)
def test_every_storage_key_comes_from_the_layout(key: str, expected: str) -> None:
    assert key == expected


def test_a_version_record_key_names_its_version_and_no_other_key_does() -> None:
    assert MODEL.number_of_record(MODEL.version_record(12)) == 12
    assert MODEL.number_of_record(MODEL.production) is None
    assert MODEL.number_of_record(published_manifest(MODEL.model(1))) is None
    assert MODEL.number_of_record("models/digits-mlp/v0/version.json") is None
    assert MODEL.number_of_record(ModelLayout("other").version_record(1)) is None
    assert MODEL.number_of_record("models/digits-mlp-2/v1/version.json") is None


def test_a_checkpoint_key_names_its_step_and_path_and_no_other_key_does() -> None:
    assert JOB.checkpoint_file(published_manifest(JOB.checkpoint(7))) == (7, "_MANIFEST.json")
    assert JOB.checkpoint_file(JOB.checkpoint(12) + "/model/state.pt") == (12, "model/state.pt")
    assert JOB.checkpoint_file(JOB.checkpoint_pointer) is None
    assert JOB.checkpoint_file(JobLayout("acme.other.run-1").checkpoint(7)) is None
    assert JOB.checkpoint_file(JOB.results_manifest) is None


def test_a_metrics_key_names_its_attempt_and_no_other_key_does() -> None:
    assert JOB.metrics_attempt(JOB.metrics(3)) == 3
    assert JOB.metrics_attempt(JOB.learner_log(RunMode.TRAIN, 3, 0)) is None
    assert JOB.metrics_attempt(JobLayout("acme.other.run-1").metrics(3)) is None
    assert JOB.metrics_attempt(JOB.metrics(3) + ".tmp") is None


def test_a_utilisation_key_is_told_from_every_other_key() -> None:
    assert JOB.is_utilisation(JOB.utilisation(3, 0))
    assert not JOB.is_utilisation(JOB.metrics(3))
    assert not JOB.is_utilisation(JobLayout("acme.other.run-1").utilisation(3, 0))
    assert not JOB.is_utilisation(JOB.utilisation(3, 0) + ".tmp")
