"""A sweep's record in the tenant's storage: its manifest, its state and a row per trial.

The sweep's controller writes it each time it looks at the trials (`controller.look`), so
`trainyard sweep show`, `trainyard list` and the sweep page read a sweep where they read its
trials' jobs, without the study's database. The study and the trials' jobs stay the truth:
the record is their summary as of `updated_at`. Its state is also written by a user's pause,
cancel and resume while a look may be under way, so every write is conditional
(`ObjectStore.write_if`): no writer puts back a copy it read before another's write.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from trainyard.manifest.schema import JobManifest
from trainyard.manifest.sweep import ParameterValue, SweepSpec
from trainyard.storage.base import ObjectNotFound, ObjectStore, join_key

SWEEPS_ROOT = "sweeps"
_RECORD_NAME = "sweep.json"


class SweepState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # every trial ended, at least one completed: `best_job_id`
    FAILED = "failed"  # every trial ended and none completed
    CANCELLED = "cancelled"
    PAUSED = "paused"  # its run ended, its trials paused, until `trainyard resume`


#: The run conf's key that makes a run of the sweeps DAG the resume of a paused sweep.
RESUME_SWEEP_KEY = "resume_sweep_id"


class TrialRow(BaseModel):
    """One trial: its values, its job, and what it reached."""

    number: int  # the search's (from 0); the job id counts from 1
    job_id: str
    values: dict[str, ParameterValue]
    state: str  # its job's state (queued, running, succeeded, pruned, failed, ...)
    metric: float | None = None  # the final value, else the last one heard
    step: int | None = None  # the last step it reported


class SweepRecord(BaseModel):
    sweep_id: str
    tenant: str
    dag_id: str
    dag_run_id: str
    manifest: dict[str, Any]  # the sweep's manifest, its `sweep` section included
    state: SweepState = SweepState.RUNNING
    trials: list[TrialRow] = Field(default_factory=list)
    best_job_id: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def job_manifest(self) -> JobManifest:
        return JobManifest.model_validate(self.manifest)

    @property
    def spec(self) -> SweepSpec:
        spec = self.job_manifest.sweep
        assert spec is not None, f"{self.sweep_id}'s manifest has no sweep section"
        return spec

    def ranked(self) -> list[TrialRow]:
        """The trials best first: those that trained to the end by their metric (the sweep's
        goal), then the others (pruned, failed, running) by the last metric they reported."""
        sign = -1.0 if self.spec.goal.value == "maximize" else 1.0

        def rank(trial: TrialRow) -> tuple[bool, bool, float]:
            metric = trial.metric if trial.metric is not None else 0.0
            return (trial.state != "succeeded", trial.metric is None, sign * metric)

        return sorted(self.trials, key=rank)


def sweep_key(sweep_id: str) -> str:
    return join_key(SWEEPS_ROOT, sweep_id, _RECORD_NAME)


def load_sweep(store: ObjectStore, sweep_id: str) -> SweepRecord | None:
    try:
        return SweepRecord.model_validate_json(store.get_bytes(sweep_key(sweep_id)))
    except ObjectNotFound:
        return None


def read_sweep(store: ObjectStore, sweep_id: str) -> tuple[SweepRecord, str] | None:
    """The stored record with its version token for `write_sweep`; None if there is none."""
    try:
        data, token = store.read_with_token(sweep_key(sweep_id))
    except ObjectNotFound:
        return None
    return SweepRecord.model_validate_json(data), token


def write_sweep(store: ObjectStore, record: SweepRecord, token: str | None) -> bool:
    """Write `record` only if the stored one is still the version `token` (None: only if
    there is none); False, writing nothing, if another writer came first."""
    record.updated_at = datetime.now(UTC)
    return store.write_if(
        sweep_key(record.sweep_id), record.model_dump_json(indent=2).encode(), token
    )


def change_sweep(
    store: ObjectStore, sweep_id: str, change: Callable[[SweepRecord], None]
) -> SweepRecord:
    """Apply `change` to the stored record and write it unless another writer came first;
    then again, to the fresh record. `change` raises ValueError to refuse the record it sees.

    Raises:
        ValueError: no such sweep, or `change` refused it.
    """
    while True:
        loaded = read_sweep(store, sweep_id)
        if loaded is None:
            raise ValueError(f"there is no sweep {sweep_id}")
        record, token = loaded
        change(record)
        if write_sweep(store, record, token):
            return record


def resume_sweep(store: ObjectStore, sweep_id: str, run_id: str) -> SweepRecord:
    """The paused sweep `sweep_id` going on in the run `run_id` (again for a retry of it).

    Raises:
        ValueError: no such sweep, or one that is not paused, with the reason.
    """

    def resume(record: SweepRecord) -> None:
        if record.state is SweepState.RUNNING and record.dag_run_id == run_id:
            return  # a retry of the resume run's validate
        if record.state is not SweepState.PAUSED:
            raise ValueError(f"{sweep_id} is {record.state.value}: only a paused sweep resumes")
        record.state, record.dag_run_id = SweepState.RUNNING, run_id

    try:
        return change_sweep(store, sweep_id, resume)
    except ValueError as error:
        raise ValueError(f"resume_sweep_id: {error}") from None


def list_sweeps(store: ObjectStore) -> list[SweepRecord]:
    return [
        SweepRecord.model_validate_json(store.get_bytes(info.key))
        for info in store.list(SWEEPS_ROOT)
        if info.key.endswith("/" + _RECORD_NAME)
    ]
