"""What every Trainyard task shares: its tenant, storage, job record and failure translation."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator, XComArg
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators.hooks.storage import TenantStorageHook
from trainyard.failures import InternalError, PlatformFault, TrainyardFailure, UserError
from trainyard.jobs.fencing import Superseded
from trainyard.jobs.records import JobRecord, load_record
from trainyard.manifest.schema import JobManifest, ManifestError, parse_manifest
from trainyard.storage import ObjectStore, StorageError
from trainyard.tenancy.config import TenantConfig, TrainyardConfig, load_config

log = logging.getLogger(__name__)


def describe_failure(failure: TrainyardFailure) -> str:
    """The failure for people (task log, Airflow's message): class, cause and fix.

    Written for reading only: whoever needs the class takes it from the typed failure
    (`failure_of_exception`), never from this text.
    """
    text = f"[{failure.failure_class.value}] {failure.cause}"
    return f"{text}. Fix: {failure.fix}" if failure.fix else text


def invalid_manifest(error: ManifestError) -> UserError:
    """An invalid manifest is the user's to correct."""
    failure = UserError(f"the job manifest is invalid:\n{error}", "correct the fields named")
    failure.__cause__ = error
    return failure


def failure_of_exception(error: BaseException | str | None) -> TrainyardFailure:
    """The classified failure behind a task's exception: how every reader of a failure's class
    (the retry policies, the failure callback, validate's rejection record) gets it.

    classified_failures attaches it as `__cause__`; a failure raised bare is its own. An
    invalid manifest is a user error. Anything else, untyped (Airflow may hand a callback only
    a text, or nothing), is a platform fault: the one default for an unknown cause, since a
    retry is the safe side.
    """
    link = error if isinstance(error, BaseException) else None
    seen: set[int] = set()
    while link is not None and id(link) not in seen:
        if isinstance(link, TrainyardFailure):
            return link
        if isinstance(link, ManifestError):
            return invalid_manifest(link)
        seen.add(id(link))
        link = link.__cause__
    fix = "none needed if a retry succeeds; otherwise the task log says what failed"
    if not isinstance(error, BaseException):
        return PlatformFault(error or "the task ended without an exception", fix)
    fault = PlatformFault(f"{type(error).__name__}: {error}", fix)
    fault.__cause__ = error
    return fault


def classify(error: Exception) -> TrainyardFailure:
    """The failure an exception of Trainyard's task code stands for.

    A storage outage is a platform fault. Anything unexpected is a bug in Trainyard, not a
    fault: an internal error, its traceback in the task log, which the tasks' retry policy
    (operators/tasks/retry.py) retries once.
    """
    if isinstance(error, TrainyardFailure):
        return error
    if isinstance(error, ManifestError):
        return invalid_manifest(error)
    if isinstance(error, StorageError):
        failure: TrainyardFailure = PlatformFault(
            f"storage unavailable: {error}",
            "none needed if storage answers again before the retries run out; otherwise "
            "check the tenant's storage service",
        )
    else:
        log.exception("internal error in Trainyard's task code")
        failure = InternalError(
            f"internal error in Trainyard: {type(error).__name__}: {error}",
            "none needed if the retry succeeds; otherwise report it to the platform team with "
            "the task log, which has the traceback",
        )
    failure.__cause__ = error
    return failure


@contextmanager
def classified_failures() -> Iterator[None]:
    """The one translation of Trainyard's failures into Airflow's retry semantics.

    A failure of a class that no retry gets past (`RETRIED_CLASSES`) raises
    AirflowFailException, any other a retryable AirflowException; the typed failure stays
    attached as `__cause__` for the retry policy and the failure callback
    (`failure_of_exception`). Airflow's own exceptions pass through; an attempt superseded by a
    newer one (`trainyard.jobs.fencing`) fails without a retry.
    """
    try:
        yield
    except AirflowException:
        raise
    except Superseded as superseded:  # a newer attempt runs the job: this one must not retry
        raise AirflowFailException(str(superseded)) from superseded
    except Exception as error:
        failure = classify(error)
        translated = AirflowException if failure.retried else AirflowFailException
        raise translated(describe_failure(failure)) from failure


class TrainyardOperator(BaseOperator):
    """Base of the training DAG's tasks. `job_id` comes from the validate task's XCom."""

    template_fields: Sequence[str] = ("job_id",)
    ui_color = "#e8f0fe"

    def __init__(self, *, tenant: str, job_id: str | XComArg = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tenant = tenant
        # An XComArg here is rendered to the job id before execute runs.
        self.job_id: str = job_id  # type: ignore[assignment]

    @cached_property
    def trainyard_config(self) -> TrainyardConfig:
        return load_config()

    @cached_property
    def tenant_config(self) -> TenantConfig:
        return self.trainyard_config.tenant(self.tenant)

    @cached_property
    def storage_hook(self) -> TenantStorageHook:
        return TenantStorageHook(self.tenant_config)

    @cached_property
    def store(self) -> ObjectStore:
        """The tenant's storage, opened with the keys of its Airflow connection."""
        return self.storage_hook.get_store()

    def load_job(self) -> tuple[JobRecord, JobManifest]:
        """The job record written by the validate task, and its manifest."""
        with classified_failures():
            record = load_record(self.store, self.job_id)
            if record is None:
                raise PlatformFault(
                    f"job record of {self.job_id} is missing from {self.store.describe()}",
                    "run the validate task first: clear the run from its validate task",
                )
            return record, parse_manifest(record.manifest)
