"""The cluster-wide maintenance lock as one command takes, checks and lets go of it.

``MaintenanceLock`` (lock.py) is the lease mechanism; this decides what a command does when it
cannot have it: refuse when another agent holds it, and for ``recover`` under NOSPACE (when etcd
grants no lease at all) claim a recovery slot instead (nospace_slots.py), so that one agent
recovers per incident. Without slots (no daemon keeps them) an operator's or a CronJob's
recovery goes on unlocked, after checking that nobody else is at work.
"""

from __future__ import annotations

import structlog

from etcdagent.act.executor import Executor
from etcdagent.act.lock import MaintenanceLock, current_holder, default_holder
from etcdagent.act.nospace_slots import NoSlotError, RecoveryClaim
from etcdagent.act.run_report import RunReport
from etcdagent.errors import EtcdNoSpaceError, LockBusyError
from etcdagent.settings import Settings

log = structlog.get_logger(__name__)


class SweepLock:
    """Holds the maintenance lock (or a NOSPACE recovery slot) for one command's steps."""

    def __init__(self, executor: Executor, settings: Settings, *, unlocked_fallback: bool) -> None:
        self.executor = executor
        self.settings = settings
        # An operator's `recover` may go on unlocked when no slot is left although daemons keep
        # slots; the daemon and `run --once` never do (they would recover beside each other).
        self.unlocked_fallback = unlocked_fallback
        self._lock: MaintenanceLock | None = None
        self._claim: RecoveryClaim | None = None

    def ensure_held(self) -> None:
        """Raise when the lock (or slot) was taken and has been lost; asked before each step."""
        if self._lock is not None:
            self._lock.ensure_held()
        if self._claim is not None:
            self._claim.ensure_held()

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
            return self._claim_recovery(report)
        self._lock = lock
        return None

    def _claim_recovery(self, report: RunReport) -> str | None:
        """Under NOSPACE: a recovery slot, or (without any) the unlocked recovery's checks."""
        claim = RecoveryClaim(self.executor.lock_members, holder=default_holder(report.command))
        try:
            claim.acquire(self.settings.lock.timeout)
        except LockBusyError as exc:
            report.lock_busy = True
            return str(exc)
        except NoSlotError as exc:
            if exc.keepers and not self.unlocked_fallback:
                return (
                    f"{exc}: every slot of this incident was used (recoveries that were refused "
                    "or whose agent died); not recovering unlocked beside the other agents. "
                    "Fix the cause and run `etcdagent recover` by hand"
                )
            busy = self._others_at_work()
            if busy is None:
                report.notes.append(
                    "the maintenance lock could not be taken (etcd grants no lease under "
                    f"NOSPACE) and {exc}: recovering unlocked, after checking that no other "
                    "agent holds the lock and no member is being defragmented"
                )
            return busy
        busy = self._others_at_work()
        if busy is not None:
            claim.release()
            return busy
        self._claim = claim
        index = claim.slot.index if claim.slot is not None else "?"
        report.notes.append(
            "the maintenance lock could not be taken (etcd grants no lease under NOSPACE): "
            f"recovery slot {index} claimed instead, so no other agent recovers meanwhile"
        )
        return None

    def _others_at_work(self) -> str | None:
        """Why someone else is at work: the lock held from before NOSPACE, or a defrag."""
        snapshot = self.executor.observe()
        for snap in snapshot.voting:
            if snap.metrics is not None and snap.metrics.defrag_inflight:
                return f"{snap.member.display_name} is being defragmented by someone else"
        via = snapshot.answering_voter()
        if via is not None:
            holder = current_holder(self.executor.client_for(via))
            if holder:
                return f"maintenance already running by {holder}"
        return None

    @staticmethod
    def _note_lost(lock: MaintenanceLock, report: RunReport) -> None:
        lost = lock.lost_while_held()
        if lost is None:
            return
        report.notes.append(
            f"the maintenance lock was lost during the run ({lost}): another agent may have "
            "taken it meanwhile; a lock.ttl longer than the leader's slowest keep-alive answer "
            "keeps it"
        )
        log.warning("maintenance lock lost during the run", key=lock.key, why=lost)

    def release(self, report: RunReport | None = None) -> None:
        """Let go; a lock lost during a run that otherwise went well is said in ``report``.

        Its last step can outlive the lock (a leader slow to answer keep-alives lets the lease
        expire during a long defrag): the work is done, so the run still succeeds, but the
        operator learns that another agent may have started meanwhile (its steps held back by
        the defrag fence) and that the lock's TTL is short for this cluster.
        """
        if self._lock is not None:
            if report is not None and report.exit_code == 0:
                self._note_lost(self._lock, report)
            self._lock.release()
            self._lock = None
        if self._claim is not None:
            self._claim.release()
            self._claim = None
