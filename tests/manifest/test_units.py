"""Units: Kubernetes memory/CPU quantities and durations, parsed to plain numbers."""

from __future__ import annotations

import pytest

from trainyard.manifest.units import format_bytes, parse_cpu, parse_duration, parse_memory


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("2Gi", 2 * 2**30, id="binary-gi"),
        pytest.param("512Mi", 512 * 2**20, id="binary-mi"),
        pytest.param("1Ki", 1024, id="binary-ki"),
        pytest.param("1Ei", 2**60, id="binary-ei"),
        pytest.param("1G", 10**9, id="decimal-g"),
        pytest.param("1500M", 1_500_000_000, id="decimal-m"),
        pytest.param("4k", 4000, id="decimal-lowercase-k"),
        pytest.param("1.5Gi", 3 * 2**29, id="fraction-with-whole-bytes"),
        pytest.param("1048576", 2**20, id="plain-integer-string"),
        pytest.param(" 2Gi ", 2 * 2**30, id="surrounding-space"),
        pytest.param(4096, 4096, id="int"),
        pytest.param(4096.0, 4096, id="whole-float-from-json"),
    ],
)
def test_parse_memory(value, expected):
    assert parse_memory(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("lots", id="word"),
        pytest.param("2GB", id="not-a-kubernetes-suffix"),
        pytest.param("1K", id="uppercase-k-is-not-kubernetes"),
        pytest.param("1e9", id="exponent"),
        pytest.param("2 Gi", id="space-inside"),
        pytest.param("-1Gi", id="negative"),
        pytest.param("", id="empty"),
        pytest.param("1.5", id="fraction-of-a-byte"),
        pytest.param(1.5, id="fractional-float"),
        pytest.param(True, id="bool"),
    ],
)
def test_parse_memory_rejects(value):
    with pytest.raises(ValueError, match="use a Kubernetes quantity such as 2Gi or 512Mi"):
        parse_memory(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("500m", 0.5, id="millicores"),
        pytest.param("2", 2.0, id="cores-string"),
        pytest.param("1.5", 1.5, id="fractional-string"),
        pytest.param(1.5, 1.5, id="float"),
        pytest.param(4, 4.0, id="int"),
    ],
)
def test_parse_cpu(value, expected):
    assert parse_cpu(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("2 cores", id="words"),
        pytest.param("500M", id="memory-suffix"),
        pytest.param("", id="empty"),
        pytest.param(None, id="none"),
    ],
)
def test_parse_cpu_rejects(value):
    with pytest.raises(
        ValueError, match=r"use cores such as 2 or 1\.5, or millicores such as 500m"
    ):
        parse_cpu(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("10s", 10.0, id="seconds"),
        pytest.param("5m", 300.0, id="minutes"),
        pytest.param("1h", 3600.0, id="hours"),
        pytest.param("1d", 86400.0, id="days"),
        pytest.param("1.5m", 90.0, id="fractional-minutes"),
        pytest.param("90", 90.0, id="bare-number-is-seconds"),
        pytest.param(30, 30.0, id="int"),
        pytest.param(0.5, 0.5, id="float"),
    ],
)
def test_parse_duration(value, expected):
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("10 minutes", id="words"),
        pytest.param("1h30m", id="compound"),
        pytest.param("10ms", id="milliseconds"),
        pytest.param("", id="empty"),
        pytest.param(False, id="bool"),
    ],
)
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError, match="use seconds such as 90, or a number with a unit s, m, h"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param(2 * 2**30, "2Gi", id="gi"),
        pytest.param(1536 * 2**20, "1536Mi", id="not-whole-gi-stays-mi"),
        pytest.param(1024, "1Ki", id="ki"),
        pytest.param(2**60, "1Ei", id="ei"),
        pytest.param(1500, "1500", id="no-exact-binary-form"),
        pytest.param(0, "0", id="zero"),
    ],
)
def test_format_bytes(size, expected):
    assert format_bytes(size) == expected
    assert parse_memory(expected) == size
