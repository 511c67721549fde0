"""The defragmentation step: gates, the window, the one request, and the watch until recovery.

A defragmentation is never retried: a client-side timeout does not cancel it on the server, so
the member is watched until it answers again and has caught up, and its file size afterwards
tells what happened. While the request is in flight the member's other requests block too, so
the shared context names it busy and the lock renews through the other members.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from etcdagent.act.consistency_check import ConsistencyChecker
from etcdagent.act.defrag_history import (
    record_defrag_finished,
    record_defrag_started,
    write_through,
)
from etcdagent.act.step_context import StepContext
from etcdagent.act.step_results import ConsistencyResult, StepResult, StepStatus
from etcdagent.decide.defrag import defrag_timeout
from etcdagent.decide.defrag_budget import estimate_defrag_seconds
from etcdagent.decide.fence import fence_refusal
from etcdagent.decide.gates import cluster_gate_failures, quorum_failure
from etcdagent.decide.plan import Step
from etcdagent.errors import EtcdError, EtcdUnreachableError
from etcdagent.etcd.client import MemberClient
from etcdagent.observe.snapshot import DefragRecord, MemberSnapshot
from etcdagent.units import format_bytes, format_duration

log = structlog.get_logger()


class DefragStep:
    """Defragments one member after re-checking the gates, then waits for it to recover."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.deadline: datetime | None = None  # end of the maintenance window, if any
        self._consistency = ConsistencyChecker(ctx)

    def run(self, step: Step, started_at: datetime, t0: float) -> StepResult:
        ctx = self.ctx
        snapshot = ctx.observe()
        target = snapshot.by_id(step.member_id) if step.member_id is not None else None
        if target is None:
            return ctx.result(step, StepStatus.REFUSED, "the member left the cluster")
        refusal = cluster_gate_failures(snapshot, ctx.settings.defrag)
        quorum = None if step.no_spare_ok else quorum_failure(snapshot, target)
        if quorum:
            refusal.append(quorum)
        running = fence_refusal(snapshot)  # on this fresh snapshot, right before the request
        if running is not None:
            refusal.append(running)
        if refusal:
            return ctx.result(
                step,
                StepStatus.REFUSED,
                "gate closed: " + "; ".join(refusal),
                started_at=started_at,
            )
        assert target.status is not None
        size_before = target.status.db_size
        overrun = self._window_overrun(target)
        if overrun is not None:
            return ctx.result(step, StepStatus.SKIPPED, overrun, started_at=started_at)
        in_use_before = target.status.db_size_in_use
        defrag_started = ctx.clock()
        self._record(
            lambda m: record_defrag_started(
                m, target.member.id, size=size_before, in_use=in_use_before,
                started_at=defrag_started,
            )
        )  # fmt: skip
        t_defrag = ctx.monotonic()
        warning = self._defragment(target, size_before)
        request_seconds = ctx.elapsed(t_defrag)
        after = self.wait_recovered(
            target.member.id, size_before=size_before, answered=warning is None
        )
        if not isinstance(after, str):
            # Without an answer, the request's time says nothing: until recovered is the bound.
            seconds = request_seconds if warning is None else ctx.elapsed(t_defrag)
            self._record(
                lambda m: record_defrag_finished(
                    m, target.member.id, size=size_before, in_use=in_use_before,
                    duration=seconds, started_at=defrag_started, finished_at=ctx.clock(),
                )
            )  # fmt: skip
        if isinstance(after, str):
            return ctx.result(
                step,
                StepStatus.FAILED,
                after,
                started_at=started_at,
                duration=ctx.elapsed(t0),
                db_size_before=size_before,
                warning=warning,
            )
        return self._done(step, started_at, t0, size_before, after, warning)

    def _record(self, write: Callable[[MemberClient], DefragRecord]) -> None:
        """Write the member's defrag record (act/defrag_history.py) through any member that
        answers; a failure (NOSPACE, say) is logged, never a reason not to defragment."""
        problem = write_through(self.ctx.lock_members(), write)
        if problem is not None:
            log.warning("defrag record", problem=problem)

    def _window_overrun(self, target: MemberSnapshot) -> str | None:
        """Why the defrag would not end before the maintenance window does, if it would not."""
        if self.deadline is None:
            return None
        estimate = estimate_defrag_seconds(target, self.ctx.settings.defrag)
        if self.ctx.clock() + timedelta(seconds=estimate) <= self.deadline:
            return None
        return (
            f"would overrun the maintenance window (ends {self.deadline:%H:%M:%S} UTC; "
            f"estimated {format_duration(estimate)} for "
            f"{format_bytes(target.db_size_in_use or 0)} in use)"
        )

    def _defragment(self, target: MemberSnapshot, size_before: int) -> str | None:
        """Send the one defragment request; a warning when it got no answer in time.

        Raises only when the member could not be reached at all (nothing was started).
        """
        timeout = defrag_timeout(size_before, self.ctx.settings.defrag)
        client = self.ctx.client_for(target)
        self.ctx.busy_member = target.member.id
        try:
            log.info(
                "defragmenting",
                member=target.member.display_name,
                db_size=size_before,
                timeout=timeout,
            )
            client.defragment(timeout=timeout)
        except EtcdUnreachableError as exc:
            if not exc.transient:
                self.ctx.busy_member = None
                raise
            # Timed out or cut off on our side: the member may still be defragmenting. Re-check,
            # never resend.
            return (
                f"no answer to the defragment request within {format_duration(timeout)}: "
                "waited for the member instead of retrying"
            )
        finally:
            self.ctx.busy_member = None
        return None

    def _done(
        self,
        step: Step,
        started_at: datetime,
        t0: float,
        size_before: int,
        after: MemberSnapshot,
        warning: str | None,
    ) -> StepResult:
        """The result of a defrag the member recovered from: what the file size says, and
        whether its HashKV still matches a peer's (a mismatch fails the step, so the sweep
        stops)."""
        assert after.status is not None
        size_after = after.status.db_size
        reclaimed = size_before - size_after
        if reclaimed <= 0 and (step.reclaimable or 0) >= 1024**2:
            warning = (warning + "; " if warning else "") + (
                f"the file did not shrink ({format_bytes(size_before)} before, "
                f"{format_bytes(size_after)} after)"
            )
        sizes = (
            f"{format_bytes(size_before)} -> {format_bytes(size_after)}, reclaimed "
            f"{format_bytes(max(0, reclaimed))}"
        )
        duration = self.ctx.elapsed(t0)  # the defrag's, without the check
        snapshot = self.ctx.last_snapshot
        check = self._consistency.check(step, snapshot) if snapshot is not None else None
        status, message = StepStatus.DONE, sizes
        if check is not None and check.result is ConsistencyResult.MISMATCH:
            status, message = StepStatus.FAILED, check.message
        elif check is not None and check.result is ConsistencyResult.SKIPPED:
            warning = (warning + "; " if warning else "") + (
                f"consistency check skipped: {check.message}"
            )
        return self.ctx.result(
            step,
            status,
            message,
            started_at=started_at,
            duration=duration,
            db_size_before=size_before,
            db_size_after=size_after,
            db_size_in_use_after=after.status.db_size_in_use,
            reclaimed=max(0, reclaimed),
            warning=warning,
            consistency=check,
        )

    def wait_recovered(
        self, member_id: int, *, size_before: int | None = None, answered: bool = False
    ) -> MemberSnapshot | str:
        """Until the member answers, has applied what the leader had committed, and says its
        defrag is over; or why not.

        Caught up is not enough: on a quiet cluster a member that serves reads while it
        defragments (or a proxy answering for it) is caught up at once, and the next member's
        defrag would start beside its own. So its /metrics must also read
        etcd_disk_defrag_inflight 0; where its etcd lacks the gauge, the defragment request
        must have been answered (``answered``) or the file size differ from ``size_before``.
        """
        ctx = self.ctx
        deadline = ctx.monotonic() + ctx.settings.defrag.recovery_timeout
        target_index: int | None = None
        last = "it did not answer"
        while True:
            interval = 0.1  # status only: cheap
            snapshot = ctx.observe(with_metrics=False)
            snap = snapshot.by_id(member_id)
            leader = snapshot.by_id(snapshot.leader_id) if snapshot.leader_id else None
            if snap is not None and snap.status is not None:
                if target_index is None and leader is not None and leader.status is not None:
                    target_index = leader.status.raft_index
                applied = snap.status.raft_applied_index
                if target_index is not None and applied >= target_index:
                    still = self._still_defragmenting(snap, size_before, answered)
                    if still is None:
                        return snap
                    last = still
                    interval = 0.5  # a /metrics scrape is ~150 KB rendered by the member
                else:
                    last = f"applied index {applied}, leader's commit {target_index}"
            elif snap is not None and snap.error:
                last = snap.error
            if ctx.monotonic() >= deadline:
                return (
                    f"did not answer, catch up and end its defrag within "
                    f"{format_duration(ctx.settings.defrag.recovery_timeout)}: {last}"
                )
            ctx.wait(interval)  # a stop request does not abandon a member that is coming back

    def _still_defragmenting(
        self, snap: MemberSnapshot, size_before: int | None, answered: bool
    ) -> str | None:
        """Why a member that answers and has caught up may still be defragmenting, or None."""
        try:
            metrics = self.ctx.client_for(snap).metrics()
        except EtcdError as exc:
            return f"caught up, but its /metrics do not answer: {exc}"
        if metrics.defrag_inflight is not None:
            return (
                "still defragmenting (etcd_disk_defrag_inflight=1)"
                if metrics.defrag_inflight
                else None
            )
        assert snap.status is not None
        if answered or (size_before is not None and snap.status.db_size != size_before):
            return None
        return (
            "caught up, but its etcd exports no etcd_disk_defrag_inflight and its file size has "
            "not changed yet (the defragment request got no answer)"
        )
