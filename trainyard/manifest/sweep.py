"""A job's hyper-parameters and its `sweep` section: the search a sweep runs, one trial a job.

`hyperparameters` fixes a job's values; `sweep` gives each parameter a distribution, and each
of its trials is a job whose `hyperparameters` are the values the search drew
(trainyard/sweeps). Either way the command names the values as `{name}` placeholders (shell
quoted when filled in; `{{` and `}}` stand for literal braces), and the learners also find
each as the environment variable `TRAINYARD_PARAM_<NAME>`.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trainyard.limits import shorten
from trainyard.runtime.workspace import PARAMETER_VARIABLE_PREFIX

MAX_PARAMETERS = 20
MAX_CHOICES = 100
MAX_TRIALS = 1000
MAX_PARALLEL_TRIALS = 50
MAX_VALUE_CHARS = 200

_PARAMETER_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
#: `{{`, `}}`, or a placeholder `{...}`.
_BRACES_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def check_parameter_name(value: str) -> str:
    if not _PARAMETER_NAME_RE.fullmatch(value):
        raise ValueError(
            f"invalid parameter name {shorten(value)}: use a lowercase letter, then lowercase "
            "letters, digits or '_' (at most 40 characters), such as learning_rate"
        )
    return value


def _check_value(value: bool | int | float | str) -> bool | int | float | str:
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        raise ValueError(f"a text value may have at most {MAX_VALUE_CHARS} characters")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("a number must be finite")
    return value


ParameterName = Annotated[str, AfterValidator(check_parameter_name)]
#: What a parameter may take: a number, a flag or a short text (JSON scalars).
ParameterValue = Annotated[bool | int | float | str, AfterValidator(_check_value)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UniformParameter(_Strict):
    """A float drawn evenly from [low, high]."""

    distribution: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> UniformParameter:
        _check_bounds(self.low, self.high)
        return self


class LogUniformParameter(_Strict):
    """A float whose logarithm is drawn evenly: for scales such as a learning rate."""

    distribution: Literal["log_uniform"]
    low: float = Field(gt=0, description="> 0: the logarithm of 0 is not defined")
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> LogUniformParameter:
        _check_bounds(self.low, self.high)
        return self


class IntParameter(_Strict):
    """An integer from low to high (both included) in steps of `step`."""

    distribution: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _on_the_grid(self) -> IntParameter:
        _check_bounds(self.low, self.high)
        if (self.high - self.low) % self.step:
            raise ValueError(
                f"high - low ({self.high - self.low}) is not a multiple of step ({self.step}): "
                f"set high to {self.high - (self.high - self.low) % self.step} or change step"
            )
        return self

    @property
    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))


class ChoiceParameter(_Strict):
    """One of the listed values."""

    distribution: Literal["choice"]
    values: list[ParameterValue] = Field(min_length=1, max_length=MAX_CHOICES)

    @field_validator("values")
    @classmethod
    def _distinct(cls, values: list[ParameterValue]) -> list[ParameterValue]:
        seen = [repr(value) for value in values]
        twice = sorted({value for value in seen if seen.count(value) > 1})
        if twice:
            raise ValueError(f"lists {', '.join(twice)} more than once: list each value once")
        return values


def _check_bounds(low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("low and high must be finite numbers")
    if low >= high:
        raise ValueError(f"low ({low:g}) must be below high ({high:g}): swap or widen them")


Parameter = Annotated[
    UniformParameter | LogUniformParameter | IntParameter | ChoiceParameter,
    Field(discriminator="distribution"),
]


class Algorithm(StrEnum):
    GRID = "grid"
    RANDOM = "random"
    TPE = "tpe"


class Goal(StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


class EarlyStoppingRule(StrEnum):
    NONE = "none"
    MEDIAN = "median"
    ASHA = "asha"


class EarlyStopping(_Strict):
    """When a trial stops early (`pruned`), judged on the metric rows it reports per step."""

    rule: EarlyStoppingRule = EarlyStoppingRule.NONE
    min_steps: int = Field(
        default=1,
        ge=1,
        description="steps every trial runs before it may be stopped (ASHA's minimum resource, "
        "the median rule's warm-up)",
    )
    reduction_factor: int = Field(
        default=3, ge=2, le=10, description="ASHA: keep the best 1/reduction_factor at each rung"
    )


class SweepSpec(_Strict):
    """The search: each parameter's distribution, how many trials, how many at once, and the
    metric (a field of the metric rows the trials report) it optimizes."""

    parameters: dict[ParameterName, Parameter] = Field(min_length=1, max_length=MAX_PARAMETERS)
    algorithm: Algorithm = Algorithm.RANDOM
    trials: int = Field(ge=1, le=MAX_TRIALS)
    parallel: int = Field(
        default=1,
        ge=1,
        le=MAX_PARALLEL_TRIALS,
        description="trials at once (the tenant's max_running_jobs and quotas still apply)",
    )
    metric: Annotated[str, Field(min_length=1, max_length=100)]
    goal: Goal
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    seed: int | None = Field(default=None, description="the search's seed, for a repeatable one")

    @field_validator("trials")
    @classmethod
    def _grid_fits(cls, trials: int, info: ValidationInfo) -> int:
        parameters = info.data.get("parameters")
        if info.data.get("algorithm") is not Algorithm.GRID or parameters is None:
            return trials
        continuous = sorted(
            name
            for name, parameter in parameters.items()
            if not isinstance(parameter, IntParameter | ChoiceParameter)
        )
        if continuous:
            raise ValueError(
                f"a grid needs a finite set of values, and {', '.join(continuous)} "
                "is continuous: give it distribution choice (or int), or use algorithm random or "
                "tpe"
            )
        size = grid_size(parameters)
        if size > trials:
            raise ValueError(
                f"the grid has {size} points but trials is {trials}: set trials to {size} or "
                "give the parameters fewer values"
            )
        return trials

    @property
    def trials_to_run(self) -> int:
        """A grid smaller than `trials` ends once each point ran."""
        if self.algorithm is Algorithm.GRID:
            return min(self.trials, grid_size(self.parameters))
        return self.trials


def grid_size(parameters: Mapping[str, Parameter]) -> int:
    return math.prod(len(grid_values(parameter)) for parameter in parameters.values())


def grid_values(parameter: Parameter) -> list[ParameterValue]:
    """The values a grid takes of `parameter` (an int or a choice parameter)."""
    if isinstance(parameter, IntParameter):
        return list(parameter.values)
    if isinstance(parameter, ChoiceParameter):
        return list(parameter.values)
    raise ValueError(f"a {parameter.distribution} parameter has no grid")


def placeholders(command: str) -> list[str]:
    """The placeholders of `command`, in order (`{{` and `}}` are literal braces)."""
    return [match[1] for match in _BRACES_RE.finditer(command) if match[1] is not None]


def placeholder_problems(command: str, known: set[str]) -> list[str]:
    """What is wrong with the placeholders of `command` given the parameters `known`."""
    problems = []
    for name in dict.fromkeys(placeholders(command)):
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            shown = name if _PARAMETER_NAME_RE.fullmatch(name) else shorten(name)
            problems.append(
                f"{{{shown}}} names no parameter (hyperparameters and sweep.parameters "
                f"give: {listed}); write {{{{ and }}}} for a literal brace"
            )
    return problems


def fill_placeholders(command: str, values: Mapping[str, ParameterValue]) -> str:
    """`command` with each placeholder replaced by its value, shell-quoted."""

    def fill(match: re.Match[str]) -> str:
        if match[1] is None:
            return match[0][0]
        return shlex.quote(format_value(values[match[1]]))

    return _BRACES_RE.sub(fill, command)


def format_value(value: ParameterValue) -> str:
    """A value as the command and the environment get it (`true`/`false` for a flag)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parameter_environment(values: Mapping[str, ParameterValue]) -> dict[str, str]:
    """The environment variables of `values`: TRAINYARD_PARAM_<NAME>."""
    return {
        f"{PARAMETER_VARIABLE_PREFIX}{name.upper()}": format_value(value)
        for name, value in values.items()
    }
