"""The steps that act on the cluster as a whole rather than on a member's data file.

Moving the leadership away before the leader is defragmented, deactivating alarms, and the write
probe that shows the cluster takes writes again: each reads the cluster afresh just before it
acts, because the plan was made from an older snapshot.
"""

from __future__ import annotations

from datetime import datetime

from etcdagent.act.step_context import StepContext
from etcdagent.act.step_results import StepResult, StepStatus
from etcdagent.decide.fence import fence_refusal
from etcdagent.decide.gates import cluster_gate_failures
from etcdagent.decide.plan import Step

PROBE_PREFIX = "/etcdagent/probe/"


class MoveLeaderStep:
    """Hands the leadership to the planned member and waits until every member agrees."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx

    def run(self, step: Step, started_at: datetime, t0: float) -> StepResult:
        assert step.target_id is not None and step.member_id is not None
        ctx = self.ctx
        snapshot = ctx.observe()
        failures = cluster_gate_failures(snapshot, ctx.settings.defrag)
        running = fence_refusal(snapshot)  # the move starts the leader's defrag: not beside one
        if running is not None:
            failures.append(running)
        if failures:
            return ctx.result(
                step,
                StepStatus.REFUSED,
                "gate closed: " + "; ".join(failures),
                started_at=started_at,
            )
        leader = snapshot.by_id(snapshot.leader_id) if snapshot.leader_id else None
        if leader is None or leader.member.id != step.member_id:
            return ctx.result(
                step,
                StepStatus.SKIPPED,
                "leadership already moved elsewhere",
                started_at=started_at,
                duration=ctx.elapsed(t0),
            )
        target = snapshot.by_id(step.target_id)
        if target is None or not target.reachable:
            return ctx.result(
                step, StepStatus.REFUSED, "the new leader does not answer", started_at=started_at
            )
        ctx.client_for(leader).move_leader(step.target_id)
        if self._wait_confirmed(step.target_id):
            return ctx.result(
                step,
                StepStatus.DONE,
                f"{target.member.display_name} is the leader now",
                started_at=started_at,
                duration=ctx.elapsed(t0),
            )
        return ctx.result(
            step,
            StepStatus.FAILED,
            "the new leader was not confirmed in time",
            started_at=started_at,
            duration=ctx.elapsed(t0),
        )

    def _wait_confirmed(self, target_id: int) -> bool:
        """Until the new leader leads and every voting member answers and follows it; False
        on timeout. Every one, not every answering one: the old leader may not answer for a
        moment while it steps down, and the defrag that follows would then be refused for it."""
        ctx = self.ctx
        deadline = ctx.monotonic() + ctx.settings.defrag.recovery_timeout
        while True:
            snapshot = ctx.observe(with_metrics=False)
            if snapshot.leader_id == target_id and all(
                m.status is not None and m.status.leader == target_id for m in snapshot.voting
            ):
                return True
            if ctx.monotonic() >= deadline:
                return False
            ctx.wait(0.05)


class DisarmStep:
    """Deactivates the alarms of the planned kind and checks they are gone."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx

    def run(self, step: Step, started_at: datetime, t0: float) -> StepResult:
        """Deactivate every alarm of the planned kind that the alarm list shows now.

        Each member raises its own NOSPACE alarm when it hits the quota, possibly after the plan
        was made, so the list is read again here rather than trusted from the plan.
        """
        assert step.alarm is not None
        ctx = self.ctx
        snapshot = ctx.observe(with_metrics=False)
        via = snapshot.answering_voter()
        if via is None:
            return ctx.result(step, StepStatus.FAILED, "no member answers")
        client = ctx.client_for(via)
        listed = [a for a in client.alarms() if a.alarm is step.alarm.alarm]
        if not listed:
            return ctx.result(
                step,
                StepStatus.ALREADY_DONE,
                f"no {step.alarm.alarm.value} alarm is listed",
                started_at=started_at,
                duration=ctx.elapsed(t0),
            )
        for alarm in listed:
            client.disarm(alarm)
        remaining = [a for a in client.alarms() if a.alarm is step.alarm.alarm]
        if remaining:
            return ctx.result(
                step,
                StepStatus.FAILED,
                "still listed after disarming: " + ", ".join(str(a) for a in remaining),
                started_at=started_at,
                duration=ctx.elapsed(t0),
            )
        return ctx.result(
            step,
            StepStatus.DONE,
            "disarmed " + ", ".join(str(a) for a in listed),
            started_at=started_at,
            duration=ctx.elapsed(t0),
        )


class ProbeStep:
    """Writes and deletes a key through the leader: proof the cluster takes writes again."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx

    def run(self, step: Step, started_at: datetime, t0: float) -> StepResult:
        ctx = self.ctx
        snapshot = ctx.observe(with_metrics=False)
        leader = snapshot.by_id(snapshot.leader_id) if snapshot.leader_id else None
        via = leader or next((m for m in snapshot.voting if m.reachable), None)
        if via is None:
            return ctx.result(step, StepStatus.FAILED, "no member answers")
        client = ctx.client_for(via)
        key = f"{PROBE_PREFIX}{int(ctx.clock().timestamp() * 1000)}"
        revision = client.put(key, "probe")
        client.delete(key)
        return ctx.result(
            step,
            StepStatus.DONE,
            f"wrote and deleted {key} (revision {revision})",
            started_at=started_at,
            duration=ctx.elapsed(t0),
        )
