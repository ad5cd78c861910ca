"""How a tenant's storage is configured: a local directory or an S3 (MinIO) bucket + prefix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class StorageCredentials(NamedTuple):
    """An S3 access key and its secret. Its repr shows neither, so a log line cannot leak them."""

    access_key: str
    secret_key: str

    def __repr__(self) -> str:
        return "StorageCredentials(access_key='***', secret_key='***')"


class LocalStorageConfig(BaseModel):
    """A directory on this machine: the embedded default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local"] = "local"
    root: Path


class S3StorageConfig(BaseModel):
    """A bucket (and optional prefix) on an S3-compatible server such as MinIO.

    Credentials are never part of the config. Airflow's tasks read them from the tenant's
    Airflow connection (`trainyard_storage_<tenant>`, see `operators/hooks/storage.py`) and hand
    them to the learners; outside Airflow (the `trainyard` CLI, the learner runtime) they come
    from the environment variables `<credentials_env>_ACCESS_KEY` and
    `<credentials_env>_SECRET_KEY`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["s3"] = "s3"
    endpoint: str = Field(description="host:port of the S3 server, without a scheme")
    bucket: str
    prefix: str = ""
    secure: bool = False
    region: str | None = None
    credentials_env: str = "TRAINYARD_S3"

    def credentials(self) -> StorageCredentials:
        """The keys in this process's environment (CLI, runtime), or raise naming the variables."""
        access_var = f"{self.credentials_env}_ACCESS_KEY"
        secret_var = f"{self.credentials_env}_SECRET_KEY"
        try:
            return StorageCredentials(os.environ[access_var], os.environ[secret_var])
        except KeyError as missing:
            raise RuntimeError(
                f"S3 credentials for bucket {self.bucket!r} are not set: "
                f"export {access_var} and {secret_var}"
            ) from missing


StorageConfig = Annotated[LocalStorageConfig | S3StorageConfig, Field(discriminator="kind")]
storage_config_adapter: TypeAdapter[StorageConfig] = TypeAdapter(StorageConfig)
