"""Human units: what operators write in config files and read in output."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcdagent.units import format_bytes, parse_duration, parse_size

KiB = 1024
MiB = 1024**2
GiB = 1024**3


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        (" 30S ", 30.0),
        ("5", 5.0),
        ("0.25", 0.25),
    ],
)
def test_duration_strings(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("value", "seconds"), [(5, 5.0), (2.5, 2.5), (0, 0.0)])
def test_duration_numbers_are_seconds(value: float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "text", ["", "   ", "abc", "5 minutes", "1h 30m", "10x", "ms", "h1", "1.5.2s", "30s!"]
)
def test_bad_duration_strings_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [True, False, None, [1], {"s": 1}])
def test_non_duration_types_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize("text", ["inf", "nan", "infinity", "-inf"])
def test_non_finite_durations_are_refused(text: str) -> None:
    # Regression: float() accepts these, so "inf" becomes an infinite request timeout.
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.text(max_size=30))
def test_duration_parser_fails_only_with_value_error(text: str) -> None:
    try:
        result = parse_duration(text)
    except ValueError:
        return
    assert isinstance(result, float)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512MiB", 512 * MiB),
        ("8GiB", 8 * GiB),
        ("100MB", 100_000_000),
        ("2GB", 2_000_000_000),
        ("64Mi", 64 * MiB),
        ("1.5GiB", int(1.5 * GiB)),
        ("4kib", 4 * KiB),
        ("10KB", 10_000),
        ("1TiB", 1024**4),
        ("123", 123),
        ("123B", 123),
        (" 8 GiB ", 8 * GiB),
    ],
)
def test_size_strings(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("value", "size"), [(4096, 4096), (2048.0, 2048), (0, 0)])
def test_size_numbers_are_bytes(value: float, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["", "abc", "8 gigs", "-5", "5XB", "MiB", "1e3", 1.5, True, None])
def test_bad_sizes_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(value)


def test_negative_byte_counts_are_refused() -> None:
    # Regression: "-5" is refused but the number -5 is returned as a size of -5 bytes.
    with pytest.raises(ValueError):
        parse_size(-5)


@pytest.mark.parametrize(
    ("text", "size"), [("1PB", 1000**5), ("1PiB", 1024**5), ("2P", 2 * 1000**5)]
)
def test_peta_suffix_parses_or_is_refused_cleanly(text: str, size: int) -> None:
    # Regression: the pattern accepts a P suffix but the factor table has none: KeyError escapes.
    try:
        result = parse_size(text)
    except ValueError:
        return
    assert result == size


@given(st.text(max_size=20))
def test_size_parser_fails_only_with_value_error(text: str) -> None:
    try:
        result = parse_size(text)
    except ValueError:
        return
    assert isinstance(result, int)
    assert result >= 0


@pytest.mark.parametrize(
    ("n", "shown"),
    [
        (None, "-"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (10 * KiB, "10 KiB"),
        (1536, "1.5 KiB"),
        (412 * MiB, "412 MiB"),
        (2 * GiB, "2.0 GiB"),
        (8 * GiB, "8.0 GiB"),
        (20 * GiB, "20 GiB"),
        (3 * 1024**4, "3.0 TiB"),
    ],
)
def test_format_bytes(n: int | None, shown: str) -> None:
    assert format_bytes(n) == shown


@pytest.mark.parametrize("n", [MiB - 1, GiB - 1, 1024**4 - 1, MiB - 100])
def test_format_bytes_never_shows_1024_of_a_unit(n: int) -> None:
    # Regression: rounding happens after the unit is chosen, so MiB - 1 prints "1024 KiB".
    number, unit = format_bytes(n).split()
    assert float(number) < 1024, f"{n} shown as {format_bytes(n)}"
    assert unit in ("KiB", "MiB", "GiB", "TiB")


@given(st.integers(min_value=0, max_value=1024**5))
def test_format_bytes_round_trips_roughly(n: int) -> None:
    number, unit = format_bytes(n).split()
    factor = {"B": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": 1024**4, "PiB": 1024**5}[unit]
    assert math.isclose(float(number) * factor, n, rel_tol=0.06, abs_tol=1)
