"""The compaction step, and the waits that make its effect visible before anything builds on it.

A compaction request returns once the raft entry commits, but each member compacts on its own,
in the background: a defrag before it finishes reclaims less, and the "in use" sizes a plan reads
lag until the next backend commit. So the step waits until every member has finished compacting,
and ``refresh_sizes`` nudges the sizes current before the defrag is decided again.
"""

from __future__ import annotations

from datetime import datetime

from etcdagent.act.step_context import StepContext
from etcdagent.act.step_results import StepResult, StepStatus
from etcdagent.decide.plan import Step
from etcdagent.observe.snapshot import ClusterSnapshot

REFRESH_KEY = "/etcdagent/refresh"


def _compactions_finished(snapshot: ClusterSnapshot) -> dict[int, float]:
    """Per member, how many compactions it has finished since it started."""
    return {
        m.member.id: m.metrics.compaction_duration.count
        for m in snapshot.members
        if m.metrics is not None and m.metrics.compaction_duration is not None
    }


class CompactionStep:
    """Compacts the keyspace to the planned revision and waits until every member applied it."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx

    def run(self, step: Step, started_at: datetime, t0: float) -> StepResult:
        assert step.revision is not None and step.endpoint is not None
        member = self.ctx.cluster.member(step.endpoint, step.member_name or "")
        finished_before = _compactions_finished(self.ctx.observe())
        fresh = member.compact(step.revision)
        applied = self.wait_applied(step.revision, finished_before if fresh else None)
        message = (
            f"compacted to revision {step.revision}"
            if fresh
            else f"revision {step.revision} was already compacted"
        )
        warning = None if applied is None else applied
        return self.ctx.result(
            step,
            StepStatus.DONE if fresh else StepStatus.ALREADY_DONE,
            message,
            started_at=started_at,
            duration=self.ctx.elapsed(t0),
            warning=warning,
        )

    def wait_applied(
        self, revision: int, finished_before: dict[int, float] | None = None
    ) -> str | None:
        """Poll the members' metrics until every one has compacted to ``revision``.

        Each member compacts on its own, in the background, after the raft entry commits, and a
        defrag before it finishes reclaims less. Its compact revision is set when the compaction
        is scheduled; the count of etcd_debugging_mvcc_db_compaction_total_duration grows when it
        finishes, so both are checked (the count only when this run's compaction was new).
        Returns a warning when it could not be confirmed in time.
        """
        deadline = self.ctx.monotonic() + self.ctx.settings.compaction.applied_timeout
        while True:
            pending = self._pending(self.ctx.observe(), revision, finished_before)
            if not pending:
                return None
            if self.ctx.monotonic() >= deadline or self.ctx.wait(0.1):
                return "not confirmed applied on: " + ", ".join(pending)

    @staticmethod
    def _pending(
        snapshot: ClusterSnapshot, revision: int, finished_before: dict[int, float] | None
    ) -> list[str]:
        """The voting members not yet done compacting to ``revision``, with why."""
        finished_now = _compactions_finished(snapshot)
        pending: list[str] = []
        for snap in snapshot.voting:
            name = snap.member.display_name
            if snap.metrics is None or snap.metrics.compact_revision is None:
                pending.append(f"{name} (no metrics)")
            elif snap.metrics.compact_revision < revision:
                pending.append(name)
            elif finished_before is not None and snap.member.id in finished_before:
                before = finished_before[snap.member.id]
                now = finished_now.get(snap.member.id)
                # A smaller count means the member restarted: it compacted at start-up.
                if now is not None and now == before:
                    pending.append(f"{name} (still compacting)")
        return pending

    def refresh_sizes(self, timeout: float = 5.0) -> None:
        """Make the "in use" sizes current before deciding on them.

        etcd updates a member's in-use size at its next backend commit, not at compaction, and
        each member compacts on its own schedule. So: write (and delete) a small key, give the
        backends a commit interval (100 ms by default), and repeat until every member's in-use
        size stays the same twice in a row.
        """
        ctx = self.ctx
        deadline = ctx.monotonic() + timeout
        previous: dict[int, int | None] | None = None
        while True:
            snapshot = ctx.observe(with_metrics=False)
            leader = snapshot.by_id(snapshot.leader_id) if snapshot.leader_id else None
            if leader is None or leader.endpoint is None:
                return
            client = ctx.client_for(leader)
            client.put(REFRESH_KEY, ctx.clock().isoformat())
            client.delete(REFRESH_KEY)
            if ctx.wait(0.15):
                return
            current = {
                m.member.id: m.db_size_in_use for m in ctx.observe(with_metrics=False).voting
            }
            if current == previous or ctx.monotonic() >= deadline:
                return
            previous = current
