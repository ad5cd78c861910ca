"""The learner's local scratch space and the environment contract handed to user code."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trainyard.jobs.layout import RunMode
from trainyard.runtime import signal_report
from trainyard.runtime.settings import RuntimeSettings

# Variables user code may rely on; every other TRAINYARD_* variable (storage config and
# credentials included) is the runtime's business and is not passed on.
#: The job's hyper-parameters, one variable each (TRAINYARD_PARAM_LR): passed on to the command.
PARAMETER_VARIABLE_PREFIX = "TRAINYARD_PARAM_"
PUBLIC_VARIABLES = (
    "TRAINYARD_JOB_ID",
    "TRAINYARD_TENANT",
    "TRAINYARD_DATA_DIR",
    "TRAINYARD_CHECKPOINT_DIR",
    "TRAINYARD_RESULT_DIR",
    "TRAINYARD_METRICS_FILE",
    "TRAINYARD_LEARNER_RANK",
    "TRAINYARD_NUM_LEARNERS",
    "TRAINYARD_ATTEMPT",
    "TRAINYARD_CHECKPOINT_INTERVAL",
)


@dataclass(frozen=True)
class Workspace:
    """`<work_dir>/<job_id>/<attempt dir>/{code,data,checkpoints,results}` for one learner."""

    root: Path

    @classmethod
    def of(cls, work_dir: Path, job_id: str, mode: RunMode, attempt: int, rank: int) -> Workspace:
        """Where learner `rank` of an attempt works (the backend removes it, should the
        runtime not: killed hard)."""
        name = f"attempt-{attempt}-rank-{rank}"
        if mode is RunMode.EVALUATE:
            name = f"evaluate-{name}"
        return cls(work_dir / job_id / name)

    @classmethod
    def create(cls, settings: RuntimeSettings, mode: RunMode) -> Workspace:
        """A fresh, empty workspace; leftovers of an earlier run of the same attempt go."""
        workspace = cls.of(
            settings.work_dir, settings.job_id, mode, settings.attempt, settings.rank
        )
        shutil.rmtree(workspace.root, ignore_errors=True)
        for directory in (workspace.code, workspace.data, workspace.checkpoints, workspace.results):
            directory.mkdir(parents=True)
        workspace.metrics_file.touch()
        workspace.signal_report.touch()
        workspace.python_hook.mkdir()
        shutil.copyfile(signal_report.__file__, workspace.python_hook / "sitecustomize.py")
        return workspace

    def remove(self) -> None:
        """Delete the workspace, and its job's directory once no workspace is left in it."""
        shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(OSError):  # another attempt's or rank's is still there
            self.root.parent.rmdir()

    @property
    def code(self) -> Path:
        return self.root / "code"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def user_paths(self) -> tuple[Path, ...]:
        """What the user's command may write; not the learner log, which the runtime writes.

        The signal report is the command's own word that a stop signal reached it: writing a
        false one only makes its own failure a preemption.
        """
        return (
            self.code,
            self.data,
            self.checkpoints,
            self.results,
            self.metrics_file,
            self.signal_report,
        )

    @property
    def log_file(self) -> Path:
        return self.root / "learner.log"

    @property
    def python_hook(self) -> Path:
        """On the command's PYTHONPATH: `sitecustomize` reporting stop signals it receives."""
        return self.root / "python-hook"

    @property
    def signal_report(self) -> Path:
        """Where the hook appends each stop signal the command (or a child) received."""
        return self.root / "stop-signals"

    def user_env(self, settings: RuntimeSettings, inherited: Mapping[str, str]) -> dict[str, str]:
        """The inherited environment minus runtime internals, plus the public contract."""
        env = {k: v for k, v in inherited.items() if not k.startswith("TRAINYARD_")}
        env.update(
            {
                k: v
                for k, v in inherited.items()
                if k in PUBLIC_VARIABLES or k.startswith(PARAMETER_VARIABLE_PREFIX)
            },
            TRAINYARD_JOB_ID=settings.job_id,
            TRAINYARD_TENANT=settings.tenant,
            TRAINYARD_DATA_DIR=str(self.data),
            TRAINYARD_CHECKPOINT_DIR=str(self.checkpoints),
            TRAINYARD_RESULT_DIR=str(self.results),
            TRAINYARD_METRICS_FILE=str(self.metrics_file),
            TRAINYARD_LEARNER_RANK=str(settings.rank),
            TRAINYARD_NUM_LEARNERS=str(settings.num_learners),
            TRAINYARD_ATTEMPT=str(settings.attempt),
            TRAINYARD_CHECKPOINT_INTERVAL=f"{settings.checkpoint_interval:g}",
            # `python` in the command is the runtime's interpreter, with unbuffered output so
            # that logs stream live.
            PATH=os.pathsep.join(
                p for p in (os.path.dirname(sys.executable), inherited.get("PATH", "")) if p
            ),
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(
                p for p in (str(self.python_hook), inherited.get("PYTHONPATH", "")) if p
            ),
            **{signal_report.REPORT_VARIABLE: str(self.signal_report)},
        )
        return env
