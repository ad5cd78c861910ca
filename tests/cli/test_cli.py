"""The CLI's local paths: bad submissions stop before any API call, data upload, download.

Airflow is a loopback stand-in that lets the user read both tenants' DAGs (the CLI asks before
it touches a tenant's storage) and knows nothing else; the real check against FAB is in
tests/e2e/test_access.py.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from tests.support.fake_airflow import FakeAirflow
from trainyard.cli.app import app
from trainyard.jobs.checkpoints import publish_directory
from trainyard.jobs.layout import JobLayout, tenant_of
from trainyard.jobs.lineage import Lineage
from trainyard.jobs.records import JobRecord, JobState, load_record, save_record
from trainyard.jobs.registry import ModelRegistry, ModelVersion
from trainyard.manifest.schema import EvaluationSpec
from trainyard.storage.local import LocalStore

VALID = {
    "name": "digits-mlp",
    "tenant": "acme",
    "framework": {"name": "pytorch", "version": "2.13"},
    "code": {"path": "code"},
    "command": "python train.py",
    "resources": {"memory": "2Gi"},
}


def store_of(deployment: Path, tenant: str) -> LocalStore:
    return LocalStore(deployment / "storage" / tenant)


def stored_keys(deployment: Path, tenant: str) -> list[str]:
    return [info.key for info in store_of(deployment, tenant).list()]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def text_of(result: Result) -> str:
    """Everything the command printed, with rich's line wrapping undone."""
    return " ".join(result.output.split())


def manifest_file(directory: Path, **changes: object) -> Path:
    code = directory / "code"
    code.mkdir(exist_ok=True)
    (code / "train.py").write_text("print('training')\n")
    path = directory / "job.yaml"
    path.write_text(yaml.safe_dump({**VALID, **changes}))
    return path


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"resources": {"memory": "lots"}}, "resources.memory", id="bad-memory-unit"),
        pytest.param({"epochs": 8}, "epochs", id="unknown-field"),
        pytest.param({"command": ""}, "command", id="empty-command"),
        pytest.param({"data": {"path": "../acme-secrets"}}, "data.path", id="path-leaves-storage"),
    ],
)
def test_invalid_manifest_exits_2_naming_the_field(
    deployment: Path, changes: dict[str, object], field: str
) -> None:
    result = invoke("submit", str(manifest_file(deployment, **changes)))

    assert result.exit_code == 2, result.output
    assert f"{field}:" in text_of(result)
    assert "Traceback" not in result.output
    assert stored_keys(deployment, "acme") == [], "a rejected job leaves nothing in storage"


@pytest.mark.parametrize(
    ("resources", "field", "fix"),
    [
        pytest.param({"gpus": 1}, "resources.gpus", "gpu_quota", id="gpus-over-the-gpu-quota"),
        pytest.param(
            {"learners": 5}, "resources.learners", "cpu_quota", id="learners-over-the-cpu-quota"
        ),
    ],
)
def test_a_job_over_the_tenants_whole_quota_exits_2_before_anything_happens(
    deployment: Path, resources: dict[str, int], field: str, fix: str
) -> None:
    result = invoke("submit", str(manifest_file(deployment, resources=resources)))

    assert result.exit_code == 2, result.output
    output = text_of(result)
    assert f"error (resource_error): {field}:" in output
    assert fix in output
    assert stored_keys(deployment, "acme") == [], "no code is uploaded for a rejected job"


def test_a_code_archive_with_a_symlink_exits_2_naming_code_path(deployment: Path) -> None:
    archive = deployment / "code.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(manifest_file(deployment).parent / "code" / "train.py", arcname="train.py")
        link = tarfile.TarInfo("secrets")
        link.type, link.linkname = tarfile.SYMTYPE, "/home/me/.aws/credentials"
        tar.addfile(link)

    result = invoke("submit", str(manifest_file(deployment, code={"path": "code.tar.gz"})))

    assert result.exit_code == 2, result.output
    assert "code.path: code.tar.gz cannot be unpacked: entry 'secrets' is a symbolic link" in (
        text_of(result)
    )
    assert stored_keys(deployment, "acme") == []


