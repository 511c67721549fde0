"""What the daemon remembers of a NOSPACE recovery refused as unrecoverable, between cycles.

A recovery that cannot help (the data in use fills a quota) would otherwise be tried every cycle,
compacting and checking again for the same answer. The daemon holds off until a member's in-use
size or quota changes (someone deleted data or raised --quota-backend-bytes), and tries again
after ``defrag.recover_retry_unrecoverable`` anyway. `run --once` starts afresh each time: a
CronJob's schedule is its back-off.
"""

from __future__ import annotations

from etcdagent.decide.recovery import Unrecoverable, unrecoverable_backoff
from etcdagent.models import AlarmType
from etcdagent.observe.snapshot import ClusterSnapshot


class NospaceBackoff:
    """The last unrecoverable refusal and when (monotonic seconds) it was decided."""

    def __init__(self) -> None:
        self.refused: Unrecoverable | None = None
        self.refused_at: float | None = None

    def hold(self, snapshot: ClusterSnapshot, now: float, retry_after: float) -> str | None:
        """Why not to try recovering now, or None."""
        if self.refused is None or self.refused_at is None:
            return None
        return unrecoverable_backoff(self.refused, snapshot, now - self.refused_at, retry_after)

    def attempted(self, refused: Unrecoverable | None, now: float) -> None:
        """Record a recovery's answer: refused as unrecoverable (on these sizes) or not."""
        self.refused = refused
        self.refused_at = now if refused is not None else None

    def alarm_gone(self, snapshot: ClusterSnapshot) -> bool:
        """Forget the refusal once no NOSPACE alarm is raised; True if there was one."""
        if self.refused is None or any(a.alarm is AlarmType.NOSPACE for a in snapshot.alarms):
            return False
        self.refused = self.refused_at = None
        return True
