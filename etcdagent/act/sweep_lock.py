"""The cluster-wide maintenance lock as one command takes, checks and lets go of it.

``MaintenanceLock`` (lock.py) is the lease mechanism; this decides what a command does when it
cannot have it: refuse when another agent holds it, and for ``recover`` under NOSPACE (when etcd
grants no lease at all) go on without it, but only after checking that nobody else is at work.
"""

from __future__ import annotations

from etcdagent.act.executor import Executor
from etcdagent.act.lock import MaintenanceLock, current_holder, default_holder
from etcdagent.act.run_report import RunReport
from etcdagent.errors import EtcdNoSpaceError, LockBusyError
from etcdagent.settings import Settings


class SweepLock:
    """Holds the maintenance lock for the steps of one command at a time."""

    def __init__(self, executor: Executor, settings: Settings) -> None:
        self.executor = executor
        self.settings = settings
        self._lock: MaintenanceLock | None = None

    def ensure_held(self) -> None:
        """Raise when the lock was taken and has been lost; the executor asks before each step."""
        if self._lock is not None:
            self._lock.ensure_held()

    def acquire(self, report: RunReport) -> str | None:
        """Take the cluster-wide lock; the reason to stop if it cannot be had."""
        lock = MaintenanceLock(
            self.executor.lock_members,
            holder=default_holder(report.command),
            ttl=self.settings.lock.ttl,
        )
        try:
            lock.acquire(self.settings.lock.timeout)
        except LockBusyError as exc:
            report.lock_busy = True
            return str(exc)
        except EtcdNoSpaceError:
            if report.command != "recover":
                raise
            return self._unlocked_recovery(report)
        self._lock = lock
        return None

    def _unlocked_recovery(self, report: RunReport) -> str | None:
        """etcd grants no lease while NOSPACE is raised: recover without the lock, but only when
        nobody holds it and no member is defragmenting."""
        snapshot = self.executor.observe()
        for snap in snapshot.voting:
            if snap.metrics is not None and snap.metrics.defrag_inflight:
                return f"{snap.member.display_name} is being defragmented by someone else"
        via = next((m for m in snapshot.voting if m.reachable and m.endpoint), None)
        if via is not None:
            holder = current_holder(self.executor.client_for(via))
            if holder:
                return f"maintenance already running by {holder}"
        report.notes.append(
            "the maintenance lock could not be taken (etcd grants no lease under NOSPACE): "
            "checked that no other agent holds it and no member is being defragmented"
        )
        return None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