def test_a_clean_code_archive_is_unpacked_into_the_jobs_code(
    deployment: Path, airflow: FakeAirflow
) -> None:
    archive = deployment / "code.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("train.py", "print('training')\n")
        bundle.writestr("pkg/model.py", "M = 1\n")

    result = invoke("submit", str(manifest_file(deployment, code={"path": "code.zip"})))

    assert result.exit_code == 0, result.output
    keys = stored_keys(deployment, "acme")
    assert [key.split("/code/")[1] for key in keys] == ["pkg/model.py", "train.py"]
    [run] = airflow.runs["trainyard_acme"]  # the job runs the stored code
    assert run["conf"]["manifest"]["code"] == {"uri": keys[0].split("/pkg/")[0]}


def test_unknown_tenant_exits_2_listing_the_known_tenants(deployment: Path) -> None:
    result = invoke("submit", str(manifest_file(deployment, tenant="initech")))

    assert result.exit_code == 2, result.output
    output = text_of(result)
    assert "tenant:" in output
    assert "unknown tenant 'initech'" in output
    assert "acme, globex" in output


def test_data_upload_writes_into_the_tenants_storage(deployment: Path) -> None:
    local = deployment / "digits"
    (local / "test").mkdir(parents=True)
    (local / "train.csv").write_text("pixel0,label\n0,1\n")
    (local / "test" / "test.csv").write_text("pixel0,label\n3,4\n")

    result = invoke("data", "upload", str(local), "./datasets/digits/", "--tenant", "globex")

    assert result.exit_code == 0, result.output
    assert "uploaded 2 files" in text_of(result)
    assert stored_keys(deployment, "globex") == [
        "datasets/digits/test/test.csv",
        "datasets/digits/train.csv",
    ]
    assert store_of(deployment, "globex").get_bytes("datasets/digits/train.csv") == (
        b"pixel0,label\n0,1\n"
    )
    assert stored_keys(deployment, "acme") == []


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        pytest.param("../x", "'../x' leaves the tenant's storage", id="parent-directory"),
        pytest.param("/etc/x", "'/etc/x' is an absolute path", id="absolute-path"),
        pytest.param("s3://other-bucket/x", "is a URI", id="uri"),
    ],
)
def test_data_upload_refuses_paths_outside_the_tenants_storage(
    deployment: Path, path: str, problem: str
) -> None:
    local = deployment / "digits"
    local.mkdir()
    (local / "train.csv").write_text("pixel0,label\n0,1\n")

    result = invoke("data", "upload", str(local), path, "--tenant", "acme")

    assert result.exit_code == 2, result.output
    assert problem in text_of(result)
    assert not (deployment / "storage").exists(), "nothing is written anywhere"


def test_data_upload_to_an_unknown_tenant_lists_the_known_ones(deployment: Path) -> None:
    local = deployment / "digits"
    local.mkdir()
    (local / "train.csv").write_text("pixel0,label\n0,1\n")

    result = invoke("data", "upload", str(local), "datasets/digits", "--tenant", "initech")

    assert result.exit_code == 2, result.output
    assert "unknown tenant 'initech': known tenants are acme, globex" in text_of(result)


@pytest.mark.parametrize(
    ("job_id", "message"),
    [
        pytest.param(
            "acme.digits-mlp.20261124-215908-abcd",
            "acme.digits-mlp.20261124-215908-abcd has no committed model yet (state: unknown)",
            id="unknown-job",
        ),
        pytest.param("not-a-job", "'not-a-job' is not a Trainyard job id", id="malformed-id"),
        pytest.param(
            "initech.digits-mlp.20261124-215908-abcd",
            "unknown tenant 'initech'",
            id="unknown-tenant",
        ),
    ],
)
def test_download_of_an_unknown_job_fails_readably(
    deployment: Path, job_id: str, message: str
) -> None:
    dest = deployment / "model"

    result = invoke("download", job_id, str(dest))

    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception
    assert message in text_of(result)
    assert "Traceback" not in result.output
    assert not dest.exists()


