"""The manifest's `hyperparameters` and `sweep` section: each distribution, each bad input
named by its field, grids counted exactly, placeholders filled shell-quoted."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from tests.manifest.test_schema import changed
from trainyard.manifest.schema import ManifestError, parse_manifest
from trainyard.manifest.sweep import (
    Algorithm,
    ChoiceParameter,
    IntParameter,
    LogUniformParameter,
    UniformParameter,
    fill_placeholders,
    grid_size,
    parameter_environment,
    placeholders,
)

SWEEP: dict[str, Any] = {
    "parameters": {
        "lr": {"distribution": "log_uniform", "low": 1e-4, "high": 0.1},
        "dropout": {"distribution": "uniform", "low": 0, "high": 0.5},
        "hidden": {"distribution": "int", "low": 16, "high": 128, "step": 16},
        "optimizer": {"distribution": "choice", "values": ["sgd", "adam"]},
    },
    "trials": 8,
    "parallel": 2,
    "metric": "loss",
    "goal": "minimize",
    "early_stopping": {"rule": "asha", "min_steps": 2},
}
COMMAND = "python train.py --lr {lr} --dropout {dropout} --hidden {hidden} --opt {optimizer}"


def sweep_manifest(**sweep_changes: Any) -> dict[str, Any]:
    return changed({"command": COMMAND, "sweep": {**SWEEP, **sweep_changes}})


def problems(document: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ManifestError) as error:
        parse_manifest(document)
    return error.value.problems


def test_every_distribution_parses_with_its_defaults() -> None:
    sweep = parse_manifest(sweep_manifest()).sweep
    assert sweep is not None
    parameters = sweep.parameters
    assert isinstance(parameters["lr"], LogUniformParameter)
    assert isinstance(parameters["dropout"], UniformParameter)
    assert isinstance(parameters["hidden"], IntParameter)
    assert parameters["hidden"].values == [16, 32, 48, 64, 80, 96, 112, 128]
    assert isinstance(parameters["optimizer"], ChoiceParameter)
    assert sweep.algorithm is Algorithm.RANDOM
    assert (sweep.trials, sweep.parallel, sweep.trials_to_run) == (8, 2, 8)
    assert sweep.early_stopping.reduction_factor == 3


@pytest.mark.parametrize(
    ("parameter", "field", "hint"),
    [
        ({"distribution": "uniform", "low": 1, "high": 0}, "sweep.parameters.p", "below high"),
        ({"distribution": "uniform", "low": 0, "high": "inf"}, "sweep.parameters.p", "finite"),
        ({"distribution": "log_uniform", "low": 0, "high": 1}, "sweep.parameters.p.low", "than 0"),
        ({"distribution": "int", "low": 1, "high": 4, "step": 2}, "sweep.parameters.p", "step"),
        ({"distribution": "int", "low": 1, "high": 4, "step": 0}, "sweep.parameters.p.step", ""),
        ({"distribution": "int", "low": 1.5, "high": 4}, "sweep.parameters.p.low", ""),
        ({"distribution": "choice", "values": []}, "sweep.parameters.p.values", ""),
        ({"distribution": "choice", "values": [1, 1]}, "sweep.parameters.p.values", "once"),
        ({"distribution": "choice", "values": ["x" * 201]}, "sweep.parameters.p.values.0", ""),
        ({"distribution": "normal", "low": 0, "high": 1}, "sweep.parameters.p", "'uniform'"),
        ({"distribution": "uniform", "low": 0, "high": 1, "q": 2}, "sweep.parameters.p.q", "low"),
    ],
)
def test_a_bad_distribution_is_named_by_its_field(
    parameter: dict[str, Any], field: str, hint: str
) -> None:
    document = changed(
        {"command": "python train.py {p}", "sweep": {**SWEEP, "parameters": {"p": parameter}}}
    )
    found = problems(document)
    assert [path for path, _ in found] == [field], found
    assert hint in found[0][1]


@pytest.mark.parametrize(
    ("changes", "field", "hint"),
    [
        ({"trials": 0}, "sweep.trials", ""),
        ({"parallel": 0}, "sweep.parallel", ""),
        ({"goal": "best"}, "sweep.goal", "minimize"),
        ({"algorithm": "bayes"}, "sweep.algorithm", "tpe"),
        ({"early_stopping": {"rule": "hyperband"}}, "sweep.early_stopping.rule", "asha"),
        ({"parameters": {"Bad-Name": SWEEP["parameters"]["lr"]}}, "sweep.parameters.Bad-Name", ""),
        ({"metric": ""}, "sweep.metric", ""),
    ],
)
def test_a_bad_sweep_field_is_named(changes: dict[str, Any], field: str, hint: str) -> None:
    document = sweep_manifest(**changes)
    if "parameters" in changes:
        document["command"] = "python train.py"
    found = problems(document)
    assert field in [path for path, _ in found], found
    assert any(hint in message for path, message in found if path == field)


def test_a_grid_enumerates_exactly_and_must_fit_in_trials() -> None:
    grid = {
        "hidden": {"distribution": "int", "low": 16, "high": 64, "step": 16},
        "optimizer": {"distribution": "choice", "values": ["sgd", "adam", "rmsprop"]},
    }
    command = "python train.py --hidden {hidden} --opt {optimizer}"
    accepted = parse_manifest(
        changed(
            {
                "command": command,
                "sweep": {**SWEEP, "parameters": grid, "algorithm": "grid", "trials": 20},
            }
        )
    ).sweep
    assert accepted is not None
    assert grid_size(accepted.parameters) == 12
    assert accepted.trials_to_run == 12  # a smaller grid ends once each point ran

    too_big = changed(
        {"command": command, "sweep": {**SWEEP, "parameters": grid, "algorithm": "grid"}}
    )
    assert problems(too_big) == [
        (
            "sweep.trials",
            "the grid has 12 points but trials is 8: set trials to 12 or give the parameters "
            "fewer values",
        )
    ]
    continuous = sweep_manifest(algorithm="grid")
    [(field, message)] = problems(continuous)
    assert field == "sweep.trials"
    assert "dropout, lr is continuous" in message


def test_an_unknown_placeholder_names_the_command_and_what_is_known() -> None:
    document = sweep_manifest()
    document["command"] = COMMAND + " --epochs {epochs}"
    document["evaluation"]["command"] = "python evaluate.py --hidden {hiden}"
    assert problems(document) == [
        (
            "command",
            "{epochs} names no parameter (hyperparameters and sweep.parameters give: dropout, "
            "hidden, lr, optimizer); write {{ and }} for a literal brace",
        ),
        (
            "evaluation.command",
            "{hiden} names no parameter (hyperparameters and sweep.parameters give: dropout, "
            "hidden, lr, optimizer); write {{ and }} for a literal brace",
        ),
    ]
    document = sweep_manifest()
    document["command"] = COMMAND + " --epochs {epochs}"
    document["hyperparameters"] = {"epochs": 8, "lr": 0.1}
    assert problems(document) == [
        ("sweep.parameters.lr", "is also in hyperparameters: remove it from one of them")
    ]


def test_a_scheduled_job_cannot_sweep() -> None:
    document = sweep_manifest()
    document["schedule"] = "@daily"
    assert ("sweep", "a scheduled job cannot sweep: run the sweep with trainyard submit") in (
        problems(document)
    )


def test_braces_stay_as_written_in_a_job_without_parameters() -> None:
    manifest = parse_manifest(changed({"command": "awk '{print $1}' data.csv"}))
    assert manifest.filled(manifest.command) == "awk '{print $1}' data.csv"


def test_hyperparameters_fill_the_commands_shell_quoted() -> None:
    manifest = parse_manifest(
        changed(
            {
                "command": "python train.py --lr {lr} --name {name} --fast {fast} {{literal}}",
                "evaluation.command": "python evaluate.py --lr {lr}",
                "hyperparameters": {"lr": 0.001, "name": "a b; rm -rf ~", "fast": True},
            }
        )
    )
    command = manifest.filled(manifest.command)
    assert shlex.split(command) == [
        "python",
        "train.py",
        "--lr",
        "0.001",
        "--name",
        "a b; rm -rf ~",
        "--fast",
        "true",
        "{literal}",
    ]
    assert manifest.evaluation is not None
    assert manifest.filled(manifest.evaluation.command) == "python evaluate.py --lr 0.001"
    assert parameter_environment(manifest.hyperparameters) == {
        "TRAINYARD_PARAM_LR": "0.001",
        "TRAINYARD_PARAM_NAME": "a b; rm -rf ~",
        "TRAINYARD_PARAM_FAST": "true",
    }


def test_placeholders_are_found_in_order_and_literal_braces_skipped() -> None:
    assert placeholders("a {x} {{y}} {z}{x}") == ["x", "z", "x"]
    assert fill_placeholders("{{ {x} }}", {"x": 3}) == "{ 3 }"
