"""The learner group's trigger: its event carries the group, and never comes before the
deferral has settled (operators/triggers/deferral.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger
from airflow.triggers.base import TriggerEvent

from operators.triggers import learner_group
from operators.triggers.learner_group import LearnerGroupTrigger

SETTLE = 0.5


async def ended_at_once(self: KubernetesPodTrigger) -> AsyncIterator[TriggerEvent]:
    yield TriggerEvent({"status": "failed", "name": self.pod_name})


def trigger() -> LearnerGroupTrigger:
    return LearnerGroupTrigger(
        pod_name="job-train-0",
        pod_namespace="trainyard-acme",
        trigger_start_time=datetime.now(UTC),
        base_container_name="base",
        workers={"1": "job-train-1"},
        service_name="job-attempt-1",
    )


async def first_event(group: LearnerGroupTrigger) -> tuple[TriggerEvent, float]:
    started = time.monotonic()
    event = await anext(aiter(group.run()))
    return event, time.monotonic() - started


def test_a_group_that_ended_at_once_is_reported_after_the_deferral_settled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(learner_group, "DEFER_SETTLE_SECONDS", SETTLE)
    monkeypatch.setattr(KubernetesPodTrigger, "run", ended_at_once)

    event, waited = asyncio.run(first_event(trigger()))

    assert waited >= SETTLE
    assert event.payload == {
        "status": "failed",
        "name": "job-train-0",
        "workers": {"1": "job-train-1"},
        "service_name": "job-attempt-1",
        "failed_rank": None,
        "pruned": False,
    }


def test_the_group_survives_serialization() -> None:
    classpath, kwargs = trigger().serialize()

    assert classpath == "operators.triggers.learner_group.LearnerGroupTrigger"
    assert (kwargs["workers"], kwargs["service_name"]) == ({"1": "job-train-1"}, "job-attempt-1")
    assert LearnerGroupTrigger(**kwargs).workers == {"1": "job-train-1"}