# models


def registry_with_two_versions(deployment: Path) -> ModelRegistry:
    """digits-mlp of acme: v1 (accuracy 0.95) in production, v2 (0.9) rejected."""
    store = store_of(deployment, "acme")
    registry = ModelRegistry(store, "digits-mlp")
    gate = EvaluationSpec(command="python evaluate.py", metric="accuracy")
    for n, value in enumerate((0.95, 0.9), start=1):
        job_id = f"acme.digits-mlp.20261124-21590{n}-abcd"
        results = deployment / job_id
        results.mkdir()
        (results / "model.bin").write_bytes(b"weights")
        publish_directory(store, results, JobLayout(job_id).results)
        lineage = Lineage(
            job_id=job_id,
            airflow_run_id=job_id,
            manifest=VALID,
            code_digest=f"sha256:{'c' * 64}",
            data_digest=f"sha256:{'d' * 64}",
            framework="pytorch 2.13",
            parent_checkpoint=12,
        )
        version = registry.register(
            job_id, JobLayout(job_id).results, {"accuracy": value}, "accuracy", lineage
        )
        registry.decide(version, gate)
    return registry


def test_models_list_marks_the_production_version(deployment: Path) -> None:
    registry_with_two_versions(deployment)

    result = invoke("models", "list", "digits-mlp", "--tenant", "acme")

    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[1:]]
    assert rows[0][:4] == ["v1", "promoted", "accuracy", "0.95"]
    assert rows[0][-2:] == ["acme.digits-mlp.20261124-215901-abcd", "yes"]
    assert rows[1][:4] == ["v2", "rejected", "accuracy", "0.9"]
    assert rows[1][-1] == "acme.digits-mlp.20261124-215902-abcd", "job ids are never cut"


def test_models_list_of_a_job_without_versions(deployment: Path) -> None:
    result = invoke("models", "list", "digits-mlp", "--tenant", "globex")

    assert result.exit_code == 0, result.output
    assert "job 'digits-mlp' of tenant 'globex' has no model versions yet" in text_of(result)


def test_models_show_defaults_to_production_and_shows_lineage(deployment: Path) -> None:
    registry_with_two_versions(deployment)

    production = invoke("models", "show", "digits-mlp", "--tenant", "acme")
    rejected = invoke("models", "show", "digits-mlp", "v2", "--tenant", "acme")

    assert production.exit_code == 0, production.output
    assert "digits-mlp v1: promoted, in production (since" in production.output
    assert "reason: first version of the job (accuracy 0.95)" in production.output
    assert f"code: sha256:{'c' * 64}\n" in production.output, "digests are whole"
    assert f"data: sha256:{'d' * 64}\n" in production.output
    assert "parent checkpoint: 12\n" in production.output
    assert rejected.exit_code == 0, rejected.output
    assert "digits-mlp v2: rejected\n" in rejected.output
    assert "accuracy 0.9 is not better than production v1 (0.95)" in rejected.output


def test_models_show_json_is_the_version_record(deployment: Path) -> None:
    registry = registry_with_two_versions(deployment)

    result = invoke("models", "show", "digits-mlp", "2", "--tenant", "acme", "--json")

    assert result.exit_code == 0, result.output
    assert ModelVersion.model_validate_json(result.output) == registry.get(2)


