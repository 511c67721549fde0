"""A wall clock tests move by hand: the daemon, its snapshots and its retention markers all read
it, so windows open and close without waiting for real time."""

from __future__ import annotations

import time
from datetime import datetime, timedelta


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class RunningClock(FakeClock):
    """A wall clock that runs at real speed from ``start`` and jumps when told: for a daemon
    running in its own threads, whose signals (p99, rates) need time to pass between samples,
    while the test still decides when a window opens."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self._started = time.monotonic()

    def __call__(self) -> datetime:
        return self.now + timedelta(seconds=time.monotonic() - self._started)
