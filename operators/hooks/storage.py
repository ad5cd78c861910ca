"""The tenant's storage credentials, held as an Airflow connection per tenant."""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import BaseHook, Connection
from airflow.sdk.exceptions import AirflowNotFoundException

from trainyard.failures import PlatformFault
from trainyard.storage import ObjectStore, open_store
from trainyard.storage.config import S3StorageConfig, StorageCredentials
from trainyard.tenancy.config import TenantConfig
from trainyard.tenancy.names import storage_connection_id


class TenantStorageHook(BaseHook):
    """Opens a tenant's storage with the keys of its connection `trainyard_storage_<tenant>`.

    The connection (conn type `aws`: login = access key, password = secret key; extra
    `endpoint_url` mirrors the config for other tools) comes through Airflow's connection
    machinery: a secrets backend, an `AIRFLOW_CONN_TRAINYARD_STORAGE_<TENANT>` variable, or the
    metadata DB (`trainyard tenants sync`). Endpoint, bucket and prefix come from the Trainyard
    config. Airflow masks the password in task logs; Trainyard never logs either key.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "trainyard_storage_default"
    conn_type = "aws"
    hook_name = "Trainyard tenant storage"

    def __init__(self, tenant: TenantConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tenant = tenant
        self.conn_id = storage_connection_id(tenant.name)

    def get_credentials(self) -> StorageCredentials | None:
        """The tenant's S3 keys; None for local storage, which needs none.

        Raises:
            PlatformFault: the connection is missing or incomplete (the fix is the admin's).
        """
        if not isinstance(self.tenant.storage, S3StorageConfig):
            return None
        fix = (
            f"the platform admin runs `trainyard tenants sync`, or sets the Airflow connection "
            f"{self.conn_id} (conn type aws, login = access key, password = secret key)"
        )
        try:
            connection = self.get_connection(self.conn_id)
        except AirflowNotFoundException as missing:
            raise PlatformFault(
                f"tenant {self.tenant.name!r} has no storage connection {self.conn_id!r}", fix
            ) from missing
        if not connection.login or not connection.password:
            raise PlatformFault(
                f"the storage connection {self.conn_id!r} lacks its login or password", fix
            )
        return StorageCredentials(connection.login, connection.password)

    def get_store(self) -> ObjectStore:
        return open_store(self.tenant.storage, self.get_credentials())


def storage_connection(tenant: TenantConfig, credentials: StorageCredentials) -> Connection:
    """The connection that holds a tenant's S3 keys (`.as_json()` is the value of
    `AIRFLOW_CONN_<ID>`); `trainyard tenants sync` and the tests create it.

    Its extra mirrors the config's endpoint (and region, when set) for other AWS tools.
    """
    storage = tenant.storage
    if not isinstance(storage, S3StorageConfig):
        raise ValueError(f"tenant {tenant.name!r} has local storage, which needs no credentials")
    scheme = "https" if storage.secure else "http"
    extra: dict[str, Any] = {"endpoint_url": f"{scheme}://{storage.endpoint}"}
    if storage.region:
        extra["region_name"] = storage.region
    return Connection(
        conn_id=storage_connection_id(tenant.name),
        conn_type="aws",
        description=f"Object storage of tenant {tenant.name} (bucket {storage.bucket})",
        login=credentials.access_key,
        password=credentials.secret_key,
        extra=json.dumps(extra),
    )
