"""Stage a job's input: snapshot it into the job's prefix, then validate the snapshot.

Validating the snapshot (not the source) means the learner trains on exactly the data that
passed, even if someone uploads new data to the source path meanwhile.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from trainyard.data_validation import (
    DEFAULT_EXPECTATIONS,
    TABLE_SUFFIXES,
    ValidationReport,
    validate_tables,
)
from trainyard.failures import UserError
from trainyard.jobs import JobLayout
from trainyard.manifest import DataSpec, Expectation
from trainyard.storage import ObjectNotFound, ObjectStore, join_key

#: A dataset may carry its default expectations in this file (a JSON list of expectations).
DATASET_EXPECTATIONS_FILE = "expectations.json"

_expectations_adapter = TypeAdapter(list[Expectation])


def dataset_expectations(store: ObjectStore, data: DataSpec) -> list[Expectation]:
    """The expectations for this data: the manifest's, else the dataset's file, else defaults."""
    if data.expectations is not None:
        return data.expectations
    key = join_key(data.path, DATASET_EXPECTATIONS_FILE)
    try:
        raw = store.get_bytes(key)
    except ObjectNotFound:
        return list(DEFAULT_EXPECTATIONS)
    try:
        return _expectations_adapter.validate_python(json.loads(raw))
    except (ValueError, ValidationError) as error:
        raise UserError(
            f"data.path: the dataset's {DATASET_EXPECTATIONS_FILE} is invalid: {error}",
            f"fix {key} or give data.expectations in the manifest",
        ) from error


def stage_data(store: ObjectStore, data: DataSpec, layout: JobLayout) -> ValidationReport:
    """Copy `data.path` into the job's data prefix and validate it.

    Raises:
        UserError: the data is missing or fails its expectations (with a readable report).
    """
    store.delete_prefix(layout.data)
    staged = store.copy_prefix(data.path, layout.data)
    if not staged:
        raise UserError(
            f"data.path: no files under {data.path!r} in {store.describe()}",
            f"upload the data with 'trainyard data upload LOCAL_DIR {data.path} --tenant T'",
        )
    expectations = dataset_expectations(store, data)
    prefix = layout.data + "/"
    with tempfile.TemporaryDirectory(prefix="trainyard-stage-") as tmp:
        files: dict[str, Path] = {}
        for key in staged:
            name = key.removeprefix(prefix)
            if name.endswith(TABLE_SUFFIXES):
                files[name] = Path(tmp) / name
                store.get_file(key, files[name])
        try:
            report = validate_tables(files, expectations)
        except ValueError as error:
            raise UserError(
                f"data.expectations: {error}", "correct the expectation type"
            ) from error
    store.put_json(join_key(layout.logs, "data-validation.json"), report.as_dict())
    if not report.success:
        raise UserError(
            f"data.path: {data.path!r} fails {len(report.failures())} of "
            f"{len(report.outcomes)} expectations:\n{report.summary()}",
            "fix the data and upload it again, or correct the expectations",
        )
    return report
