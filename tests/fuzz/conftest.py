"""Prints how the property-based suites' inputs fared: valid, rejected (with a named field) or
crashed (any other exception: the bar is zero)."""

from __future__ import annotations

import pytest

from tests.fuzz.strategies import OUTCOMES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not OUTCOMES:
        return
    terminalreporter.section("fuzz outcomes")
    totals = {"valid": 0, "rejected": 0, "crashed": 0}
    for entry_point, counts in sorted(OUTCOMES.items()):
        for outcome in totals:
            totals[outcome] += counts[outcome]
        terminalreporter.write_line(
            f"{entry_point:<28} "
            + "  ".join(f"{outcome} {counts[outcome]:>6}" for outcome in totals)
        )
    terminalreporter.write_line(
        f"{'total':<28} " + "  ".join(f"{outcome} {n:>6}" for outcome, n in totals.items())
    )
