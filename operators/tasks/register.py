"""Last task of a training run: the model becomes a version, and the gate decides promotion."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from operators.deployment import notify
from operators.tasks.base import TrainyardOperator, classified_failures
from trainyard.failures import PlatformFault
from trainyard.jobs.evaluation import gate
from trainyard.jobs.layout import ModelLayout
from trainyard.jobs.lineage import lineage_of
from trainyard.jobs.records import JobState, update_record
from trainyard.jobs.registry import ModelRegistry
from trainyard.storage.base import join_key
from trainyard.storage.config import S3StorageConfig, StorageConfig

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import Dataset


def lineage_dataset(storage: StorageConfig, key: str, version: str | None) -> Dataset:
    """A tenant's object as an OpenLineage dataset, named as the naming conventions say
    (`s3://<bucket>` and the object's path; `file` and the absolute path), with its version."""
    from openlineage.client.event_v2 import Dataset
    from openlineage.client.generated.base import DatasetFacet
    from openlineage.client.generated.dataset_version_dataset import DatasetVersionDatasetFacet

    if isinstance(storage, S3StorageConfig):
        namespace, name = f"s3://{storage.bucket}", join_key(storage.prefix, key)
    else:
        namespace, name = "file", str(storage.root.resolve() / key)
    facets: dict[str, DatasetFacet] = {}
    if version is not None:
        facets["version"] = DatasetVersionDatasetFacet(version)
    return Dataset(namespace=namespace, name=name, facets=facets)


class RegisterModelOperator(TrainyardOperator):
    """Store the committed model as `models/<job-name>/v<N>/` and promote it only if better.

    A model below the manifest's threshold is kept as a rejected version and fails the job
    (the failure notification says so); one kept out because production is better is a
    rejected version of a successful job, and the tenant hears of it as `rejected`.
    Returns the version number (XCom).
    """

    def execute(self, context: Context) -> int:
        record, manifest = self.load_job()
        spec = manifest.evaluation
        metrics = record.evaluation or {}
        registry = ModelRegistry(self.store, manifest.name)
        with classified_failures():
            if record.model_key is None:
                raise PlatformFault("the job has no committed model", "clear the commit task")
            version = registry.register(
                job_id=self.job_id,
                results_prefix=record.model_key,
                metrics=metrics,
                metric=spec.metric if spec else "",
                lineage=lineage_of(record, manifest),
            )
            version = registry.decide(version, spec)
            update_record(self.store, self.job_id, model_version=version.version)
            self.log.info(
                "model %s v%d %s: %s",
                manifest.name,
                version.version,
                version.status,
                version.reason,
            )
            # The same gate that decided the version says whether the job fails (which does
            # not depend on production, so a retried task that finds the version decided
            # fails or succeeds as its first try did).
            failure = None if spec is None else gate(spec, metrics).failure
            if failure is not None:
                raise failure
        finished = update_record(self.store, self.job_id, state=JobState.SUCCEEDED) or record
        if version.status == "rejected":
            notify.send(self.tenant_config, notify.rejected_notice(finished, version), context)
        notify.send(self.tenant_config, notify.success_notice(finished, version), context)
        return version.version

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The job's lineage for the operator's catalog, in addition to the record kept with
        each version: the dataset snapshot it trained on in, the model version out. Airflow's
        OpenLineage provider calls it once the task succeeded (with a transport configured)."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        record, manifest = self.load_job()
        storage = self.tenant_config.storage
        inputs = (
            [lineage_dataset(storage, manifest.data.path, record.data_digest)]
            if manifest.data is not None
            else []
        )
        outputs = (
            [lineage_dataset(storage, ModelLayout(manifest.name).root, f"v{record.model_version}")]
            if record.model_version is not None
            else []
        )
        return OperatorLineage(inputs=inputs, outputs=outputs)
