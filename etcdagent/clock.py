"""The wall clock and the sleep, as types every layer can inject.

Shared by the etcd client (metrics scrape times, retry sleeps), the writers (report and marker
times) and the daemon, so tests can drive time without any layer importing another for it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]


def utcnow() -> datetime:
    """Now, timezone-aware in UTC: every time the agent stores or compares is."""
    return datetime.now(UTC)