def test_models_promote_is_a_recorded_manual_override(deployment: Path) -> None:
    registry = registry_with_two_versions(deployment)

    result = invoke(
        "models", "promote", "digits-mlp", "v2", "--tenant", "acme", "--reason", "rollback"
    )

    assert result.exit_code == 0, result.output
    assert "digits-mlp v2 is now in production (was v1)" in text_of(result)
    pointer = registry.production_pointer()
    assert pointer is not None
    assert (pointer.version, pointer.manual, pointer.reason) == (2, True, "rollback")
    assert registry.get(2).reason.startswith("promoted manually: rollback")
    listed = invoke("models", "list", "digits-mlp", "--tenant", "acme")
    assert "yes (manual)" in listed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("show", "digits-mlp", "9"), "job 'digits-mlp' has no model version v9", id="show"
        ),
        pytest.param(
            ("promote", "digits-mlp", "v9"),
            "job 'digits-mlp' has no model version v9",
            id="promote",
        ),
        pytest.param(
            ("show", "digits-mlp", "latest"), "invalid model version 'latest'", id="bad-version"
        ),
        pytest.param(
            ("show", "other-job"),
            "job 'other-job' of tenant 'acme' has no production version yet",
            id="no-production",
        ),
    ],
)
def test_models_errors_exit_2_readably(
    deployment: Path, args: tuple[str, ...], message: str
) -> None:
    registry = registry_with_two_versions(deployment)
    pointer = store_of(deployment, "acme").get_bytes(registry.pointer_key)

    result = invoke("models", *args, "--tenant", "acme")

    assert result.exit_code == 2, result.output
    assert message in text_of(result)
    assert "Traceback" not in result.output
    assert store_of(deployment, "acme").get_bytes(registry.pointer_key) == pointer


def test_models_of_an_unknown_tenant(deployment: Path) -> None:
    result = invoke("models", "list", "digits-mlp", "--tenant", "initech")

    assert result.exit_code == 2, result.output
    assert "unknown tenant 'initech'" in text_of(result)


# access: Airflow decides, before any storage is touched


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(
            ("data", "upload", "{dataset}", "datasets/x", "--tenant", "globex"), id="upload"
        ),
        pytest.param(("submit", "{manifest}"), id="submit"),
        pytest.param(("status", "globex.digits-mlp.20261124-215901-abcd"), id="status"),
        pytest.param(("metrics", "globex.digits-mlp.20261124-215901-abcd"), id="metrics"),
        pytest.param(("logs", "globex.digits-mlp.20261124-215901-abcd"), id="logs"),
        pytest.param(("cancel", "globex.digits-mlp.20261124-215901-abcd"), id="cancel"),
        pytest.param(
            ("download", "globex.digits-mlp.20261124-215901-abcd", "{dest}"), id="download"
        ),
        pytest.param(("models", "list", "digits-mlp", "--tenant", "globex"), id="models-list"),
        pytest.param(("models", "promote", "digits-mlp", "1", "--tenant", "globex"), id="promote"),
        pytest.param(("list", "--tenant", "globex"), id="list"),
    ],
)
def test_a_tenant_airflow_refuses_is_refused_before_its_storage_is_touched(
    deployment: Path, airflow: FakeAirflow, args: tuple[str, ...]
) -> None:
    airflow.readable_dags.discard("trainyard_globex")
    (deployment / "dataset").mkdir()
    (deployment / "dataset" / "train.csv").write_text("pixel0,label\n0,1\n")
    store_of(deployment, "globex").put_bytes("jobs/keep", b"x")
    paths = {
        "dataset": str(deployment / "dataset"),
        "manifest": str(manifest_file(deployment, tenant="globex")),
        "dest": str(deployment / "model"),
    }

    result = invoke(*(arg.format(**paths) for arg in args))

    assert result.exit_code == 1, result.output
    assert "access denied: user 'alice' may not use tenant 'globex'" in text_of(result)
    assert "tenant_globex" in text_of(result)
    assert stored_keys(deployment, "globex") == ["jobs/keep"]
    assert not (deployment / "model").exists()
    assert "GET /api/v2/dags/trainyard_globex" in airflow.requests


