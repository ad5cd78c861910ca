"""A sweep's trials as jobs: each trial is a job of the tenant with its own id
(`<sweep id>.t<N>`, N from 1), record, checkpoints, attempts and retries, whose manifest is the
sweep's with the values the search drew as its `hyperparameters` and no `sweep` section."""

from __future__ import annotations

import re
from typing import Any

from trainyard.jobs.layout import parse_job_id
from trainyard.manifest.schema import JobManifest
from trainyard.manifest.sweep import ParameterValue

_TRIAL_SUFFIX = re.compile(r"\.t([1-9][0-9]*)$")


def trial_job_id(sweep_id: str, number: int) -> str:
    """The job id of the search's trial `number` (Optuna's, from 0)."""
    parse_job_id(sweep_id)  # a sweep id is a job id
    if _TRIAL_SUFFIX.search(sweep_id):
        raise ValueError(f"{sweep_id} is a trial, not a sweep: a trial cannot sweep")
    return f"{sweep_id}.t{number + 1}"


def trial_of(job_id: str) -> tuple[str, int] | None:
    """The sweep id and the search's trial number of a trial's job id (None: not a trial)."""
    match = _TRIAL_SUFFIX.search(job_id)
    if match is None:
        return None
    return job_id[: match.start()], int(match[1]) - 1


def trial_manifest(sweep: JobManifest, values: dict[str, ParameterValue]) -> dict[str, Any]:
    """The manifest document (as a run's conf carries it) of a trial that drew `values`."""
    assert sweep.sweep is not None
    document = sweep.model_dump(mode="json", exclude={"sweep"}, exclude_none=True)
    document["hyperparameters"] = {**sweep.hyperparameters, **values}
    return document
