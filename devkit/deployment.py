"""A Trainyard deployment on real Airflow for end-to-end tests.

Two tenants: `acme` on S3 (moto's server, standing in for MinIO; Airflow holds keys of an IAM
user allowed acme's bucket only) and `globex` on a local directory (the embedded default).
User code runs sandboxed. Beside them, `initech` (local directory) runs its learners on the
test-only `bare` backend (trainyard/backends/bare.py), the proof that a backend is one module.
All three have the digits dataset and the example code uploaded.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devkit.airflow_env import REPO_ROOT, wait_for_dags
from devkit.cluster import AirflowCluster, running_airflow
from devkit.s3_server import S3Server
from operators.deployment.auth_managers import AuthManagerName
from operators.hooks.storage import storage_connection
from trainyard.data.packaging import upload_directory
from trainyard.storage import ObjectStore, StorageCredentials, open_store
from trainyard.storage.config import S3StorageConfig
from trainyard.storage.s3 import S3Store
from trainyard.tenancy.config import load_config
from trainyard.tenancy.names import dag_id_for_tenant

EXAMPLE = REPO_ROOT / "examples" / "pytorch-digits"
#: The digits example of each framework (the same data set, uploaded once per tenant).
EXAMPLES = {
    "pytorch": EXAMPLE,
    "tensorflow": REPO_ROOT / "examples" / "keras-digits",
    "jax": REPO_ROOT / "examples" / "jax-digits",
}
EXAMPLE_CODE = "examples/pytorch-digits"  # where the trigger form's default manifest looks
TENANTS = ("acme", "globex")
#: The tenant on the `bare` backend: the same jobs through Airflow on a third backend.
BARE_TENANT = "initech"
#: The CLI's keys for acme, as a user's terminal holds them (the S3 server's admin keys).
S3_CREDENTIALS_ENV = "TRAINYARD_S3_ACME"


@dataclass
class Deployment:
    root: Path
    cluster: AirflowCluster
    stores: dict[str, ObjectStore]
    #: acme's keys as Airflow holds them, in its storage connection: an IAM user of the S3
    #: server with `trainyard tenants policy acme`, so they reach acme's bucket only.
    acme_keys: StorageCredentials

    def write_manifest(self, tenant: str, file_name: str, **changes: Any) -> Path:
        """An example's manifest (`example=`, a directory of EXAMPLES; default PyTorch's) for
        `tenant` with `changes` applied (nested dicts merge, except `code`, which is
        replaced), written to `file_name` under the root."""
        example = Path(changes.pop("example", EXAMPLE))
        manifest = yaml.safe_load((example / "job.yaml").read_text())
        manifest.update(tenant=tenant, code=changes.pop("code", {"path": str(example)}))
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(manifest.get(key), dict):
                manifest[key].update(value)
            else:
                manifest[key] = value
        path = self.root / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(manifest))
        return path

    @property
    def jobs_dir(self) -> Path:
        """Where scheduled job manifests go: <jobs_dir>/<tenant>/<job>.yaml."""
        return self.root / "jobs"

    def submit(self, manifest: Path) -> str:
        """Submit with the CLI (without waiting); return the job id."""
        return self.cluster.trainyard("submit", str(manifest)).stdout.split()[0]


def write_config(
    root: Path,
    s3_server: S3Server,
    tenant_settings: dict[str, dict[str, Any]] | None = None,
    kubernetes: dict[str, Any] | None = None,
    deployment_settings: dict[str, Any] | None = None,
) -> Path:
    """The tenants' config: `tenant_settings` adds fields (quotas, a per-tenant
    `learner_backend: kubernetes`, ...) per tenant; `kubernetes` is the cluster section;
    `deployment_settings` sets top-level fields (such as `environments`)."""
    settings = tenant_settings or {}
    acme_storage = s3_server.config(f"acme-{root.name}").model_dump(mode="json")
    acme_storage["credentials_env"] = S3_CREDENTIALS_ENV
    config: dict[str, Any] = {
        "learner_backend": "local",
        "work_dir": str(root / "work"),
        "sandbox": {"enabled": True},  # CI installs bubblewrap: user code runs sandboxed
        "jobs_dir": str(root / "jobs"),
        "tenants": [
            {"name": "acme", "storage": acme_storage, **settings.get("acme", {})},
            {
                "name": "globex",
                "storage": {"kind": "local", "root": str(root / "globex")},
                **settings.get("globex", {}),
            },
            {
                "name": BARE_TENANT,
                "storage": {"kind": "local", "root": str(root / BARE_TENANT)},
                "learner_backend": "bare",
            },
        ],
    }
    if kubernetes is not None:
        config["kubernetes"] = kubernetes
    config.update(deployment_settings or {})
    config_file = root / "trainyard.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return config_file


@contextmanager
def deploy(
    root: Path,
    s3_server: S3Server,
    tenant_settings: dict[str, dict[str, Any]] | None = None,
    kubernetes: dict[str, Any] | None = None,
    airflow_env: dict[str, str] | None = None,
    auth_manager: AuthManagerName = "simple",
    database_url: str | None = None,
    celery_broker_url: str | None = None,
    deployment_settings: dict[str, Any] | None = None,
) -> Iterator[Deployment]:
    """Start Airflow for both tenants (their pools and roles synced), with the dataset and
    example code uploaded. `root`'s name names acme's bucket and IAM user on `s3_server`, so
    deployments that share a server need roots of different names.

    `tenant_settings` adds config fields per tenant, `kubernetes` the cluster section, and
    `airflow_env` Airflow settings; `database_url` and `celery_broker_url` make it the
    production configuration (PostgreSQL, CeleryExecutor).
    """
    config_file = write_config(root, s3_server, tenant_settings, kubernetes, deployment_settings)
    credentials = s3_server.env(S3_CREDENTIALS_ENV)
    config = load_config(config_file)
    acme_storage = config.tenant("acme").storage
    assert isinstance(acme_storage, S3StorageConfig)
    acme_keys = s3_server.tenant_keys(f"acme-{root.name}", acme_storage)
    connection = storage_connection(config.tenant("acme"), acme_keys)
    settings = {
        **credentials,
        f"AIRFLOW_CONN_{connection.conn_id.upper()}": connection.as_json(),
        **(airflow_env or {}),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in credentials.items():
            patch.setenv(name, value)
        tenants = (*TENANTS, BARE_TENANT)
        stores = {tenant: open_store(config.tenant(tenant).storage) for tenant in tenants}
        acme_store = stores["acme"]
        assert isinstance(acme_store, S3Store)
        acme_store.ensure_bucket()
        with running_airflow(
            root / "airflow",
            config_file,
            settings,
            auth_manager,
            database_url=database_url,
            celery_broker_url=celery_broker_url,
        ) as cluster:
            # The CLI asks Airflow for the tenant's DAG before it touches the tenant's storage.
            wait_for_dags(cluster.env, [dag_id_for_tenant(tenant) for tenant in tenants])
            dataset = root / "digits"
            subprocess.run(
                [sys.executable, str(EXAMPLE / "make_dataset.py"), "--out", str(dataset)],
                check=True,
            )
            # Uploaded as `trainyard data upload` does, without its six process starts per
            # deployment (the CLI's own upload is tested in tests/cli and tests/e2e).
            for tenant in tenants:
                upload_directory(stores[tenant], dataset, "datasets/digits", "dataset")
                upload_directory(stores[tenant], EXAMPLE, EXAMPLE_CODE, "code")
            yield Deployment(root, cluster, stores, acme_keys)
