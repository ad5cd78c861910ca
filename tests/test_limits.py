"""The limits on outside input, and one regression test per kind of crash issue 17 found."""

from __future__ import annotations

from typing import Any

import pytest

from tests.manifest.test_ffdl import FFDL
from trainyard.limits import (
    MAX_DEPTH,
    MAX_DOCUMENT_CHARS,
    MAX_YAML_ALIASES,
    LimitError,
    check_document,
    shorten,
)
from trainyard.manifest.ffdl import import_ffdl_manifest
from trainyard.manifest.schema import ManifestError, parse_manifest
from trainyard.manifest.submission import example_manifest, manifest_from_conf
from trainyard.safe_yaml import load_yaml

EXAMPLE = example_manifest("acme")


def problems(error: pytest.ExceptionInfo[ManifestError]) -> dict[str, str]:
    return dict(error.value.problems)


def with_fields(**sections: dict[str, Any]) -> dict[str, Any]:
    """The example manifest with fields of its sections replaced."""
    return EXAMPLE | {name: EXAMPLE.get(name, {}) | fields for name, fields in sections.items()}


@pytest.mark.parametrize(
    ("conf", "field", "message"),
    [
        pytest.param({"manifest": False}, "manifest", "got False (of type bool)", id="false"),
        pytest.param({"manifest": 3}, "manifest", "got 3 (of type int)", id="number"),
        pytest.param({"manifest": [EXAMPLE]}, "manifest", "(of type list)", id="list"),
        pytest.param({"manifest": None}, "", "got an empty document", id="null"),
        pytest.param(["manifest"], "", "the run conf must be a mapping", id="conf-a-list"),
        pytest.param(
            {"manifest": EXAMPLE | {"resources": 1}, "gpus": 2},
            "resources",
            "so the trigger form's gpus cannot set resources.gpus: make resources a mapping",
            id="override-into-int",
        ),
        pytest.param(
            {"manifest": EXAMPLE | {"data": ["datasets/x"]}, "data_path": "datasets/y"},
            "data",
            "trigger form's data_path cannot set data.path",
            id="override-into-list",
        ),
        pytest.param(
            {"manifest": with_fields(resources={"cpus": 10**400})},
            "resources.cpus",
            "the number is too large",
            id="huge-cpus",
        ),
        pytest.param(
            {"manifest": with_fields(evaluation={"threshold": 10**400})},
            "evaluation.threshold",
            "the number is too large",
            id="huge-threshold",
        ),
        pytest.param(
            {"manifest": with_fields(evaluation={"threshold": float("nan")})},
            "evaluation.threshold",
            "finite number",
            id="nan-threshold",
        ),
        pytest.param(
            {"manifest": with_fields(resources={"cpus": "9" * 400})},
            "resources.cpus",
            "invalid CPU quantity '99999",
            id="huge-cpus-string",
        ),
        pytest.param(
            {"manifest": EXAMPLE, "cpus": 10**400},
            "resources.cpus",
            "the number is too large",
            id="huge-override",
        ),
    ],
)
def test_run_confs_that_crashed_are_errors_naming_the_field(
    conf: Any, field: str, message: str
) -> None:
    with pytest.raises(ManifestError) as raised:
        manifest_from_conf(conf)

    assert field in problems(raised), raised.value.problems
    assert message in problems(raised)[field]


