"""Human units for sizes and durations, both ways.

Operators write "10m" and "512MiB" in config files and read "412 MiB" in output; everything inside
the agent is seconds (float) and bytes (int).
"""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
    "p": 1000**5,
    "pb": 1000**5,
    "pi": 1024**5,
    "pib": 1024**5,
}


def _finite_seconds(seconds: float) -> float:
    if not math.isfinite(seconds):
        raise ValueError("a duration must be finite (an endless timeout would hang the agent)")
    return seconds


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like "500ms", "30s", "10m", "1h30m"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 10m or 1h")
    if isinstance(value, int | float):
        return _finite_seconds(float(value))
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 30s, 10m or 1h")
    text = value.strip().lower()
    try:
        return _finite_seconds(float(text))
    except ValueError as exc:
        if "finite" in str(exc):
            raise
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration; use e.g. 500ms, 30s, 10m, 1h30m")
    return total


def parse_size(value: object) -> int:
    """Bytes from a number or a string like "8GiB", "512MiB", "100MB"."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512MiB or 8GiB")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0 or not float(value).is_integer():
            raise ValueError(f"{value!r} is not a size: use a whole, non-negative number of bytes")
        return int(value)
    if not isinstance(value, str):
        raise ValueError("expected a size such as 512MiB or 8GiB")
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size; use e.g. 512MiB, 8GiB or a number of bytes")
    unit = (match.group(2) or "").lower()
    return int(float(match.group(1)) * _SIZE_FACTORS[unit])


def format_bytes(n: int | float | None) -> str:
    """ "412 MiB" style, binary units, as etcd's own docs and dashboards show sizes."""
    if n is None:
        return "-"
    value = float(n)
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    for index, unit in enumerate(units):
        shown = round(value) if unit == "B" else (round(value, 1) if value < 10 else round(value))
        if abs(shown) < 1024 or index == len(units) - 1:
            if unit == "B":
                return f"{int(shown)} B"
            return f"{shown:.1f} {unit}" if abs(value) < 10 else f"{shown:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """Short human form: 250ms, 42s, 5m, 1h30m."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs else "")
