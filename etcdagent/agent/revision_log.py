"""The daemon's own record of which revision was current when, by its monotonic clock.

A second witness for time retention beside etcd's lease clock (``act.markers``): the daemon saw
revision R at monotonic time t, so R was current ``now - t`` ago, whatever any wall clock says (a
wall-clock step, as NTP makes, does not move ``CLOCK_MONOTONIC``). The decision
(``decide.compaction.time_target``) compacts no further than the newest revision seen at least
``retain`` ago, and distrusts markers that claim a revision seen more recently is older.

Bounded: past ``MAX_OBSERVATIONS`` every other entry is dropped (first and last kept), so the
record spans the daemon's whole life at a coarser grain. Coarser only picks an older revision
seen at least ``retain`` ago (keeps more) and checks the markers less finely.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from etcdagent.decide.compaction import Observation

MAX_OBSERVATIONS = 4096


class RevisionLog:
    """(monotonic time, revision) pairs, oldest first."""

    def __init__(
        self, monotonic: Callable[[], float] = time.monotonic, limit: int = MAX_OBSERVATIONS
    ) -> None:
        self._monotonic = monotonic
        self._limit = max(limit, 2)
        self._entries: list[tuple[float, int]] = []

    def record(self, revision: int | None) -> None:
        """The revision a snapshot just reported, stamped now (after it was read: the age is
        then, if anything, too young)."""
        if revision is None:
            return
        self._entries.append((self._monotonic(), revision))
        if len(self._entries) > self._limit:
            last = self._entries[-1]
            self._entries = [*self._entries[:-1:2], last]

    def observations(self) -> list[Observation]:
        """(seconds ago, revision) for each entry, as ``decide.compaction`` takes them."""
        now = self._monotonic()
        return [(now - stamp, revision) for stamp, revision in self._entries]

    def __len__(self) -> int:
        return len(self._entries)