@pytest.mark.parametrize(
    ("manifest", "field", "message"),
    [
        pytest.param(
            with_fields(resources={"learners": 65}), "resources.learners", "64", id="learners"
        ),
        pytest.param(with_fields(resources={"gpus": 17}), "resources.gpus", "16", id="gpus"),
        pytest.param(with_fields(resources={"cpus": 513}), "resources.cpus", "512", id="cpus"),
        pytest.param(
            with_fields(resources={"memory": "17Ti"}), "resources.memory", "1759", id="memory"
        ),
        pytest.param(with_fields(checkpoint={"keep": 101}), "checkpoint.keep", "100", id="keep"),
        pytest.param(
            with_fields(checkpoint={"interval": "8d"}),
            "checkpoint.interval",
            "604800",
            id="interval",
        ),
        pytest.param(
            EXAMPLE | {"watchdog": float("inf")}, "watchdog", "finite number", id="watchdog-inf"
        ),
        pytest.param(
            EXAMPLE | {"watchdog": "9" * 40}, "watchdog", "invalid duration", id="watchdog-digits"
        ),
    ],
)
def test_quantities_have_upper_bounds(manifest: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ManifestError) as raised:
        parse_manifest(manifest)

    assert message in problems(raised)[field]


def test_a_long_value_is_echoed_cut_short() -> None:
    with pytest.raises(ManifestError) as raised:
        parse_manifest(EXAMPLE | {"name": "X" * 5000})

    message = problems(raised)["name"]
    assert "'XXXXXXXX" in message
    assert "...: use a lowercase DNS label" in message
    assert len(message) < 300


def test_a_long_string_is_refused_naming_its_field() -> None:
    with pytest.raises(ManifestError) as raised:
        parse_manifest(with_fields(evaluation={"metric": "m" * 9000}))

    assert problems(raised)["evaluation.metric"].startswith("9,000 characters, more than")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 100)),
            "nests deeper",
            id="deep-block",
        ),
        pytest.param("[" * 100_000, "nests deeper", id="deep-flow"),
        pytest.param("x" * (MAX_DOCUMENT_CHARS + 1), "characters, more than the limit", id="size"),
        pytest.param(
            "a: &a [x, x]\n" + "".join(f"k{i}: *a\n" for i in range(MAX_YAML_ALIASES + 1)),
            "YAML aliases",
            id="aliases",
        ),
        pytest.param("name: " + "9" * 5000, "a value cannot be read", id="5000-digits"),
        pytest.param("name: 2026-13-45", "a value cannot be read", id="bad-date"),
    ],
)
def test_hostile_yaml_is_refused_as_a_document_problem(text: str, message: str) -> None:
    with pytest.raises(ManifestError) as raised:
        parse_manifest(text)

    assert message in str(raised.value)
    assert len(str(raised.value)) < 500


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
    )
    with pytest.raises(LimitError, match="YAML aliases"):
        load_yaml(bomb)


def test_a_few_aliases_are_fine() -> None:
    assert load_yaml("a: &a {x: 1}\nb: *a\nc: *a\n") == {
        "a": {"x": 1},
        "b": {"x": 1},
        "c": {"x": 1},
    }


def test_a_mapping_nested_deeper_than_the_stack_is_refused() -> None:
    document: Any = "leaf"
    for _ in range(100_000):
        document = {"a": document}

    with pytest.raises(ManifestError) as raised:
        manifest_from_conf({"manifest": EXAMPLE | {"data": document}})

    path, message = raised.value.problems[0]
    assert path.startswith("data.a.a")
    assert message == f"nests deeper than {MAX_DEPTH} levels"


def test_ffdl_memory_too_large_for_a_float_names_memory() -> None:
    with pytest.raises(ManifestError) as raised:
        import_ffdl_manifest(FFDL.replace("memory: 1Gb", "memory: " + "9" * 400 + "Gb"), "acme")

    assert "invalid FfDL memory '9999" in problems(raised)["memory"]
    assert len(problems(raised)["memory"]) < 200


def test_check_document_names_the_field() -> None:
    with pytest.raises(LimitError) as raised:
        check_document({"a": [{"b": 2**70}]})

    assert raised.value.path == "a.0.b"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param("short", "'short'", id="short"),
        pytest.param("x" * 100, "'" + "x" * 56 + "...", id="long"),
        pytest.param(10**5000, "<int>", id="int-beyond-repr"),
    ],
)
def test_shorten(value: object, shown: str) -> None:
    assert shorten(value) == shown
