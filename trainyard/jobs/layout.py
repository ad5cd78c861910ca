"""Where everything lives in a tenant's storage; every component derives its keys from here.

jobs/<job-id>/{code,data,checkpoints,results,logs,job.json}     JobLayout: one job's files
models/<job-name>/{production,v<N>/...}                          ModelLayout: its registry
validations/<digest>.json                                        passed data validations
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import NamedTuple

from trainyard.limits import shorten
from trainyard.storage.base import join_key


class RunMode(StrEnum):
    """What a learner run does: train the model, or evaluate the committed one."""

    TRAIN = "train"
    EVALUATE = "evaluate"


#: The folder of every job's files in a tenant's storage.
JOBS_ROOT = "jobs"
#: The folder of every job's model registry (models of all runs of a job name).
MODELS_ROOT = "models"
#: The folder of passed data validations, shared by a tenant's jobs.
VALIDATIONS_ROOT = "validations"
#: The marker of a published directory (results, a checkpoint, a model version): the size
#: and sha256 of each file, written last, so readers trust the directory once it exists.
MANIFEST = "_MANIFEST.json"
_RECORD_NAME = "job.json"
_VERSION_NAME = "version.json"


def published_manifest(prefix: str) -> str:
    """The manifest of the directory published under `prefix`."""
    return join_key(prefix, MANIFEST)


def validation_report(digest: str) -> str:
    """Where the report of a passed data validation with identity `digest` is kept."""
    return join_key(VALIDATIONS_ROOT, f"{digest}.json")


@dataclass(frozen=True)
class JobLayout:
    """Storage keys of one job. Every component derives paths from here, never by hand."""

    job_id: str

    @classmethod
    def of_record(cls, key: str) -> JobLayout | None:
        """The layout of the job whose record is stored at `key`; None for any other key."""
        folder, _, name = key.rpartition("/")
        parent, _, job_id = folder.rpartition("/")
        if parent != JOBS_ROOT or name != _RECORD_NAME or not job_id:
            return None
        return cls(job_id)

    @property
    def root(self) -> str:
        return join_key(JOBS_ROOT, self.job_id)

    @property
    def code(self) -> str:
        return join_key(self.root, "code")

    @property
    def data(self) -> str:
        return join_key(self.root, "data")

    @property
    def checkpoints(self) -> str:
        return join_key(self.root, "checkpoints")

    def checkpoint(self, step: int) -> str:
        """The folder of the checkpoint of `step` (committed once its MANIFEST exists)."""
        return join_key(self.checkpoints, f"step-{step:09d}")

    @property
    def checkpoint_pointer(self) -> str:
        """The step of the newest committed checkpoint."""
        return join_key(self.checkpoints, "latest")

    def checkpoint_file(self, key: str) -> tuple[int, str] | None:
        """The step of the checkpoint that `key` is in, and the path within it; None for any
        other key (the pointer among them)."""
        folder, _, rest = key.removeprefix(self.checkpoints + "/").partition("/")
        match = _STEP_FOLDER.fullmatch(folder)
        if match is None or not key.startswith(self.checkpoints + "/"):
            return None
        return int(match[1]), rest

    @property
    def results(self) -> str:
        return join_key(self.root, "results")

    @property
    def results_manifest(self) -> str:
        """The manifest the learner publishes its results with, last: the model is complete."""
        return published_manifest(self.results)

    @property
    def logs(self) -> str:
        return join_key(self.root, "logs")

    @property
    def record(self) -> str:
        """The job record (manifest, state, failure) as JSON."""
        return join_key(self.root, _RECORD_NAME)

    @property
    def data_validation(self) -> str:
        """The report of the staged data's validation."""
        return join_key(self.logs, "data-validation.json")

    def metrics(self, attempt: int) -> str:
        """Metrics rows of one attempt (JSON lines, each tagged with step/attempt/rank)."""
        return join_key(self.logs, f"metrics-attempt-{attempt}.jsonl")

    def metrics_attempt(self, key: str) -> int | None:
        """The attempt whose metrics rows are stored at `key`; None for any other key."""
        match = _METRICS_NAME.fullmatch(key.removeprefix(self.logs + "/"))
        return int(match[1]) if match and key.startswith(self.logs + "/") else None

    def utilisation(self, attempt: int, rank: int) -> str:
        """What one learner of a training attempt used (JSON lines, `runtime.utilisation`)."""
        return join_key(self.logs, f"utilisation-attempt-{attempt}-rank-{rank}.jsonl")

    def is_utilisation(self, key: str) -> bool:
        """Whether `key` holds a learner's utilisation rows."""
        return key.startswith(self.logs + "/") and bool(
            _UTILISATION_NAME.fullmatch(key.removeprefix(self.logs + "/"))
        )

    def learner_log(self, mode: RunMode, attempt: int, rank: int) -> str:
        name = "learner" if mode is RunMode.TRAIN else mode.value
        return join_key(self.logs, f"{name}-attempt-{attempt}-rank-{rank}.log")

    def outcome(self, mode: RunMode, attempt: int, rank: int) -> str:
        """How one learner process of a train or evaluate run ended (written by the runtime)."""
        name = "outcome" if mode is RunMode.TRAIN else f"{mode.value}-outcome"
        return join_key(self.logs, f"{name}-attempt-{attempt}-rank-{rank}.json")

    @property
    def evaluation(self) -> str:
        return join_key(self.results, "evaluation.json")


