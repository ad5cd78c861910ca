"""The register task's lineage for the operator's catalog (OpenLineage, through Airflow's
provider): the dataset it trained on in, the model version out, named by the conventions."""

from __future__ import annotations

from pathlib import Path

import yaml
from openlineage.client.generated.dataset_version_dataset import DatasetVersionDatasetFacet

from operators.tasks.register import RegisterModelOperator, lineage_dataset
from trainyard.jobs.records import JobRecord, save_record
from trainyard.storage.config import LocalStorageConfig, S3StorageConfig
from trainyard.storage.local import LocalStore

JOB_ID = "acme.digits-mlp.20261124-215908-abcd"
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "pytorch-digits" / "job.yaml"


def test_an_s3_object_is_named_by_its_bucket_and_path() -> None:
    storage = S3StorageConfig(endpoint="127.0.0.1:9000", bucket="acme-data", prefix="team")

    dataset = lineage_dataset(storage, "datasets/digits", "sha256:ab")

    assert (dataset.namespace, dataset.name) == ("s3://acme-data", "team/datasets/digits")
    assert dataset.facets is not None
    version = dataset.facets["version"]
    assert isinstance(version, DatasetVersionDatasetFacet)
    assert version.datasetVersion == "sha256:ab"


def test_the_register_task_reports_the_dataset_in_and_the_model_version_out(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "acme")
    manifest = {**yaml.safe_load(EXAMPLE.read_text()), "tenant": "acme"}
    save_record(
        store,
        JobRecord(
            job_id=JOB_ID,
            tenant="acme",
            dag_id="trainyard_acme",
            dag_run_id="r",
            manifest=manifest,
            data_digest="sha256:0123",
            model_version=3,
        ),
    )
    task = RegisterModelOperator(task_id="register_model", tenant="acme", job_id=JOB_ID)
    task.__dict__["store"] = store  # the cached properties, without Airflow's connections
    task.__dict__["tenant_config"] = type(
        "Tenant", (), {"storage": LocalStorageConfig(root=tmp_path / "acme")}
    )()

    lineage = task.get_openlineage_facets_on_complete(None)

    [dataset] = lineage.inputs
    [model] = lineage.outputs
    assert (dataset.namespace, dataset.name) == (
        "file",
        str((tmp_path / "acme").resolve() / manifest["data"]["path"]),
    )
    assert dataset.facets["version"].datasetVersion == "sha256:0123"
    assert model.name == str((tmp_path / "acme").resolve() / f"models/{manifest['name']}")
    assert model.facets["version"].datasetVersion == "v3"
