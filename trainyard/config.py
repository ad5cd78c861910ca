"""The deployment config: learner backend, scratch directory, tenants and their storage.

Read from `TRAINYARD_CONFIG`, else the embedded default `config/trainyard.yaml`. Relative
paths in the file are relative to the file, so a config works from any working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from trainyard.manifest import (
    DnsLabel,
    FrameworkName,
    JobManifest,
    ManifestError,
    Seconds,
    validation_problems,
)
from trainyard.storage.config import LocalStorageConfig, StorageConfig

CONFIG_ENV = "TRAINYARD_CONFIG"
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "trainyard.yaml"


class ConfigError(ValueError):
    """The deployment config cannot be read or is invalid; the message names file and field."""


class UnknownTenantError(KeyError):
    """No tenant of that name is configured."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown tenant {name!r}: known tenants are {', '.join(known)}")

    def __str__(self) -> str:
        # KeyError would render the message with quotes around it.
        return str(self.args[0])


def _resolve(path: Path, info: ValidationInfo) -> Path:
    """Expand `~`, then anchor a relative path at `base_dir` from the validation context."""
    path = path.expanduser()
    base_dir = (info.context or {}).get("base_dir")
    if base_dir is not None and not path.is_absolute():
        path = (Path(base_dir) / path).resolve()
    return path


class TenantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: DnsLabel
    display_name: str = ""
    storage: StorageConfig
    allowed_frameworks: list[FrameworkName] = Field(default_factory=lambda: list(FrameworkName))
    max_running_jobs: int = Field(default=4, ge=1)
    default_watchdog: Seconds = Field(
        default=30 * 60.0,
        description="seconds a training job may go without a new metric row or checkpoint "
        "before it is stopped as hung, unless its manifest sets watchdog",
    )

    @field_validator("storage", mode="after")
    @classmethod
    def _resolve_local_root(cls, storage: StorageConfig, info: ValidationInfo) -> StorageConfig:
        if isinstance(storage, LocalStorageConfig):
            return storage.model_copy(update={"root": _resolve(storage.root, info)})
        return storage


class TrainyardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    learner_backend: Literal["local"] = "local"
    work_dir: Path = Field(description="scratch directory of local learners")
    tenants: list[TenantConfig] = Field(min_length=1)

    @field_validator("work_dir", mode="after")
    @classmethod
    def _resolve_work_dir(cls, work_dir: Path, info: ValidationInfo) -> Path:
        return _resolve(work_dir, info)

    @field_validator("tenants", mode="after")
    @classmethod
    def _unique_names(cls, tenants: list[TenantConfig]) -> list[TenantConfig]:
        names = [tenant.name for tenant in tenants]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(
                f"duplicate tenant names: {', '.join(duplicates)}; names must be unique"
            )
        return tenants

    @property
    def tenant_names(self) -> list[str]:
        return [tenant.name for tenant in self.tenants]

    def tenant(self, name: str) -> TenantConfig:
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant
        raise UnknownTenantError(name, self.tenant_names)


def load_config(path: Path | None = None) -> TrainyardConfig:
    """Load the config from `path`, else `$TRAINYARD_CONFIG`, else the embedded default."""
    if path is None:
        path = Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else DEFAULT_CONFIG_PATH
    path = Path(path).expanduser()
    try:
        document: Any = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(
            f"cannot read the Trainyard config {path}: {error.strerror}; "
            f"point {CONFIG_ENV} at a config file"
        ) from error
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid YAML in the Trainyard config {path}: {error}") from error
    if not isinstance(document, dict):
        raise ConfigError(f"the Trainyard config {path} must be a mapping of fields")
    try:
        return TrainyardConfig.model_validate(document, context={"base_dir": path.parent.resolve()})
    except ValidationError as error:
        lines = [
            f"  {field}: {message}" if field else f"  {message}"
            for field, message in validation_problems(error, TrainyardConfig)
        ]
        raise ConfigError("\n".join([f"invalid Trainyard config {path}:", *lines])) from error


def check_manifest_for_tenant(manifest: JobManifest, config: TrainyardConfig) -> TenantConfig:
    """Return the manifest's tenant, or raise ManifestError if it may not run this job."""
    try:
        tenant = config.tenant(manifest.tenant)
    except UnknownTenantError as error:
        raise ManifestError([("tenant", str(error))]) from error
    if manifest.framework.name not in tenant.allowed_frameworks:
        allowed = ", ".join(tenant.allowed_frameworks) or "none"
        raise ManifestError(
            [
                (
                    "framework.name",
                    f"framework {manifest.framework.name.value!r} is not allowed for tenant "
                    f"{tenant.name!r}: use one of {allowed}",
                )
            ]
        )
    return tenant


def dag_id_for_tenant(tenant: str) -> str:
    """The id of a tenant's training DAG: `trainyard_<tenant>`, with '-' written as '_'."""
    return f"trainyard_{tenant.replace('-', '_')}"
