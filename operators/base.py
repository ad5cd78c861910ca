"""What every Trainyard task shares: its tenant, storage, job record and failure translation."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator, XComArg
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators.hooks import TenantStorageHook
from trainyard.failures import FailureClass, InternalError, TrainyardFailure, UserError
from trainyard.jobs.records import JobRecord, load_record
from trainyard.manifest.schema import JobManifest, ManifestError, parse_manifest
from trainyard.storage import ObjectStore, StorageError
from trainyard.tenancy.config import TenantConfig, TrainyardConfig, load_config

log = logging.getLogger(__name__)

#: Failure classes that a retry cannot fix: the task fails at once.
NOT_RETRYABLE = {FailureClass.USER_ERROR, FailureClass.RESOURCE_ERROR}


def describe_failure(failure: TrainyardFailure) -> str:
    text = f"[{failure.failure_class.value}] {failure.cause}"
    return f"{text}. Fix: {failure.fix}" if failure.fix else text


@contextmanager
def classified_failures() -> Iterator[None]:
    """Turn Trainyard's failure types into Airflow's retry semantics.

    User and resource errors raise AirflowFailException (no retry); platform faults and storage
    outages raise a retryable exception. Anything unexpected is a bug in Trainyard, not a
    fault: an internal error, its traceback in the task log, which the tasks' retry policy
    (operators/retry.py) retries once. The failure stays attached as `__cause__` for the
    failure callback and the retry policy.
    """
    try:
        yield
    except ManifestError as error:
        failure = UserError(f"the job manifest is invalid:\n{error}", "correct the fields named")
        raise AirflowFailException(describe_failure(failure)) from failure
    except TrainyardFailure as failure:
        message = describe_failure(failure)
        if failure.failure_class in NOT_RETRYABLE:
            raise AirflowFailException(message) from failure
        raise AirflowException(message) from failure
    except StorageError as error:
        raise AirflowException(f"[platform_fault] storage unavailable: {error}") from error
    except AirflowException:
        raise
    except Exception as error:
        log.exception("internal error in Trainyard's task code")
        bug = InternalError(
            f"internal error in Trainyard: {type(error).__name__}: {error}",
            "none needed if the retry succeeds; otherwise report it to the platform team with "
            "the task log, which has the traceback",
        )
        bug.__cause__ = error
        raise AirflowException(describe_failure(bug)) from bug


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
        record = load_record(self.store, self.job_id)
        if record is None:
            raise AirflowException(
                f"[platform_fault] job record of {self.job_id} is missing from "
                f"{self.store.describe()}: the validate task must run first"
            )
        return record, parse_manifest(record.manifest)
