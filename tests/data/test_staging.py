"""Staging: the data is snapshotted into the job's prefix and checked with great-expectations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trainyard.data.staging import stage_data
from trainyard.failures import UserError
from trainyard.jobs.layout import JobLayout
from trainyard.manifest.schema import DataSpec
from trainyard.storage import join_key
from trainyard.storage.local import LocalStore

JOB_ID = "acme.digits-mlp.20261124-215908-abcd"
LAYOUT = JobLayout(JOB_ID)
DATASET = "datasets/digits"
HEADER = "pixel0,pixel1,label\n"
GOOD = HEADER + "0,16,3\n5,2,9\n12,0,0\n"
BAD_LABEL = HEADER + "0,16,3\n5,2,42\n"
LABEL_IN_RANGE = {
    "type": "expect_column_values_to_be_between",
    "kwargs": {"column": "label", "min_value": 0, "max_value": 9},
}
HAS_LABEL = {"type": "expect_column_to_exist", "kwargs": {"column": "label"}}


def upload(store: LocalStore, files: dict[str, str], prefix: str = DATASET) -> None:
    for name, text in files.items():
        store.put_bytes(join_key(prefix, name), text.encode())


def data(expectations: list[dict[str, Any]] | None = None, path: str = DATASET) -> DataSpec:
    return DataSpec.model_validate({"path": path, "expectations": expectations})


def staged(store: LocalStore) -> dict[str, bytes]:
    prefix = LAYOUT.data + "/"
    return {
        info.key.removeprefix(prefix): store.get_bytes(info.key) for info in store.list(LAYOUT.data)
    }


def stored_report(store: LocalStore) -> dict[str, Any]:
    return store.get_json(LAYOUT.data_validation)


def test_good_data_is_staged_and_its_report_stored(local_store: LocalStore) -> None:
    upload(local_store, {"train.csv": GOOD, "test/test.csv": GOOD, "README.txt": "digits"})

    report = stage_data(local_store, data([LABEL_IN_RANGE]), LAYOUT)

    assert report.success
    assert {(o.file, o.type) for o in report.outcomes} == {
        ("train.csv", "expect_column_values_to_be_between"),
        ("test/test.csv", "expect_column_values_to_be_between"),
    }
    assert staged(local_store) == {
        "train.csv": GOOD.encode(),
        "test/test.csv": GOOD.encode(),
        "README.txt": b"digits",
    }
    stored = stored_report(local_store)
    assert stored["success"] is True
    assert len(stored["outcomes"]) == 2


def test_label_out_of_range_fails_naming_file_expectation_and_value(
    local_store: LocalStore,
) -> None:
    upload(local_store, {"train.csv": BAD_LABEL})

    with pytest.raises(UserError) as raised:
        stage_data(local_store, data([LABEL_IN_RANGE]), LAYOUT)

    message = raised.value.cause
    assert message.startswith("data.path:")
    assert "train.csv" in message
    assert "expect_column_values_to_be_between" in message
    assert "42" in message
    assert "fix the data" in raised.value.fix
    # The report is kept for `trainyard status` and the task log.
    assert stored_report(local_store)["success"] is False


@pytest.mark.parametrize(
    ("manifest_expectations", "passes"),
    [
        pytest.param([HAS_LABEL], True, id="manifest-expectations-replace-the-datasets"),
        pytest.param(None, False, id="datasets-expectations-apply-without-the-manifests"),
    ],
)
def test_manifest_expectations_take_precedence_over_the_datasets(
    local_store: LocalStore, manifest_expectations: list[dict[str, Any]] | None, passes: bool
) -> None:
    upload(local_store, {"train.csv": BAD_LABEL, "expectations.json": json.dumps([LABEL_IN_RANGE])})

    if passes:
        report = stage_data(local_store, data(manifest_expectations), LAYOUT)
        assert [o.type for o in report.outcomes] == ["expect_column_to_exist"]
    else:
        with pytest.raises(UserError, match="expect_column_values_to_be_between"):
            stage_data(local_store, data(manifest_expectations), LAYOUT)


@pytest.mark.parametrize(
    ("text", "passes"),
    [
        pytest.param(HEADER, False, id="header-only-csv-fails"),
        pytest.param(HEADER + "1,2,3\n", True, id="one-row-passes"),
    ],
)
def test_default_expectation_is_a_non_empty_table(
    local_store: LocalStore, text: str, passes: bool
) -> None:
    upload(local_store, {"train.csv": text})

    if passes:
        report = stage_data(local_store, data(), LAYOUT)
        assert [o.type for o in report.outcomes] == ["expect_table_row_count_to_be_between"]
    else:
        with pytest.raises(UserError) as raised:
            stage_data(local_store, data(), LAYOUT)
        assert "train.csv" in raised.value.cause
        assert "expect_table_row_count_to_be_between" in raised.value.cause


def test_missing_data_path_names_the_field(local_store: LocalStore) -> None:
    upload(local_store, {"train.csv": GOOD}, prefix="datasets/other")

    with pytest.raises(UserError) as raised:
        stage_data(local_store, data(path="datasets/digits"), LAYOUT)

    assert raised.value.cause.startswith("data.path:")
    assert "'datasets/digits'" in raised.value.cause
    assert "trainyard data upload" in raised.value.fix


def test_unknown_expectation_type_names_the_field(local_store: LocalStore) -> None:
    upload(local_store, {"train.csv": GOOD})
    unknown = {"type": "expect_labels_to_be_digits", "kwargs": {"column": "label"}}

    with pytest.raises(UserError) as raised:
        stage_data(local_store, data([unknown]), LAYOUT)

    assert raised.value.cause.startswith("data.expectations:")
    assert "expect_labels_to_be_digits" in raised.value.cause


def test_expectation_on_a_missing_column_names_the_column(local_store: LocalStore) -> None:
    upload(local_store, {"train.csv": GOOD})
    on_missing_column = {**LABEL_IN_RANGE, "kwargs": {"column": "target", "min_value": 0}}

    with pytest.raises(UserError) as raised:
        stage_data(local_store, data([on_missing_column]), LAYOUT)

    assert 'The column "target"' in raised.value.cause
    assert "does not exist" in raised.value.cause


def test_invalid_dataset_expectations_file_is_a_user_error(local_store: LocalStore) -> None:
    upload(local_store, {"train.csv": GOOD, "expectations.json": "{not json"})

    with pytest.raises(UserError) as raised:
        stage_data(local_store, data(), LAYOUT)

    assert "expectations.json" in raised.value.cause
    assert f"{DATASET}/expectations.json" in raised.value.fix


def test_restaging_replaces_the_previous_snapshot(local_store: LocalStore) -> None:
    upload(local_store, {"a.csv": GOOD, "old/b.csv": GOOD})
    stage_data(local_store, data(), LAYOUT)
    local_store.delete_prefix(DATASET)
    upload(local_store, {"a.csv": GOOD + "1,1,1\n", "c.csv": GOOD})

    stage_data(local_store, data(), LAYOUT)

    assert staged(local_store) == {"a.csv": (GOOD + "1,1,1\n").encode(), "c.csv": GOOD.encode()}


NON_EMPTY_BY_GREAT_EXPECTATIONS = {
    "type": "expect_table_row_count_to_be_between",
    "kwargs": {"min_value": 1, "max_value": None},
}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(HEADER, id="header-only"),
        pytest.param(HEADER + "\n\n", id="header-and-blank-lines"),
        pytest.param(HEADER + "1,2,3\n", id="one-row"),
        pytest.param(HEADER + '1,2,"3\n"\n\n4,5,6', id="quoted-newline-blank-line"),
    ],
)
def test_default_check_without_great_expectations_agrees_with_it(
    local_store: LocalStore, text: str
) -> None:
    upload(local_store, {"train.csv": text})

    def outcome(expectations: list[dict[str, Any]] | None) -> tuple[bool, str]:
        try:
            report = stage_data(local_store, data(expectations), LAYOUT)
        except UserError as error:
            return False, error.cause.rsplit("failed: ", 1)[1]
        return report.success, ""

    # The same check spelled differently from the default goes through great-expectations.
    assert outcome(None) == outcome([NON_EMPTY_BY_GREAT_EXPECTATIONS])


def test_default_check_does_not_import_great_expectations(tmp_path: Path) -> None:
    # Importing great-expectations takes seconds of every job's stage_data task.
    program = f"""
