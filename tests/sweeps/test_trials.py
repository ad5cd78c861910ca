"""A sweep's trials are jobs: their ids, and manifests that run as any job's do."""

from __future__ import annotations

import pytest

from tests.manifest.test_sweep import sweep_manifest
from trainyard.jobs.layout import JobLayout, parse_job_id
from trainyard.manifest.schema import parse_manifest
from trainyard.manifest.sweep import ParameterValue
from trainyard.sweeps.trials import trial_job_id, trial_manifest, trial_of

SWEEP_ID = "acme.digits-mlp.20261207-101500-ab12"


def test_a_trial_id_is_a_job_id_under_its_sweep() -> None:
    trial = trial_job_id(SWEEP_ID, 0)
    assert trial == f"{SWEEP_ID}.t1"
    assert parse_job_id(trial).tenant == "acme"
    assert trial_of(trial) == (SWEEP_ID, 0)
    assert trial_of(SWEEP_ID) is None
    assert JobLayout(trial).root != JobLayout(SWEEP_ID).root
    with pytest.raises(ValueError, match="a trial cannot sweep"):
        trial_job_id(trial, 1)
    with pytest.raises(ValueError, match="not a Trainyard job id"):
        trial_job_id("acme.x", 0)


def test_a_trials_manifest_is_the_sweeps_with_its_values_and_no_sweep() -> None:
    document = sweep_manifest()
    document["hyperparameters"] = {"epochs": 8}
    document["command"] += " --epochs {epochs}"
    sweep = parse_manifest(document)
    values: dict[str, ParameterValue] = {
        "lr": 0.01,
        "dropout": 0.25,
        "hidden": 32,
        "optimizer": "adam",
    }

    trial = parse_manifest(trial_manifest(sweep, values))

    assert trial.sweep is None
    assert trial.hyperparameters == {"epochs": 8, **values}
    assert trial.filled(trial.command) == (
        "python train.py --lr 0.01 --dropout 0.25 --hidden 32 --opt adam --epochs 8"
    )
    assert (trial.name, trial.resources, trial.evaluation) == (
        sweep.name,
        sweep.resources,
        sweep.evaluation,
    )
