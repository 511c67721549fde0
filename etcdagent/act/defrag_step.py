"""The defragmentation step: gates, the window, the one request, and the watch until recovery.

A defragmentation is never retried: a client-side timeout does not cancel it on the server, so
the member is watched until it answers again and has caught up, and its file size afterwards
tells what happened. While the request is in flight the member's other requests block too, so
the shared context names it busy and the lock renews through the other members.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from etcdagent.act.consistency_check import ConsistencyChecker
from etcdagent.act.step_context import StepContext
from etcdagent.act.step_results import ConsistencyResult, StepResult, StepStatus
from etcdagent.decide.defrag import defrag_timeout
from etcdagent.decide.gates import cluster_gate_failures, quorum_failure
from etcdagent.decide.plan import Step
from etcdagent.errors import EtcdUnreachableError
from etcdagent.observe.snapshot import MemberSnapshot
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
        if refusal:
            return ctx.result(
                step,
                StepStatus.REFUSED,
                "gate closed: " + "; ".join(refusal),
                started_at=started_at,
            )
        assert target.status is not None
        size_before = target.status.db_size
        overrun = self._window_overrun(size_before)
        if overrun is not None:
            return ctx.result(step, StepStatus.SKIPPED, overrun, started_at=started_at)
        warning = self._defragment(target, size_before)
        after = self.wait_recovered(target.member.id)
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

    def _window_overrun(self, size_before: int) -> str | None:
        """Why the defrag would not end before the maintenance window does, if it would not."""
        if self.deadline is None:
            return None
        estimate = size_before / max(1, self.ctx.settings.defrag.estimated_rate)
        if self.ctx.clock() + timedelta(seconds=estimate) <= self.deadline:
            return None
        return (
            f"would overrun the maintenance window (ends {self.deadline:%H:%M:%S} UTC; "
            f"estimated {format_duration(estimate)} for {format_bytes(size_before)})"
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

    def wait_recovered(self, member_id: int) -> MemberSnapshot | str:
        """Until the member answers and has applied what the leader had committed; or why not."""
        ctx = self.ctx
        deadline = ctx.monotonic() + ctx.settings.defrag.recovery_timeout
        target_index: int | None = None
        last = "it did not answer"
        while True:
            snapshot = ctx.observe(with_metrics=False)
            snap = snapshot.by_id(member_id)
            leader = snapshot.by_id(snapshot.leader_id) if snapshot.leader_id else None
            if snap is not None and snap.status is not None:
                if target_index is None and leader is not None and leader.status is not None:
                    target_index = leader.status.raft_index
                applied = snap.status.raft_applied_index
                if target_index is not None and applied >= target_index:
                    return snap
                last = f"applied index {applied}, leader's commit {target_index}"
            elif snap is not None and snap.error:
                last = snap.error
            if ctx.monotonic() >= deadline:
                return (
                    f"did not answer and catch up within "
                    f"{format_duration(ctx.settings.defrag.recovery_timeout)}: {last}"
                )
            ctx.wait(0.1)  # a stop request does not abandon a member that is coming back
