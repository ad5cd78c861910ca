"""The job manifest v1: the public example parses, bad manifests name the bad field."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest
import yaml

from trainyard.manifest.schema import FrameworkName, JobManifest, ManifestError, parse_manifest

EXAMPLE = """\
name: digits-mlp
tenant: acme
framework: {name: pytorch, version: "2.13"}
code: {path: .}
command: python train.py --epochs 8
data: {path: datasets/digits}
resources: {gpus: 0, cpus: 1, memory: 2Gi, learners: 1, gpu_type: null}
checkpoint: {interval: 10s, keep: 3}
evaluation: {command: python evaluate.py, metric: accuracy, threshold: 0.9}
"""

DELETE = object()


def changed(changes: dict[str, Any]) -> dict[str, Any]:
    """The example as a mapping with dotted-path fields replaced (or removed with DELETE)."""
    document = copy.deepcopy(yaml.safe_load(EXAMPLE))
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target = document
        for parent in parents:
            target = target[int(parent)] if isinstance(target, list) else target[parent]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return document


def test_example_parses():
    manifest = parse_manifest(EXAMPLE)

    assert manifest.name == "digits-mlp"
    assert manifest.tenant == "acme"
    assert manifest.framework.name is FrameworkName.PYTORCH
    assert manifest.framework.version == "2.13"
    assert manifest.framework.image is None
    assert manifest.code.path == "."
    assert manifest.code.uri is None
    assert manifest.command == "python train.py --epochs 8"
    assert manifest.data is not None
    assert manifest.data.path == "datasets/digits"
    assert manifest.resources.memory == 2 * 2**30
    assert manifest.resources.cpus == 1.0
    assert manifest.checkpoint.interval == 10.0
    assert manifest.evaluation is not None
    assert manifest.evaluation.threshold == 0.9
    assert manifest.evaluation.higher_is_better is True


def test_defaults_of_a_minimal_manifest():
    manifest = parse_manifest(
        changed({"data": DELETE, "resources": DELETE, "checkpoint": DELETE, "evaluation": DELETE})
    )

    assert manifest.data is None
    assert manifest.evaluation is None
    assert manifest.watchdog is None  # the tenant's default_watchdog applies
    assert manifest.resources.model_dump() == {
        "gpus": 0,
        "gpu_type": None,
        "cpus": 1.0,
        "memory": 2 * 2**30,
        "learners": 1,
    }
    assert (manifest.checkpoint.interval, manifest.checkpoint.keep) == (60.0, 3)


@pytest.mark.parametrize(
    ("source", "field", "hint"),
    [
        pytest.param(
            changed({"priority": 5}),
            "priority",
            "field is not allowed here; allowed fields: name, description, tenant, framework",
            id="unknown-top-level-field",
        ),
        pytest.param(
            changed({"resources.gpu": 1}),
            "resources.gpu",
            "allowed fields: gpus, gpu_type, cpus, memory, learners",
            id="unknown-nested-field",
        ),
        pytest.param(
            changed(
                {
                    "data.expectations": [
                        {"type": "expect_table_row_count_to_be_between"},
                        {"type": "expect_column_to_exist", "column": "x"},
                    ]
                }
            ),
            "data.expectations.1.column",
            "allowed fields: type, kwargs, files",
            id="unknown-field-in-list-item",
        ),
        pytest.param(
            changed({"resources.memory": "2GB"}),
            "resources.memory",
            "invalid quantity '2GB': use a Kubernetes quantity such as 2Gi or 512Mi",
            id="bad-memory-unit",
        ),
        pytest.param(
            changed({"resources.memory": 0}),
            "resources.memory",
            "greater than 0",
            id="zero-memory",
        ),
        pytest.param(
            changed({"resources.cpus": "two"}),
            "resources.cpus",
            "millicores such as 500m",
            id="bad-cpus",
        ),
        pytest.param(
            changed({"resources.gpus": -1}),
            "resources.gpus",
            "greater than or equal to 0 (got -1)",
            id="negative-gpus",
        ),
        pytest.param(
            changed({"resources.gpus": 0.5}),
            "resources.gpus",
            "valid integer",
            id="fractional-gpus",
        ),
        pytest.param(
            changed({"resources.learners": 0}),
            "resources.learners",
            "greater than or equal to 1",
            id="zero-learners",
        ),
        pytest.param(
            changed({"resources.gpu_type": "a100"}),
            "resources.gpu_type",
            "gpu_type needs gpus > 0",
            id="gpu-type-without-gpus",
        ),
        pytest.param(
            changed({"checkpoint.interval": "10 minutes"}),
            "checkpoint.interval",
            "use seconds such as 90, or a number with a unit s, m, h or d",
            id="bad-interval",
        ),
        pytest.param(
            changed({"checkpoint.interval": "0s"}),
            "checkpoint.interval",
            "greater than 0",
            id="zero-interval",
        ),
        pytest.param(
            changed({"checkpoint.keep": 0}),
            "checkpoint.keep",
            "greater than or equal to 1",
            id="keep-no-checkpoint",
        ),
        pytest.param(
            changed({"watchdog": "soon"}),
            "watchdog",
            "invalid duration 'soon': use seconds such as 90, or a number with a unit",
            id="bad-watchdog",
        ),
        pytest.param(
            changed({"retries": {"user_errors": 4}}),
            "retries.user_errors",
            "less than or equal to 3",
            id="too-many-user-error-retries",
        ),
        pytest.param(
            changed({"retries": {"platform_faults": 9}}),
            "retries.platform_faults",
            "not allowed",
            id="unknown-retry-kind",
        ),
        pytest.param(
            changed({"watchdog": "0m"}),
            "watchdog",
            "greater than 0",
            id="zero-watchdog",
        ),
        pytest.param(
            changed({"watchdog": -90}),
            "watchdog",
            "greater than 0",
            id="negative-watchdog",
        ),
        pytest.param(
            changed({"data.path": "datasets/../../other-tenant"}),
            "data.path",
            "leaves the tenant's storage ('..'): use a relative path inside the tenant's storage",
            id="data-path-with-dotdot",
        ),
        pytest.param(
            changed({"data.path": "/etc/passwd"}),
            "data.path",
            "is an absolute path: use a relative path inside the tenant's storage",
            id="data-path-absolute",
        ),
        pytest.param(
            changed({"data.path": "s3://other-bucket/x"}),
            "data.path",
            "is a URI: use a relative path inside the tenant's storage",
            id="data-path-other-bucket",
        ),
        pytest.param(
            changed({"data.path": "file:///etc"}),
            "data.path",
            "is a URI",
            id="data-path-local-file-uri",
        ),
        pytest.param(
            changed({"data.path": "datasets\\digits"}),
            "data.path",
            "separate segments with '/'",
            id="data-path-backslash",
        ),
        pytest.param(
            changed({"data.path": "./"}),
            "data.path",
            "names no directory",
            id="data-path-empty-after-normalising",
        ),
        pytest.param(
            changed({"code": {"uri": "../acme-secrets"}}),
            "code.uri",
            "leaves the tenant's storage",
            id="code-uri-with-dotdot",
        ),
        pytest.param(
            changed({"framework": {"name": "custom", "version": "1"}}),
            "framework.image",
            "a custom framework needs an image",
            id="custom-framework-without-image",
        ),
        pytest.param(
            changed({"framework.name": "caffe"}),
            "framework.name",
            "'pytorch', 'tensorflow', 'jax' or 'custom'",
            id="unknown-framework",
        ),
        pytest.param(
            changed({"framework.version": 2.1}),
            "framework.version",
            'quote the version, such as version: "2.13"',
            id="unquoted-version",
        ),
        pytest.param(
            changed({"code": {"path": ".", "uri": "code/digits"}}),
            "code",
            "give exactly one of path",
            id="both-code-path-and-uri",
        ),
        pytest.param(
            changed({"code": {}}),
            "code",
            "give exactly one of path",
            id="neither-code-path-nor-uri",
        ),
        pytest.param(
            changed({"name": "Digits_MLP"}),
            "name",
            "use a lowercase DNS label of at most 40 characters",
            id="bad-name",
        ),
        pytest.param(
            changed({"name": "a" * 41}),
            "name",
            "at most 40 characters",
            id="name-too-long",
        ),
        pytest.param(
            changed({"tenant": "-acme"}),
            "tenant",
            "lowercase DNS label",
            id="bad-tenant",
        ),
        pytest.param(
            changed({"command": DELETE}),
            "command",
            "required field is missing",
            id="missing-command",
        ),
        pytest.param(
            changed({"command": "   "}),
            "command",
            "at least 1 character",
            id="blank-command",
        ),
        pytest.param(
            changed({"data.expectations": [{"type": "column_values_not_null"}]}),
            "data.expectations.0.type",
            "great-expectations expectation name in snake_case starting with expect_",
            id="expectation-type-without-expect-prefix",
        ),
        pytest.param(
            changed({"evaluation.threshold": "high"}),
            "evaluation.threshold",
            "valid number",
            id="non-numeric-threshold",
        ),
        pytest.param(
            "name: digits-mlp\n  tenant: acme\n",
            "",
            "invalid YAML at line 2, column 9",
            id="yaml-syntax-error",
        ),
        pytest.param(
            "- name: digits-mlp\n- tenant: acme\n",
            "",
            "the manifest must be a mapping of fields such as name, got a list",
            id="list-instead-of-mapping",
        ),
        pytest.param("", "", "got an empty document", id="empty-document"),
    ],
)
def test_bad_manifest_names_the_field(source, field, hint):
    with pytest.raises(ManifestError) as caught:
        parse_manifest(source)

    [(path, message)] = caught.value.problems
    assert path == field
    assert hint in message
    assert str(caught.value) == (f"{field}: {message}" if field else message)


@pytest.mark.parametrize(
    ("watchdog", "seconds"),
    [
        pytest.param(None, None, id="null-uses-the-tenant-default"),
        pytest.param("10m", 600.0, id="minutes"),
        pytest.param("90s", 90.0, id="seconds-with-unit"),
        pytest.param(45, 45.0, id="plain-seconds"),
        pytest.param("1.5h", 5400.0, id="fractional-hours"),
    ],
)
def test_watchdog_is_a_duration_in_seconds(watchdog, seconds):
    assert parse_manifest(changed({"watchdog": watchdog})).watchdog == seconds


def test_every_problem_is_reported_one_line_each():
    with pytest.raises(ManifestError) as caught:
        parse_manifest(changed({"resources.memory": "lots", "resources.learners": 0}))

    assert str(caught.value).splitlines() == [
        "resources.memory: invalid quantity 'lots': use a Kubernetes quantity such as 2Gi or "
        "512Mi (suffixes Ki Mi Gi Ti Pi Ei, or k M G T P E for powers of 1000)",
        "resources.learners: Input should be greater than or equal to 1 (got 0)",
    ]


def test_manifest_error_survives_pickling():
    error = ManifestError([("tenant", "unknown tenant 'x'")])

    assert pickle.loads(pickle.dumps(error)).problems == error.problems


@pytest.mark.parametrize(
    ("path", "normalised"),
    [
        pytest.param("datasets/digits/", "datasets/digits", id="trailing-slash"),
        pytest.param("./datasets", "datasets", id="leading-dot"),
        pytest.param("datasets//digits", "datasets/digits", id="double-slash"),
        pytest.param("datasets/./digits", "datasets/digits", id="inner-dot"),
    ],
)
def test_harmless_storage_paths_are_normalised(path, normalised):
    manifest = parse_manifest(changed({"data.path": path, "code": {"uri": f"code/{path}"}}))

    assert manifest.data is not None
    assert manifest.data.path == normalised
    assert manifest.code.uri == f"code/{normalised}"


#: Paths that name storage other than the tenant's own, each with what the error says.
ESCAPING_PATHS = [
    pytest.param("s3://globex-bucket/datasets", "is a URI", id="another-bucket"),
    pytest.param("minio://minio:9000/globex/x", "is a URI", id="another-endpoint"),
    pytest.param("file:///etc/passwd", "is a URI", id="local-file-uri"),
    pytest.param("//globex/datasets", "is an absolute path", id="network-path"),
    pytest.param("/srv/storage/globex", "is an absolute path", id="absolute"),
    pytest.param("~globex/datasets", "is an absolute path", id="home-of-another-user"),
    pytest.param("../globex/datasets", "leaves the tenant's storage ('..')", id="dotdot"),
    pytest.param("datasets/../../globex", "leaves the tenant's storage", id="dotdot-inside"),
    pytest.param("datasets/./../..", "leaves the tenant's storage", id="dot-then-dotdot"),
    pytest.param(
        "datasets/\uff0e\uff0e/\uff0e\uff0e/globex",
        "leaves the tenant's storage",
        id="fullwidth-dots-normalised-first",
    ),
    pytest.param("\uff0fetc/passwd", "is an absolute path", id="fullwidth-slash"),
    pytest.param("datasets/%2e%2e/%2E%2E/globex", "percent-encoded", id="percent-encoded-dots"),
    pytest.param("datasets%2f..%2fglobex", "percent-encoded", id="percent-encoded-slash"),
    pytest.param("datasets\\..\\globex", "backslash", id="backslashes"),
    pytest.param("datasets/digits\n/..", "control character", id="newline"),
    pytest.param("datasets/\x00/x", "control character", id="nul"),
]


@pytest.mark.parametrize("field", ["data.path", "code.uri", "schedule.on_new_data"])
@pytest.mark.parametrize(("path", "problem"), ESCAPING_PATHS)
def test_a_path_outside_the_tenants_storage_is_rejected_naming_the_field(
    field: str, path: str, problem: str
) -> None:
    options: dict[str, dict[str, Any]] = {
        "data.path": {"data.path": path},
        "code.uri": {"code": {"uri": path}},
        "schedule.on_new_data": {"schedule": {"on_new_data": path}},
    }
    changes = options[field]

    with pytest.raises(ManifestError) as raised:
        parse_manifest(changed(changes))

    # A schedule's errors name the field `schedule`: it is one value, a cron or a trigger.
    expected = "schedule" if field == "schedule.on_new_data" else field
    assert [path for path, _ in raised.value.problems] == [expected]
    assert problem in raised.value.problems[0][1]


FULL = changed(
    {
        "framework": {"name": "custom", "version": "1.0", "image": "registry.example/learner:1"},
        "code": {"uri": "code/digits"},
        "resources": {
            "gpus": 2,
            "gpu_type": "a100",
            "cpus": "500m",
            "memory": "1536Mi",
            "learners": 2,
        },
        "checkpoint": {"interval": "5m", "keep": 1},
        "data.expectations": [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "label"}},
            {
                "type": "expect_table_row_count_to_be_between",
                "kwargs": {"min_value": 10},
                "files": "train/*.csv",
            },
        ],
        "evaluation": {"command": "python eval.py", "metric": "loss", "higher_is_better": False},
        "watchdog": "45m",
    }
)


@pytest.mark.parametrize(
    "source",
    [pytest.param(EXAMPLE, id="public-example"), pytest.param(FULL, id="every-field-set")],
)
def test_json_dump_round_trips(source):
    manifest = parse_manifest(source)
    dumped = manifest.model_dump(mode="json")

    assert parse_manifest(dumped) == manifest
    assert parse_manifest(json.dumps(dumped)) == manifest


def test_memory_is_dumped_as_a_quantity():
    manifest = parse_manifest(FULL)

    assert manifest.resources.memory == 1536 * 2**20
    assert manifest.model_dump(mode="json")["resources"]["memory"] == "1536Mi"
    assert isinstance(JobManifest.model_validate(manifest.model_dump()).resources.memory, int)
