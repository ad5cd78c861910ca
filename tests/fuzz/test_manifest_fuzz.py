"""Manifests from every door (mapping, YAML text, file, run conf with trigger-form overrides,
FfDL import): every mutated input is valid or a ManifestError naming the field."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import (
    mutated,
    nasty_values,
    record,
    scalars,
    yaml_texts,
)
from tests.manifest.test_ffdl import FFDL
from trainyard.limits import ECHO_CHARS
from trainyard.manifest.ffdl import import_ffdl_manifest
from trainyard.manifest.schema import (
    ManifestError,
    parse_manifest,
    read_manifest_file,
)
from trainyard.manifest.submission import OVERRIDES, example_manifest, manifest_from_conf

FULL = example_manifest("acme") | {
    "description": "every section",
    "framework": {"name": "custom", "version": "1.0", "image": "registry.example.com/l:1"},
    "data": {
        "path": "datasets/digits",
        "expectations": [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}},
        ],
    },
    "resources": {"gpus": 1, "gpu_type": "a100", "cpus": "500m", "memory": 2**30, "learners": 2},
    "retries": {"user_errors": 1},
    "schedule": {"on_new_data": "datasets/digits"},
    "watchdog": "5m",
    "watchdog_startup": "10m",
}
BASES = [example_manifest("acme"), FULL, FULL | {"schedule": "0 3 * * *"}]
#: Longest message a problem may have: the fix, plus echoed values cut to ECHO_CHARS.
MAX_MESSAGE_CHARS = 400 + 4 * ECHO_CHARS
DOCUMENT_WORDS = ("document", "manifest", "YAML", "conf", "mapping")
MUTATED = st.one_of([mutated(base) for base in BASES])
TEXTS = st.one_of([yaml_texts(base) for base in BASES])


def assert_names_fields(error: BaseException) -> None:
    """Each problem names its field (or, for the whole document, says so) in a short message."""
    assert isinstance(error, ManifestError)
    assert error.problems
    for path, message in error.problems:
        assert message, error.problems
        assert path or any(word in message for word in DOCUMENT_WORDS), error.problems
        assert len(message) <= MAX_MESSAGE_CHARS, f"{path}: {len(message)} characters"
    str(error)


def check_parsed(parse: Any, entry_point: str) -> None:
    error = record(entry_point, parse, (ManifestError,))
    if error is not None:
        assert_names_fields(error)
    else:
        manifest = parse()
        # round-trips (as JSON: NaN in free-form expectation kwargs is never equal to itself)
        again = parse_manifest(manifest.model_dump(mode="json"))
        assert again.model_dump_json() == manifest.model_dump_json()


@given(MUTATED)
def test_mutated_manifest_mappings(document: Any) -> None:
    check_parsed(lambda: parse_manifest(document), "parse_manifest(mapping)")


@given(TEXTS)
def test_mutated_manifest_yaml(text: str) -> None:
    check_parsed(lambda: parse_manifest(text), "parse_manifest(yaml)")


@given(st.binary(max_size=200) | TEXTS.map(str.encode))
def test_mutated_manifest_files(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    path = tmp_path_factory.getbasetemp() / "job.yaml"
    path.write_bytes(content)
    check_parsed(lambda: read_manifest_file(path), "read_manifest_file")


_CONF_MANIFESTS = MUTATED | nasty_values()
_OVERRIDES = st.dictionaries(st.sampled_from(sorted(OVERRIDES)), scalars(), max_size=3)
_SCALARS = scalars()


@st.composite
def confs(draw: st.DrawFn) -> Any:
    """A run conf as the REST API or the trigger form sends it: a manifest (often mutated,
    sometimes of another type) and some trigger-form overrides."""
    manifest = draw(_CONF_MANIFESTS)
    conf: Any = {"manifest": manifest, **draw(_OVERRIDES)}
    shape = draw(st.integers(0, 5))
    return [conf, conf, conf, manifest, [conf], draw(_SCALARS)][shape]


@given(confs())
def test_mutated_run_confs(conf: Any) -> None:
    check_parsed(lambda: manifest_from_conf(conf), "manifest_from_conf")


FFDL_DOCUMENT = yaml.safe_load(FFDL)


@given(
    mutated(FFDL_DOCUMENT) | yaml_texts(FFDL_DOCUMENT),
    st.sampled_from([None, "registry.example.com/caffe:1"]),
)
def test_mutated_ffdl_manifests(source: Any, image: str | None) -> None:
    check_parsed(lambda: import_ffdl_manifest(source, "acme", image=image), "import_ffdl_manifest")
