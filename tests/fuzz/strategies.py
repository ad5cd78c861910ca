"""Hypothesis strategies for hostile input: structured mutations of valid documents.

A mutation takes a valid document (a manifest, a run conf, an FfDL manifest, a deployment
config) and changes it as a careless or hostile user would: a field deleted, added, or given a
value of another type, a huge or negative number, NaN or infinity, unicode and control
characters, deep nesting, a very long string, a path that tries to leave the tenant's storage.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import yaml
from hypothesis import strategies as st

#: Outcomes per entry point across the session: valid, rejected, crashed (see conftest).
OUTCOMES: dict[str, Counter[str]] = {}

PATH_TRICKS = [
    "../other-tenant/data",
    "datasets/../../etc",
    "/etc/passwd",
    "~/secrets",
    "s3://another-bucket/x",
    "file:///etc/shadow",
    "datasets\\..\\x",
    "datasets/%2e%2e/x",
    "datasets/%2F/x",
    "\uff0e\uff0e/x",  # fullwidth dots
    "datasets/\x00/x",
    "datasets/\n",
    ".",
    "",
    "./",
    "a//b/./c/",
]

HUGE_NUMBERS = [10**400, -(10**400), 10**19, 2**63, -1, 0, -(2**63), 10**18 + 1]
SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 1e400]


def long_strings() -> st.SearchStrategy[str]:
    return st.builds(
        lambda char, count: char * count,
        st.sampled_from(["x", "é", "\x00", "9", "😀", "a/"]),
        st.sampled_from([100, 5000, 9000]),
    )


def deep_nesting() -> st.SearchStrategy[Any]:
    def nest(depth: int, as_list: bool) -> Any:
        value: Any = "leaf"
        for _ in range(depth):
            value = [value] if as_list else {"a": value}
        return value

    return st.builds(nest, st.sampled_from([17, 40, 300]), st.booleans())


def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from(HUGE_NUMBERS),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(SPECIAL_FLOATS),
        st.text(max_size=30),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
        st.sampled_from(PATH_TRICKS),
        st.sampled_from(["2Gi", "500m", "10s", "0", "-1", "1e9", "NaN", "inf", "9" * 400, "0x10"]),
    )


def json_values() -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars(),
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(st.text(max_size=10), children, max_size=3),
        ),
        max_leaves=6,
    )


def nasty_values() -> st.SearchStrategy[Any]:
    return st.one_of(json_values(), long_strings(), deep_nesting())


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside the document, itself included (the empty path)."""
    paths = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            paths.extend(_paths(value, (*prefix, key)))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            paths.extend(_paths(value, (*prefix, index)))
    return paths


def _get(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


_NASTY = nasty_values()
_KINDS = st.sampled_from(["replace", "delete", "add", "wrap", "stringify", "numeric"])
_NEW_KEYS = st.text(max_size=12) | st.sampled_from(["extra", "gpus", ""])
_NUMBERS = st.sampled_from(HUGE_NUMBERS + SPECIAL_FLOATS) | st.integers()
_WRAPS = st.sampled_from(["list", "mapping"])


@st.composite
def mutated(draw: st.DrawFn, base: Any, max_mutations: int = 3) -> Any:
    """`base` after a few structured mutations (deep-copied: `base` stays as it is)."""
    document = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, max_mutations))):
        paths = _paths(document)
        path = paths[draw(st.integers(0, len(paths) - 1))]
        kind = draw(_KINDS)
        if not path:
            if kind == "replace":
                document = draw(_NASTY)
            continue
        parent = _get(document, path[:-1])
        key = path[-1]
        if kind == "replace":
            parent[key] = draw(_NASTY)
        elif kind == "delete":
            del parent[key]
        elif kind == "add" and isinstance(parent, dict):
            parent[draw(_NEW_KEYS)] = draw(_NASTY)
        elif kind == "wrap":
            parent[key] = [parent[key]] if draw(_WRAPS) == "list" else {"value": parent[key]}
        elif kind == "stringify":
            parent[key] = repr(parent[key])[:200]
        elif kind == "numeric":
            parent[key] = draw(_NUMBERS)
    return document


def as_yaml(document: Any) -> str:
    """The document as YAML text, as a user would write it."""
    try:
        return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
    except (yaml.YAMLError, RecursionError):
        return "document: " + repr(document)[:1000]


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


def yaml_texts(base: Any) -> st.SearchStrategy[str]:
    """YAML text: a mutated document written out, or text broken as text (cut, spliced, an
    alias bomb, deep brackets, tabs, binary junk)."""
    good = as_yaml(base)
    return st.one_of(
        st.builds(as_yaml, mutated(base)),
        st.builds(lambda n: good[:n], st.integers(0, len(good))),
        st.builds(
            lambda n, junk: good[:n] + junk + good[n:],
            st.integers(0, len(good)),
            st.text(max_size=20)
            | st.sampled_from(
                [
                    "\t",
                    ": :",
                    "&x",
                    "*x",
                    "!!python/object:os.system",
                    "{",
                    "- ",
                    "\ufeff",
                    "%YAML 9.9\n",
                ]
            ),
        ),
        st.just(ALIAS_BOMB),
        st.builds(lambda n: "[" * n + "]" * n, st.sampled_from([17, 1000, 50000])),
        st.builds(lambda n: "a:\n" + "".join(" " * i + "b:\n" for i in range(1, n)), st.just(200)),
        st.just("a: " + "9" * 5000),
        st.just("x" * 300_000),
        st.just("a: 2026-13-45\n"),
        st.just("? [a, b]\n: c\n"),
        st.just("!!binary AAAA\n"),
        st.text(max_size=200),
    )


def record(
    entry_point: str, call: Callable[[], object], expected: tuple[type[BaseException], ...]
) -> BaseException | None:
    """Run `call`, count its outcome for `entry_point`; return the expected error it raised.

    Anything else it raises is counted as a crash and propagates (the property fails).
    """
    counts = OUTCOMES.setdefault(entry_point, Counter())
    try:
        call()
    except expected as error:
        counts["rejected"] += 1
        return error
    except BaseException:
        counts["crashed"] += 1
        raise
    counts["valid"] += 1
    return None