def test_list_without_a_tenant_shows_only_the_tenants_the_user_may_see(
    deployment: Path, airflow: FakeAirflow
) -> None:
    airflow.readable_dags = set()

    result = invoke("list")

    assert result.exit_code == 0, result.output
    assert "globex" not in result.output
    assert "acme" not in result.output


def finished_run(run_id: str, state: str) -> dict[str, object]:
    return {
        "dag_run_id": run_id,
        "state": state,
        "start_date": "2026-12-01T10:00:00.123456Z",
        "end_date": "2026-12-01T10:04:10Z",
        "conf": {"manifest": {"name": "digits-mlp"}},
    }


def a_record(job_id: str, **changes: object) -> JobRecord:
    record = JobRecord(
        job_id=job_id,
        tenant=tenant_of(job_id),
        dag_id=f"trainyard_{tenant_of(job_id)}",
        dag_run_id=job_id,
        manifest={"name": "digits-mlp"},
    )
    return record.model_copy(update=changes)


def test_list_fits_80_columns_with_the_states_status_uses(
    deployment: Path, airflow: FakeAirflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    run_ids = [
        "acme.digits-mlp.20261201-100000-ab12",
        "acme.digits-mlp.20261201-100500-cd34",
        "acme.digits-mlp.20261201-101000-ef56",
        "acme.digits-mlp.20261201-101500-gh78",
    ]
    airflow.runs["trainyard_acme"] = [
        finished_run(run_ids[0], "success"),
        finished_run(run_ids[1], "failed"),
        finished_run(run_ids[2], "failed"),
        {**finished_run(run_ids[3], "queued"), "start_date": None, "end_date": None},
    ]
    store = store_of(deployment, "acme")
    save_record(store, a_record(run_ids[0], state=JobState.SUCCEEDED))
    save_record(store, a_record(run_ids[2], state=JobState.CANCELLED, cancel_requested=True))

    result = invoke("list", "--tenant", "acme")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, result.output
    assert any(
        run_ids[0] in line and "succeeded" in line and "100%" in line and "2026-12-01 10:00" in line
        for line in lines
    )
    assert any(run_ids[1] in line and "failed" in line for line in lines)
    assert any(run_ids[2] in line and "cancelled" in line for line in lines)
    assert any(run_ids[3] in line and "queued" in line for line in lines)
    assert "success " not in result.output
    listed = json.loads(invoke("list", "--tenant", "acme", "--json").output)
    assert [job["state"] for job in listed] == ["succeeded", "failed", "cancelled", "queued"]


def test_cancel_of_a_job_queued_before_validate_stops_its_run_and_records_it(
    deployment: Path, airflow: FakeAirflow
) -> None:
    job_id = "acme.digits-mlp.20261201-100000-ab12"
    queued = {**finished_run(job_id, "queued"), "start_date": None, "end_date": None}
    airflow.runs["trainyard_acme"] = [queued]

    result = invoke("cancel", job_id)

    assert result.exit_code == 0, result.output
    assert f"PATCH /api/v2/dags/trainyard_acme/dagRuns/{job_id}" in airflow.requests
    assert queued["state"] == "failed"
    record = load_record(store_of(deployment, "acme"), job_id)
    assert record is not None
    assert (record.state, record.cancel_requested) == (JobState.CANCELLED, True)
    assert record.manifest == {"name": "digits-mlp"}  # from the run's conf
    status = json.loads(invoke("status", job_id, "--json").output)
    assert status["state"] == "cancelled"
    assert "cancelled" in invoke("list", "--tenant", "acme").output


def test_pause_of_a_job_queued_before_validate_keeps_it_from_starting(
    deployment: Path, airflow: FakeAirflow
) -> None:
    job_id = "acme.digits-mlp.20261201-100000-ab12"
    queued = {**finished_run(job_id, "queued"), "start_date": None, "end_date": None}
    airflow.runs["trainyard_acme"] = [queued]

    result = invoke("pause", job_id)

    assert result.exit_code == 0, result.output
    assert queued["state"] == "failed"  # its run never starts
    record = load_record(store_of(deployment, "acme"), job_id)
    assert record is not None
    assert (record.state, record.pause_requested, record.attempts) == (JobState.PAUSED, True, [])
    assert json.loads(invoke("status", job_id, "--json").output)["state"] == "paused"


def test_cancel_of_a_job_that_ended_changes_nothing(deployment: Path, airflow: FakeAirflow) -> None:
    job_id = "acme.digits-mlp.20261201-100000-ab12"
    airflow.runs["trainyard_acme"] = [finished_run(job_id, "success")]

    result = invoke("cancel", job_id)

    assert result.exit_code == 2
    assert "already ended (succeeded)" in text_of(result)
    assert not any(request.startswith("PATCH") for request in airflow.requests)


def test_cancel_of_an_unknown_job_names_the_job_id(deployment: Path) -> None:
    result = invoke("cancel", "acme.digits-mlp.20261201-100000-ab12")

    assert result.exit_code == 2
    assert "is the job id right?" in text_of(result)


def test_status_shows_step_of_total_elapsed_and_time_left(
    deployment: Path, airflow: FakeAirflow
) -> None:
    job_id = "acme.digits-mlp.20261201-100000-ab12"
    airflow.runs["trainyard_acme"] = [
        {**finished_run(job_id, "running"), "start_date": "2026-12-01T10:00:00Z", "end_date": None}
    ]
    airflow.task_instances[job_id] = [{"task_id": "learner", "try_number": 2, "state": "running"}]
    save_record(store_of(deployment, "acme"), a_record(job_id))  # validate accepted it
    rows = [
        {"step": 100, "total_steps": 1000, "time": 1_000.0, "attempt": 2, "loss": 0.9},
        {"step": 300, "total_steps": 1000, "time": 1_100.0, "attempt": 2, "loss": 0.5},
    ]
    store_of(deployment, "acme").put_bytes(
        JobLayout(job_id).metrics(2), "".join(json.dumps(row) + "\n" for row in rows).encode()
    )

    result = invoke("status", job_id)

    assert result.exit_code == 0, result.output
    # 20 % done in 100 s: 70 % more takes 350 s.
    assert "progress: step 300 of 1000 (30%)" in text_of(result)
    assert "about 5m 50s left" in text_of(result)
    assert f"{job_id}: running (attempt 2, step 300 of 1000, about 5m 50s left)" in text_of(result)
    status = json.loads(invoke("status", job_id, "--json").output)
    assert (status["step"], status["total_steps"]) == (300, 1000)
    assert status["eta_s"] == pytest.approx(350.0)


def test_metrics_plot_draws_the_loss_of_each_attempt(deployment: Path) -> None:
    job_id = "acme.digits-mlp.20261201-100000-ab12"
    store = store_of(deployment, "acme")
    for attempt, steps in ((1, range(10, 60, 10)), (2, range(40, 110, 10))):
        rows = [{"step": s, "loss": 1 / s, "attempt": attempt} for s in steps]
        store.put_bytes(
            JobLayout(job_id).metrics(attempt),
            "".join(json.dumps(row) + "\n" for row in rows).encode(),
        )

    result = invoke("metrics", job_id, "--plot")

    assert result.exit_code == 0, result.output
    assert f"loss of {job_id}" in result.output
    assert "attempt 1" in result.output
    assert "attempt 2" in result.output
    assert any(ch in result.output for ch in "⠁⠂⠄⡀⢀⠈⠐⠠"), "no braille line drawn"

    missing = invoke("metrics", job_id, "--plot", "--metric", "accuracy")
    assert missing.exit_code != 0
    assert "--metric 'accuracy': no row reports it" in text_of(missing)
    assert "metrics: loss" in text_of(missing)
