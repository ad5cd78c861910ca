"""Data validation with great-expectations, run on the staged copy of a job's input.

great_expectations is imported inside the functions: it takes seconds to import and must never
load while the DAG processor parses DAG files. The default check (tables are not empty) needs
no great-expectations at all, so jobs whose data names no expectations never import it: that
import was most of the `stage_data` task's time (bench/RESULTS.md).
"""

from __future__ import annotations

import csv
import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainyard.limits import shorten
from trainyard.manifest.schema import Expectation

#: Applied when neither the manifest nor the dataset names expectations: tables are not empty.
DEFAULT_EXPECTATIONS = (
    Expectation(type="expect_table_row_count_to_be_between", kwargs={"min_value": 1}),
)
TABLE_SUFFIXES = (".csv",)


@dataclass
class ExpectationOutcome:
    file: str
    type: str
    kwargs: dict[str, Any]
    success: bool
    details: str = ""


@dataclass
class ValidationReport:
    outcomes: list[ExpectationOutcome] = field(default_factory=list)
    data_digest: str = ""  # of the data checked (trainyard.jobs.lineage.digest_prefix)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ValidationReport:
        """The inverse of `as_dict`."""
        outcomes = [ExpectationOutcome(**outcome) for outcome in value["outcomes"]]
        return cls(outcomes, value.get("data_digest", ""))

    @property
    def success(self) -> bool:
        return all(outcome.success for outcome in self.outcomes)

    def failures(self) -> list[ExpectationOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.success]

    def summary(self) -> str:
        """One line per failed expectation, readable in a task log and `trainyard status`."""
        return "\n".join(
            f"  - {o.file}: {o.type}({_format_kwargs(o.kwargs)}) failed: {o.details}"
            for o in self.failures()
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "data_digest": self.data_digest,
            "outcomes": [vars(outcome) for outcome in self.outcomes],
        }


def _format_kwargs(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{key}={shorten(value)}" for key, value in kwargs.items())


def _describe_result(result: Any) -> str:
    # GX 1.x keys exception_info by metric (one entry per metric that raised).
    info = result.exception_info or {}
    for entry in [info, *(v for v in info.values() if isinstance(v, dict))]:
        if entry.get("raised_exception"):
            return str(entry.get("exception_message"))
    details = result.result or {}
    parts = []
    if details.get("unexpected_count"):
        parts.append(f"{details['unexpected_count']} unexpected values")
        examples = details.get("partial_unexpected_list") or []
        if examples:
            parts.append(f"e.g. {examples[:5]}")
    if "observed_value" in details and details["observed_value"] is not None:
        parts.append(f"observed {shorten(details['observed_value'])}")
    return ", ".join(parts) or "expectation not met"


def validate_tables(
    files: dict[str, Path], expectations: list[Expectation] | tuple[Expectation, ...]
) -> ValidationReport:
    """Validate each table file against the expectations whose `files` glob matches its name.

    Args:
        files: relative name (as staged) -> local path of the downloaded file.
        expectations: what the data must satisfy.

    Raises:
        ValueError: an expectation type great-expectations does not know, naming it.
    """
    if all(expectation in DEFAULT_EXPECTATIONS for expectation in expectations):
        return _check_row_counts(files, expectations)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import pandas as pd
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )
    from great_expectations.exceptions import (
        ExpectationNotFoundError,
        InvalidExpectationConfigurationError,
    )
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
            store_backend_defaults=InMemoryStoreBackendDefaults(),
        ),
    )
    source = context.data_sources.add_pandas("staged")
    report = ValidationReport()
    for index, (name, path) in enumerate(sorted(files.items())):
        applicable = [e for e in expectations if fnmatch.fnmatch(name, e.files)]
        if not applicable or not name.endswith(TABLE_SUFFIXES):
            continue
        suite = gx.ExpectationSuite(name=f"suite-{index}")
        for expectation in applicable:
            try:
                suite.add_expectation_configuration(
                    ExpectationConfiguration(type=expectation.type, kwargs=expectation.kwargs)
                )
            except (ExpectationNotFoundError, InvalidExpectationConfigurationError) as error:
                # GX 1.x wraps ExpectationNotFoundError in InvalidExpectationConfigurationError.
                if not isinstance(error.__cause__ or error, ExpectationNotFoundError):
                    problem = f"invalid expectation {expectation.type!r}: {error}"
                    raise ValueError(problem) from error
                raise ValueError(
                    f"unknown expectation type {expectation.type!r}: use a great-expectations "
                    "expectation name such as expect_column_values_to_not_be_null"
                ) from error
        asset = source.add_dataframe_asset(f"table-{index}")
        batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(
            batch_parameters={"dataframe": pd.read_csv(path)}
        )
        for result in batch.validate(suite).results:
            checked = result.expectation_config
            assert checked is not None  # set on every result of a suite validation
            kwargs = {k: v for k, v in checked.kwargs.items() if k != "batch_id"}
            report.outcomes.append(
                ExpectationOutcome(
                    file=name,
                    type=checked.type,
                    kwargs=kwargs,
                    success=bool(result.success),
                    details="" if result.success else _describe_result(result),
                )
            )
    return report


def _check_row_counts(
    files: dict[str, Path], expectations: list[Expectation] | tuple[Expectation, ...]
) -> ValidationReport:
    """The default expectations, checked as great-expectations would, without importing it."""
    report = ValidationReport()
    for name, path in sorted(files.items()):
        applicable = [e for e in expectations if fnmatch.fnmatch(name, e.files)]
        if not applicable or not name.endswith(TABLE_SUFFIXES):
            continue
        rows = _count_rows(path)
        for expectation in applicable:
            success = rows >= expectation.kwargs["min_value"]
            report.outcomes.append(
                ExpectationOutcome(
                    file=name,
                    type=expectation.type,
                    kwargs=dict(expectation.kwargs),
                    success=success,
                    details="" if success else f"observed {rows!r}",
                )
            )
    return report


def _count_rows(path: Path) -> int:
    """Data rows of a CSV file as pandas reads it: blank lines skipped, the first is the header."""
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        return max(0, sum(1 for row in csv.reader(f) if row) - 1)
