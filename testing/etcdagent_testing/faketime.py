"""Skewed and jumping clocks for agent subprocesses, with libfaketime (LD_PRELOAD).

``bash scripts/install-faketime`` (called by ``scripts/setup --test-tools``) unpacks Debian's
``libfaketime`` into ``.tools/faketime``; ``ETCDAGENT_TEST_FAKETIME`` names another
``libfaketime.so.1``. Only the wall clock is faked: ``FAKETIME_DONT_FAKE_MONOTONIC=1`` leaves
``CLOCK_MONOTONIC`` alone, as a real NTP step or a wrong node clock do.

* :func:`skewed_env` - a clock constantly off by an offset (``"-10m"``, ``"+10m"``);
* :class:`ClockFile` - an offset read from a file on every call (``FAKETIME_TIMESTAMP_FILE``
  with the cache off), so a test can make the clock jump while the process runs.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ClockFile", "libfaketime", "skewed_env"]

_REPO = Path(__file__).resolve().parents[2]
_SITE = Path(__file__).resolve().parent / "faketime_site"
_CANDIDATES = (
    _REPO / ".tools/faketime/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    _REPO / ".tools/faketime/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
    Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"),
)


def libfaketime() -> Path | None:
    """The library to preload, or None when it is not installed."""
    configured = os.environ.get("ETCDAGENT_TEST_FAKETIME")
    if configured:
        return Path(configured)
    return next((p for p in _CANDIDATES if p.exists()), None)


def _base_env() -> dict[str, str]:
    library = libfaketime()
    if library is None or not library.exists():
        raise FileNotFoundError(
            "libfaketime not found: run `bash scripts/install-faketime` "
            "(or set ETCDAGENT_TEST_FAKETIME=/path/to/libfaketime.so.1)"
        )
    preload = os.environ.get("LD_PRELOAD")
    path = os.environ.get("PYTHONPATH")
    return {
        "LD_PRELOAD": f"{library}:{preload}" if preload else str(library),
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        # time.sleep fails under that setting (see faketime_site/sitecustomize.py).
        "PYTHONPATH": f"{_SITE}{os.pathsep}{path}" if path else str(_SITE),
    }


def skewed_env(offset: str) -> dict[str, str]:
    """Environment for a subprocess whose wall clock is ``offset`` off (libfaketime syntax:
    ``"-10m"``, ``"+600"``, ``"+1h"``)."""
    return {**_base_env(), "FAKETIME": offset}


class ClockFile:
    """A wall-clock offset a running subprocess rereads on every call: :meth:`set` jumps it."""

    def __init__(self, path: Path, offset: str = "+0") -> None:
        self.path = path
        self.set(offset)

    def set(self, offset: str) -> None:
        # Replaced whole, so a reader never sees a half-written offset.
        partial = self.path.with_suffix(".partial")
        partial.write_text(offset + "\n")
        partial.replace(self.path)

    def env(self) -> dict[str, str]:
        return {
            **_base_env(),
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_NO_CACHE": "1",
        }
