"""Failure classes: every failed job says which one it is, so the platform knows whether to retry.

User errors fail fast; resource errors fail with the fix named; platform faults, preemptions and
hangs are retried from the newest committed checkpoint; an internal error (a bug in Trainyard)
is retried once. A failure travels as its exception type, cause and fix attached, from where it
is noticed to the retry policy and the job record: nothing reads a class back out of a message.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class FailureClass(StrEnum):
    USER_ERROR = "user_error"
    RESOURCE_ERROR = "resource_error"
    PLATFORM_FAULT = "platform_fault"
    PREEMPTION = "preemption"
    HANG = "hang"
    INTERNAL_ERROR = "internal_error"
    DEADLINE = "deadline"


#: The one statement of which classes a retry may get past. The others (the user's or the
#: resources' fault) fail the task at once; each retried class's budget is the retry policy's
#: (operators/tasks/retry.py).
RETRIED_CLASSES = frozenset(
    {
        FailureClass.PLATFORM_FAULT,
        FailureClass.PREEMPTION,
        FailureClass.HANG,
        FailureClass.INTERNAL_ERROR,
    }
)


class TrainyardFailure(Exception):
    """A classified failure: `cause` says what happened, `fix` what the user or admin can do."""

    failure_class: ClassVar[FailureClass]

    def __init__(self, cause: str, fix: str = "") -> None:
        super().__init__(cause)
        self.cause = cause
        self.fix = fix

    @property
    def retried(self) -> bool:
        """Whether a retry may get past this failure (`RETRIED_CLASSES`)."""
        return self.failure_class in RETRIED_CLASSES


class UserError(TrainyardFailure):
    failure_class = FailureClass.USER_ERROR


class ResourceError(TrainyardFailure):
    failure_class = FailureClass.RESOURCE_ERROR


class PlatformFault(TrainyardFailure):
    failure_class = FailureClass.PLATFORM_FAULT


class Preemption(TrainyardFailure):
    failure_class = FailureClass.PREEMPTION


class Hang(TrainyardFailure):
    failure_class = FailureClass.HANG


class InternalError(TrainyardFailure):
    """A bug in Trainyard's own code, not a fault: retried once, not as a platform fault."""

    failure_class = FailureClass.INTERNAL_ERROR


class Deadline(TrainyardFailure):
    """A limit of the job's own ran out (`max_runtime`, `max_queued`: trainyard.jobs.limits):
    not retried, since a retry would only run out of it again."""

    failure_class = FailureClass.DEADLINE


#: Every failure class's exception type, for reading a failure back from its class's value.
FAILURE_TYPES: dict[FailureClass, type[TrainyardFailure]] = {
    cls.failure_class: cls
    for cls in (UserError, ResourceError, PlatformFault, Preemption, Hang, InternalError, Deadline)
}

#: What a retry of the learner does, for the fix texts of failures a retry may cure.
RESUMES = "a retry resumes from the newest committed checkpoint"
#: The fix of a failure that a retry gets past (platform fault, preemption, hang).
RESUME_FIX = f"none needed: {RESUMES}"


def failure_of(failure_class: str, cause: str, fix: str = "") -> TrainyardFailure:
    """The failure a stored class value stands for; one this version does not know (a newer
    learner image's) is a platform fault, which is retried."""
    try:
        failure_type = FAILURE_TYPES[FailureClass(failure_class)]
    except ValueError:
        failure_type = PlatformFault
    return failure_type(cause, fix)


def out_of_memory(cause: str, limit: str | None = None) -> ResourceError:
    """A learner ran out of memory (whoever noticed): a retry would run out again."""
    above = f" above {limit}" if limit else ""
    return ResourceError(cause, f"raise resources.memory{above}, or use less memory per learner")
