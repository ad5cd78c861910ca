"""A DAG run's conf becomes a manifest: the trigger form's overrides land in the right fields."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from trainyard.manifest.schema import ManifestError, parse_manifest
from trainyard.manifest.submission import OVERRIDES, example_manifest, manifest_from_conf


def test_example_manifest_is_valid() -> None:
    manifest = manifest_from_conf({"manifest": example_manifest("acme")})

    assert manifest.tenant == "acme"
    assert manifest.name == "digits-mlp"
    assert manifest.code.uri == "examples/pytorch-digits"
    assert manifest.evaluation is not None


OVERRIDE_CASES = [
    pytest.param("job_name", "digits-cnn", lambda m: m.name, "digits-cnn", id="job_name-to-name"),
    pytest.param(
        "command",
        "python train.py --epochs 1",
        lambda m: m.command,
        "python train.py --epochs 1",
        id="command-to-command",
    ),
    pytest.param(
        "data_path",
        "datasets/digits-v2",
        lambda m: m.data.path,
        "datasets/digits-v2",
        id="data_path-to-data.path",
    ),
    pytest.param("gpus", 2, lambda m: m.resources.gpus, 2, id="gpus-to-resources.gpus"),
    pytest.param("cpus", 3.5, lambda m: m.resources.cpus, 3.5, id="cpus-to-resources.cpus"),
    pytest.param(
        "memory", "4Gi", lambda m: m.resources.memory, 4 * 2**30, id="memory-to-resources.memory"
    ),
    pytest.param(
        "learners", 4, lambda m: m.resources.learners, 4, id="learners-to-resources.learners"
    ),
]


@pytest.mark.parametrize(("field", "value", "read", "expected"), OVERRIDE_CASES)
def test_override_lands_in_its_field(field: str, value: Any, read: Any, expected: Any) -> None:
    original = example_manifest("acme")
    conf = {"manifest": original, field: value}

    manifest = manifest_from_conf(conf)

    assert read(manifest) == expected
    # Nothing else changed, and the run's conf is left as it was.
    edited = copy.deepcopy(original)
    *parents, last = OVERRIDES[field]
    target = edited
    for part in parents:
        target = target[part]
    target[last] = value
    assert manifest == parse_manifest(edited)
    assert original == example_manifest("acme")


def test_every_override_is_covered() -> None:
    assert {param.values[0] for param in OVERRIDE_CASES} == set(OVERRIDES)


def test_override_creates_a_missing_section() -> None:
    document = example_manifest("acme")
    del document["resources"]

    manifest = manifest_from_conf({"manifest": document, "gpus": 1})

    assert manifest.resources.gpus == 1


@pytest.mark.parametrize(
    "empty", [pytest.param("", id="empty-string"), pytest.param(None, id="none")]
)
def test_empty_overrides_keep_the_manifests_values(empty: Any) -> None:
    conf: dict[str, Any] = {"manifest": example_manifest("acme")}
    conf.update(dict.fromkeys(OVERRIDES, empty))

    manifest = manifest_from_conf(conf)

    assert manifest == parse_manifest(example_manifest("acme"))


def test_zero_gpus_override_is_not_taken_for_empty() -> None:
    document = example_manifest("acme")
    document["resources"]["gpus"] = 2

    assert manifest_from_conf({"manifest": document, "gpus": 0}).resources.gpus == 0


def test_invalid_override_names_the_field() -> None:
    with pytest.raises(ManifestError) as raised:
        manifest_from_conf({"manifest": example_manifest("acme"), "memory": "lots"})

    assert [path for path, _ in raised.value.problems] == ["resources.memory"]
    assert "lots" in str(raised.value)


def test_yaml_manifest_is_accepted() -> None:
    text = yaml.safe_dump(example_manifest("acme"))

    manifest = manifest_from_conf({"manifest": text})

    assert manifest == parse_manifest(example_manifest("acme"))


@pytest.mark.parametrize(
    "conf",
    [
        pytest.param({}, id="no-manifest-key"),
        pytest.param({"manifest": None}, id="manifest-none"),
        pytest.param({"manifest": ""}, id="manifest-empty"),
    ],
)
def test_missing_manifest_is_a_manifest_error(conf: dict[str, Any]) -> None:
    with pytest.raises(ManifestError, match="the manifest must be a mapping"):
        manifest_from_conf(conf)