import sys
from trainyard.jobs.layout import JobLayout
from trainyard.manifest.schema import DataSpec
from trainyard.data.staging import stage_data
from trainyard.storage.local import LocalStore
from pathlib import Path
store = LocalStore(Path({str(tmp_path)!r}))
store.put_bytes("{DATASET}/train.csv", {GOOD!r}.encode())
report = stage_data(store, DataSpec(path="{DATASET}"), JobLayout("{JOB_ID}"))
assert report.success and report.outcomes, report
print(sorted(name for name in sys.modules if name.startswith(("great_expectations", "pandas"))))
"""
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"


def test_data_that_passed_before_is_not_checked_again(
    local_store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(local_store, {"train.csv": GOOD})
    first = stage_data(local_store, data([LABEL_IN_RANGE]), LAYOUT)

    def no_checks(*args: object) -> None:
        raise AssertionError("great-expectations ran again on data that passed before")

    monkeypatch.setattr("trainyard.data.staging.validate_tables", no_checks)
    again = stage_data(local_store, data([LABEL_IN_RANGE]), JobLayout(JOB_ID + "-rerun"))

    assert again == first
    assert again.data_digest.startswith("sha256:")
    assert stored_report(local_store)["data_digest"] == first.data_digest


@pytest.mark.parametrize(
    ("files", "expectations"),
    [
        pytest.param({"train.csv": BAD_LABEL}, [LABEL_IN_RANGE], id="changed-data"),
        pytest.param(
            {"train.csv": GOOD},
            [{**LABEL_IN_RANGE, "kwargs": {"column": "label", "max_value": 2}}],
            id="changed-expectations",
        ),
    ],
)
def test_changed_data_or_expectations_are_checked_again(
    local_store: LocalStore, files: dict[str, str], expectations: list[dict[str, Any]]
) -> None:
    upload(local_store, {"train.csv": GOOD})
    stage_data(local_store, data([LABEL_IN_RANGE]), LAYOUT)
    upload(local_store, files)

    with pytest.raises(UserError, match="expect_column_values_to_be_between"):
        stage_data(local_store, data(expectations), LAYOUT)
