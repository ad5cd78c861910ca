"""A job's metric rows and what they say about its progress: step of total, elapsed, time left.

The learner runtime uploads each attempt's rows as `jobs/<job>/logs/metrics-attempt-<A>.jsonl`,
every row annotated with `attempt` and `rank`. Rows are the user's own; these fields have a
meaning here (all optional):

    step         the training step the row was written at
    total_steps  the steps the whole job will take (so progress = step / total_steps)
    progress     the fraction done, 0..1 (wins over step / total_steps)
    time         Unix seconds when the row was written (the time-left estimate uses it)

The CLI (`trainyard status`, `trainyard metrics`) and the plugin's job pages read them from here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from trainyard.jobs.layout import JobLayout
from trainyard.storage.base import ObjectStore

#: Row fields that describe a row rather than measure the model: never drawn as a curve.
ROW_FIELDS = frozenset({"step", "total_steps", "progress", "time", "attempt", "rank", "epoch"})


def read_metrics(store: ObjectStore, job_id: str) -> list[dict[str, Any]]:
    """All metric rows of a job, attempt by attempt, in the order the learners wrote them."""
    layout = JobLayout(job_id)
    files = []
    for info in store.list(layout.logs):
        attempt = layout.metrics_attempt(info.key)
        if attempt is not None:
            files.append((attempt, info.key))
    rows: list[dict[str, Any]] = []
    for _, key in sorted(files):
        text = store.get_bytes(key).decode()
        rows.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return rows


def metric_names(rows: list[dict[str, Any]]) -> list[str]:
    """The measured quantities of `rows` (loss first), in the order they first appear."""
    names = dict.fromkeys(
        key
        for row in rows
        for key, value in row.items()
        if key not in ROW_FIELDS and _number(value) is not None
    )
    return sorted(names, key=lambda name: name != "loss")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class Progress:
    """How far a job is: `fraction` 0..1, `elapsed_s` since it was created, `eta_s` left."""

    step: int | None
    total_steps: int | None
    fraction: float | None
    elapsed_s: float
    eta_s: float | None

    def describe(self) -> str:
        """'step 340 of 1000 (34%), 2m 10s elapsed, about 4m 12s left' (what is known)."""
        head = ""
        if self.step is not None:
            head = f"step {self.step}" + (f" of {self.total_steps}" if self.total_steps else "")
        if self.fraction is not None:
            percent = f"{self.fraction:.0%}"
            head = f"{head} ({percent})" if head else percent
        details = [head] if head else []
        details.append(f"{format_duration(self.elapsed_s)} elapsed")
        if self.eta_s is not None:
            details.append(f"about {format_duration(self.eta_s)} left")
        return ", ".join(details)


def format_duration(seconds: float) -> str:
    """'1h 02m', '4m 12s', '9s'."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _fraction(row: dict[str, Any], total: int | None) -> float | None:
    progress = _number(row.get("progress"))
    if progress is not None:
        return min(max(progress, 0.0), 1.0)
    step = _number(row.get("step"))
    if step is not None and total:
        return min(max(step / total, 0.0), 1.0)
    return None


def estimate(
    rows: list[dict[str, Any]], started: datetime, now: datetime, *, finished: bool
) -> Progress:
    """The progress the rows show, the time since `started`, and (while the job runs) the time
    left at the pace of the newest attempt's timed rows, else at the job's average pace."""
    elapsed = max(0.0, (now - started).total_seconds())
    steps = [row for row in rows if _number(row.get("step")) is not None]
    totals = [int(t) for row in rows if (t := _number(row.get("total_steps"))) and t > 0]
    total = totals[-1] if totals else None
    last = rows[-1] if rows else {}
    step = int(steps[-1]["step"]) if steps else None
    fraction = _fraction(last, total) if last else None
    if finished:
        return Progress(step, total, fraction, elapsed, None)
    eta = None
    if fraction is not None and 0 < fraction < 1:
        attempt = last.get("attempt")
        timed = [
            (t, f)
            for row in rows
            if row.get("attempt") == attempt
            and (t := _number(row.get("time"))) is not None
            and (f := _fraction(row, total)) is not None
        ]
        if len(timed) >= 2 and timed[-1][0] > timed[0][0] and timed[-1][1] > timed[0][1]:
            (t0, f0), (t1, f1) = timed[0], timed[-1]
            eta = (1 - f1) * (t1 - t0) / (f1 - f0)
        elif elapsed > 0:
            eta = elapsed * (1 - fraction) / fraction
    return Progress(step, total, fraction, elapsed, eta)
