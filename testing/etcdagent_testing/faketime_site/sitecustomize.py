"""Loaded (through PYTHONPATH) only into agents started under libfaketime by
``etcdagent_testing.faketime``.

libfaketime 0.9.10 with ``FAKETIME_DONT_FAKE_MONOTONIC=1`` makes ``clock_nanosleep`` on
``CLOCK_MONOTONIC`` fail with EINVAL, which is what ``time.sleep`` calls (measured: every
``time.sleep`` raises ``OSError: [Errno 22]``), while timed lock waits work. So ``time.sleep``
waits on an event instead: the same duration on the real monotonic clock. Nothing else changes.
"""

from __future__ import annotations

import threading
import time
from typing import SupportsIndex


def _sleep(seconds: float | SupportsIndex) -> None:
    length = float(seconds)
    if length < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(length)


time.sleep = _sleep
