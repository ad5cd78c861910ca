"""YAML from outside, read within the limits of trainyard.limits.

Apart from trainyard.limits so that the learner runtime, which echoes values with `shorten`,
does not need PyYAML.
"""

from __future__ import annotations

from typing import Any

import yaml

from trainyard.limits import MAX_DEPTH, MAX_DOCUMENT_CHARS, MAX_YAML_ALIASES, LimitError, shorten


class _LimitedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses deep nesting and more than a few aliases while it
    composes the document, before anything is expanded."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise LimitError(
                    "",
                    f"the document uses more than {MAX_YAML_ALIASES} YAML aliases (*name): "
                    "write the values out instead",
                )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise LimitError(
                    "",
                    f"the document nests deeper than {MAX_DEPTH} levels: "
                    "a job manifest needs only a few",
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str) -> Any:
    """Parse YAML (or JSON) text within the limits.

    Raises:
        LimitError: the text is too large, too deep or uses too many aliases.
        yaml.YAMLError: the text is not YAML.
    """
    if len(text) > MAX_DOCUMENT_CHARS:
        raise LimitError(
            "",
            f"the document has {len(text):,} characters, more than the limit of "
            f"{MAX_DOCUMENT_CHARS:,}: keep data and code out of it and refer to them by path",
        )
    loader = _LimitedLoader(text)
    try:
        return loader.get_single_data()
    except LimitError:
        raise
    except ValueError as error:  # a scalar YAML cannot construct: a 5,000-digit int, 2026-13-45
        raise yaml.constructor.ConstructorError(
            problem=f"a value cannot be read ({shorten(str(error), 120)})"
        ) from error
    finally:
        loader.dispose()
