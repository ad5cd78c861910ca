"""The runtime's inputs, read once from the environment the learner backend sets.

Every value is checked up front so that a misconfigured learner fails before it downloads
anything, with the offending variable named.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, Json, ValidationError, model_validator

from trainyard.runtime.process import DEFAULT_STOP_GRACE_S
from trainyard.runtime.sandbox import SandboxNetwork
from trainyard.storage.config import StorageConfig


class SettingsError(ValueError):
    """The runtime's environment is missing or has invalid variables."""


class RuntimeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    job_id: str = Field(alias="TRAINYARD_JOB_ID", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    tenant: str = Field(alias="TRAINYARD_TENANT", min_length=1)
    command: str = Field(alias="TRAINYARD_COMMAND", min_length=1)
    attempt: int = Field(alias="TRAINYARD_ATTEMPT", ge=1)
    rank: int = Field(alias="TRAINYARD_LEARNER_RANK", ge=0)
    num_learners: int = Field(alias="TRAINYARD_NUM_LEARNERS", ge=1)
    checkpoint_interval: float = Field(alias="TRAINYARD_CHECKPOINT_INTERVAL", gt=0)
    checkpoint_keep: int = Field(alias="TRAINYARD_CHECKPOINT_KEEP", ge=1)
    # Seconds training may show no progress before it is stopped as a hang; 0: no watchdog.
    watchdog: float = Field(default=0.0, alias="TRAINYARD_WATCHDOG", ge=0)
    # Seconds the command may take to show its first progress; 0: no start-up limit.
    watchdog_startup: float = Field(default=0.0, alias="TRAINYARD_WATCHDOG_STARTUP", ge=0)
    work_dir: Path = Field(alias="TRAINYARD_WORK_DIR")
    # Seconds the command has after a forwarded stop before it is killed (stop_grace_seconds).
    stop_grace: float = Field(default=DEFAULT_STOP_GRACE_S, alias="TRAINYARD_STOP_GRACE", gt=0)
    storage: Json[StorageConfig] = Field(alias="TRAINYARD_STORAGE")
    # Set: the command runs in a sandbox with this network (trainyard/runtime/sandbox.py).
    sandbox_network: SandboxNetwork | None = Field(default=None, alias="TRAINYARD_SANDBOX_NETWORK")
    # The minor numbers of the learner's leased GPUs, whose device nodes its sandbox binds.
    gpu_devices: Json[list[int]] = Field(default_factory=list, alias="TRAINYARD_GPU_DEVICES")

    @model_validator(mode="after")
    def _rank_in_range(self) -> RuntimeSettings:
        if self.rank >= self.num_learners:
            raise ValueError(
                f"TRAINYARD_LEARNER_RANK={self.rank} must be below "
                f"TRAINYARD_NUM_LEARNERS={self.num_learners}"
            )
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RuntimeSettings:
        """Build the settings from `env` (default: os.environ), naming every bad variable."""
        env = os.environ if env is None else env
        try:
            return cls.model_validate({k: v for k, v in env.items() if k.startswith("TRAINYARD_")})
        except ValidationError as invalid:
            problems = [
                f"{'.'.join(str(part) for part in error['loc']) or 'environment'}: {error['msg']}"
                for error in invalid.errors()
            ]
            raise SettingsError("invalid runtime environment: " + "; ".join(problems)) from None
