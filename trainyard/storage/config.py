"""How a tenant's storage is configured: a local directory or an S3 (MinIO) bucket + prefix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class LocalStorageConfig(BaseModel):
    """A directory on this machine: the embedded default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local"] = "local"
    root: Path


class S3StorageConfig(BaseModel):
    """A bucket (and optional prefix) on an S3-compatible server such as MinIO.

    Credentials are never part of the config: they are read from the environment variables
    `<credentials_env>_ACCESS_KEY` and `<credentials_env>_SECRET_KEY`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["s3"] = "s3"
    endpoint: str = Field(description="host:port of the S3 server, without a scheme")
    bucket: str
    prefix: str = ""
    secure: bool = False
    region: str | None = None
    credentials_env: str = "TRAINYARD_S3"

    def credentials(self) -> tuple[str, str]:
        """Return (access key, secret key) from the environment, or raise naming the variables."""
        access_var = f"{self.credentials_env}_ACCESS_KEY"
        secret_var = f"{self.credentials_env}_SECRET_KEY"
        try:
            return os.environ[access_var], os.environ[secret_var]
        except KeyError as missing:
            raise RuntimeError(
                f"S3 credentials for bucket {self.bucket!r} are not set: "
                f"export {access_var} and {secret_var}"
            ) from missing


StorageConfig = Annotated[LocalStorageConfig | S3StorageConfig, Field(discriminator="kind")]
storage_config_adapter: TypeAdapter[StorageConfig] = TypeAdapter(StorageConfig)
