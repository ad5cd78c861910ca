"""Stage a job's input: snapshot it into the job's prefix, then validate the snapshot.

Validating the snapshot (not the source) means the learner trains on exactly the data that
passed, even if someone uploads new data to the source path meanwhile.

A snapshot that already passed the same expectations (same content digest, same expectations,
same great-expectations version) is not checked again: great-expectations takes seconds to
import and run, and retraining on unchanged data is the common case. Passing reports are kept
under `validations/` in the tenant's storage for that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from importlib.metadata import version
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from trainyard.data.validation import (
    DEFAULT_EXPECTATIONS,
    TABLE_SUFFIXES,
    ValidationReport,
    validate_tables,
)
from trainyard.failures import UserError
from trainyard.jobs.layout import JobLayout, validation_report
from trainyard.jobs.lineage import digest_prefix
from trainyard.manifest.schema import DataSpec, Expectation
from trainyard.storage import ObjectNotFound, ObjectStore, join_key

#: A dataset may carry its default expectations in this file (a JSON list of expectations).
DATASET_EXPECTATIONS_FILE = "expectations.json"

_expectations_adapter = TypeAdapter(list[Expectation])
log = logging.getLogger(__name__)


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
    data_digest = digest_prefix(store, layout.data)
    passed_key = validation_key(data_digest, expectations)
    report = _passed_before(store, passed_key)
    if report is not None:
        log.info("%s passed these expectations before: reusing %s", data_digest, passed_key)
    else:
        report = _validate_snapshot(store, staged, layout, expectations)
        report.data_digest = data_digest
        if report.success:
            store.put_json(passed_key, report.as_dict())
    store.put_json(layout.data_validation, report.as_dict())
    if not report.success:
        raise UserError(
            f"data.path: {data.path!r} fails {len(report.failures())} of "
            f"{len(report.outcomes)} expectations:\n{report.summary()}",
            "fix the data and upload it again, or correct the expectations",
        )
    return report


def validation_key(data_digest: str, expectations: list[Expectation]) -> str:
    """Where a passing report of `expectations` on data with `data_digest` is kept."""
    identity = {
        "data": data_digest,
        "expectations": [e.model_dump(mode="json") for e in expectations],
        "checker": f"great-expectations {version('great-expectations')}",
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return validation_report(digest)


def _passed_before(store: ObjectStore, key: str) -> ValidationReport | None:
    """The passing report kept at `key`, if there is one that can be read."""
    try:
        report = ValidationReport.from_dict(store.get_json(key))
    except (KeyError, TypeError, ValueError):  # absent (ObjectNotFound) or unreadable
        return None
    return report if report.success else None


def _validate_snapshot(
    store: ObjectStore, staged: list[str], layout: JobLayout, expectations: list[Expectation]
) -> ValidationReport:
    """Download the staged tables and check them against `expectations`."""
    prefix = layout.data + "/"
    with tempfile.TemporaryDirectory(prefix="trainyard-stage-") as tmp:
        files: dict[str, Path] = {}
        for key in staged:
            name = key.removeprefix(prefix)
            if name.endswith(TABLE_SUFFIXES):
                files[name] = Path(tmp) / name
                store.get_file(key, files[name])
        try:
            return validate_tables(files, expectations)
        except ValueError as error:
            raise UserError(
                f"data.expectations: {error}", "correct the expectation type"
            ) from error
