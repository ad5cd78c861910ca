"""`trainyard envs`: the local backend's framework environments, prepared ahead of jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trainyard.backends.local.environments import (
    Accelerator,
    Environments,
    FrameworkEnv,
    provided_frameworks,
)
from trainyard.backends.local.gpus import gpu_count
from trainyard.cli.session import console
from trainyard.failures import TrainyardFailure
from trainyard.tenancy.config import ConfigError, load_config

app = typer.Typer(
    help="Local learners' framework environments (one per framework version and accelerator).",
    no_args_is_help=True,
)


def select(which: str | None) -> list[FrameworkEnv]:
    """The provided frameworks `which` names (`pytorch`, `jax:0.12`; None: all of them)."""
    provided = provided_frameworks()
    if which is None:
        return list(provided.values())
    name, _, version = which.partition(":")
    chosen = [
        env
        for env in provided.values()
        if env.name.value == name and (not version or env.version == version)
    ]
    if not chosen:
        raise typer.BadParameter(
            f"this deployment provides no {which}: use one of {', '.join(sorted(provided))}",
            param_hint="FRAMEWORK[:VERSION]",
        )
    return chosen


def builds(frameworks: list[FrameworkEnv], work_dir: Path) -> list[FrameworkEnv]:
    """Each framework's CPU build, and its CUDA build where this machine has NVIDIA GPUs (GPU
    jobs run in it; a machine without GPUs never downloads the CUDA wheels)."""
    accelerators = [Accelerator.CPU] + ([Accelerator.CUDA] if gpu_count(work_dir) else [])
    return [framework.on(accelerator) for framework in frameworks for accelerator in accelerators]


@app.command("prepare")
def prepare(
    which: Annotated[
        str | None,
        typer.Argument(
            metavar="[FRAMEWORK[:VERSION]]", help="e.g. tensorflow or jax:0.12; default: all"
        ),
    ] = None,
) -> None:
    """Create (or reuse) the environments local learners run in (the CUDA builds too where
    this machine has NVIDIA GPUs); prints each one's Python."""
    try:
        config = load_config()
    except ConfigError as error:
        console.print(str(error), markup=False)
        raise typer.Exit(2) from error
    environments = Environments(config.environments.dir)
    for framework in builds(select(which), config.work_dir):
        reused = environments.is_ready(framework)
        try:
            python = environments.prepare(framework, lambda line: console.print(line, markup=False))
        except TrainyardFailure as failure:
            console.print(f"{failure.cause}\nfix: {failure.fix}", markup=False)
            raise typer.Exit(1) from failure
        state = "reused" if reused else "created"
        console.print(
            f"{framework.key} ({framework.accelerator}): {python} ({state})", markup=False
        )


@app.command("list")
def list_environments() -> None:
    """The framework versions (and builds) this deployment provides, whether each is prepared."""
    config = load_config()
    environments = Environments(config.environments.dir)
    for framework in builds(list(provided_frameworks().values()), config.work_dir):
        state = "ready" if environments.is_ready(framework) else "not prepared"
        console.print(
            f"{framework.key}  {framework.accelerator}  Python {framework.python}  {state}  "
            f"{environments.path(framework)}",
            markup=False,
        )
