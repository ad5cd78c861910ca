"""Metric rows as users see them (every attempt's, in numeric order) and the progress they
show: the fraction, elapsed time and the time left while running."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trainyard.jobs.layout import JobLayout, RunMode
from trainyard.jobs.progress import estimate, format_duration, metric_names, read_metrics
from trainyard.storage.local import LocalStore

START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
JOB_ID = "acme.digits-mlp.20261124-215908-abcd"
LAYOUT = JobLayout(JOB_ID)


def write_rows(store: LocalStore, attempt: int, steps: list[int], blank: bool = False) -> None:
    lines = [json.dumps({"step": step, "attempt": attempt, "loss": 1 / step}) for step in steps]
    if blank:
        lines.insert(1, "")
    store.put_bytes(LAYOUT.metrics(attempt), ("\n".join(lines) + "\n").encode())


def test_rows_come_attempt_by_attempt_in_numeric_order(local_store: LocalStore) -> None:
    # Written out of order; attempt 10 sorts before 2 as text.
    write_rows(local_store, 10, [7, 8])
    write_rows(local_store, 2, [3, 4, 5], blank=True)
    write_rows(local_store, 1, [1, 2])

    rows = read_metrics(local_store, JOB_ID)

    assert [(row["attempt"], row["step"]) for row in rows] == [
        (1, 1),
        (1, 2),
        (2, 3),
        (2, 4),
        (2, 5),
        (10, 7),
        (10, 8),
    ]


def test_other_logs_and_other_jobs_are_not_metrics(local_store: LocalStore) -> None:
    write_rows(local_store, 1, [1])
    local_store.put_bytes(LAYOUT.learner_log(RunMode.TRAIN, 1, 0), b'{"step": 99}\n')
    local_store.put_json(LAYOUT.outcome(RunMode.TRAIN, 1, 0), {"step": 98})
    other = JobLayout(JOB_ID + "0")
    local_store.put_bytes(other.metrics(1), b'{"step": 97}\n')

    assert read_metrics(local_store, JOB_ID) == [{"step": 1, "attempt": 1, "loss": 1.0}]


def test_job_without_metrics_has_no_rows(local_store: LocalStore) -> None:
    assert read_metrics(local_store, JOB_ID) == []


def test_time_left_follows_the_newest_attempts_pace() -> None:
    rows = [
        {"step": 50, "total_steps": 100, "time": 0.0, "attempt": 1},  # a slow first attempt
        {"step": 20, "total_steps": 100, "time": 500.0, "attempt": 2},
        {"step": 60, "total_steps": 100, "time": 540.0, "attempt": 2},  # 40 steps in 40 s
    ]

    progress = estimate(rows, START, START + timedelta(seconds=600), finished=False)

    assert (progress.step, progress.total_steps, progress.fraction) == (60, 100, 0.6)
    assert progress.eta_s == pytest.approx(40.0)
    assert progress.describe() == "step 60 of 100 (60%), 10m 00s elapsed, about 40s left"


def test_without_timed_rows_the_estimate_is_the_average_pace() -> None:
    progress = estimate([{"progress": 0.25}], START, START + timedelta(minutes=5), finished=False)

    assert progress.eta_s == pytest.approx(900.0)
    assert progress.step is None


def test_a_finished_job_has_no_time_left_and_no_rows_no_progress() -> None:
    done = estimate(
        [{"step": 10, "progress": 1.0}], START, START + timedelta(hours=2), finished=True
    )
    assert done.eta_s is None
    assert done.describe() == "step 10 (100%), 2h 00m elapsed"
    assert estimate([], START, START, finished=False).fraction is None


def test_metrics_are_the_numeric_fields_loss_first() -> None:
    rows: list[dict[str, Any]] = [
        {"step": 1, "accuracy": 0.5, "loss": 2.0, "epoch": 0, "note": "warm-up", "attempt": 1},
        {"step": 2, "lr": 0.1, "flag": True, "nan": float("nan")},
    ]

    assert metric_names(rows) == ["loss", "accuracy", "lr"]


@pytest.mark.parametrize(
    ("seconds", "text"), [(9.4, "9s"), (252, "4m 12s"), (3720, "1h 02m"), (-3, "0s")]
)
def test_durations(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