@dataclass(frozen=True)
class ModelLayout:
    """Storage keys of one job name's model registry (trainyard/jobs/registry.py)."""

    job_name: str

    @property
    def root(self) -> str:
        return join_key(MODELS_ROOT, self.job_name)

    @property
    def production(self) -> str:
        """The pointer to the live version."""
        return join_key(self.root, "production")

    def version(self, number: int) -> str:
        """The folder of version `number`."""
        return join_key(self.root, f"v{number}")

    def model(self, number: int) -> str:
        """The model files of version `number` (what a deployment downloads)."""
        return join_key(self.version(number), "model")

    def version_record(self, number: int) -> str:
        """The record of version `number`: metrics, decision, lineage."""
        return join_key(self.version(number), _VERSION_NAME)

    def number_of_record(self, key: str) -> int | None:
        """The version whose record is stored at `key`; None for any other key."""
        match = _VERSION_RECORD.fullmatch(key.removeprefix(self.root + "/"))
        return int(match[1]) if match and key.startswith(self.root + "/") else None


_VERSION_RECORD = re.compile(rf"v([1-9][0-9]*)/{re.escape(_VERSION_NAME)}")
_STEP_FOLDER = re.compile(r"step-(\d+)")
_METRICS_NAME = re.compile(r"metrics-attempt-(\d+)\.jsonl")
_UTILISATION_NAME = re.compile(r"utilisation-attempt-(\d+)-rank-(\d+)\.jsonl")

#: `<tenant>.<name>.<suffix>`; a sweep's trial adds `.t<N>` to its sweep's id
#: (trainyard.sweeps.trials).
JOB_ID_PATTERN = re.compile(
    r"^(?P<tenant>[a-z0-9-]+)\.(?P<name>[a-z0-9-]+)"
    r"\.(?P<suffix>[a-z0-9-]+(?:\.t[1-9][0-9]{0,3})?)$"
)


def new_job_id(tenant: str, name: str, now: datetime | None = None) -> str:
    """A fresh job id for a CLI submission; it doubles as the Airflow DAG run id."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{tenant}.{name}.{stamp}-{secrets.token_hex(2)}"


def job_id_for_run(tenant: str, name: str, run_id: str) -> str:
    """The job id of a DAG run: the run id itself when the CLI chose it, else derived from it.

    Runs started from the UI or a plain REST call carry ids such as
    'manual__2026-11-24T21:59:08+00:00'; the derived id is stable across task retries.
    """
    match = JOB_ID_PATTERN.match(run_id)
    if match and match["tenant"] == tenant:
        return run_id
    suffix = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")[:60] or "run"
    return f"{tenant}.{name}.{suffix}"


class JobId(NamedTuple):
    """A job id's parts: `<tenant>.<name>.<suffix>`, where `name` is the manifest's name."""

    tenant: str
    name: str
    suffix: str


def parse_job_id(job_id: str) -> JobId:
    """The parts of a job id; raise ValueError for anything that is not a job id."""
    match = JOB_ID_PATTERN.match(job_id)
    if not match:
        raise ValueError(
            f"{shorten(job_id)} is not a Trainyard job id (expected <tenant>.<job-name>.<suffix>, "
            "as printed by 'trainyard submit' or 'trainyard list')"
        )
    return JobId(match["tenant"], match["name"], match["suffix"])


def tenant_of(job_id: str) -> str:
    """The tenant a job id belongs to; raise ValueError for anything that is not a job id."""
    return parse_job_id(job_id).tenant


def tenant_of_or_none(job_id: str) -> str | None:
    """The tenant a job id belongs to; None for anything that is not a job id."""
    match = JOB_ID_PATTERN.match(job_id)
    return match["tenant"] if match else None
