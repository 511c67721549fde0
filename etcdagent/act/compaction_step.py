"""The compaction step, and the waits that make its effect visible before anything builds on it.

A compaction request returns once the raft entry commits (with ``physical``, once the member that
served it compacted), but each member compacts on its own, in the background: a defrag before it
finishes reclaims less and runs beside it, and the "in use" sizes a plan reads lag until the next
backend commit. On a large history the request itself can outlast any ordinary timeout, so it has
its own (``compaction.request_timeout``) and a timed-out request is watched like any other: the
step succeeds only once every member has finished compacting (else it fails, and the sweep starts
no defrag), and ``refresh_sizes`` nudges the sizes current before the defrag is decided again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from etcdagent.act.compact_rev_key_move import move_compact_rev_key
from etcdagent.act.step_context import StepContext
from etcdagent.act.step_results import StepResult, StepStatus
from etcdagent.decide.plan import Step
from etcdagent.errors import EtcdError, EtcdNoSpaceError
from etcdagent.etcd.client import MemberClient
from etcdagent.observe.snapshot import ClusterSnapshot

REFRESH_KEY = "/etcdagent/refresh"
SPARE_PREFIX = "/etcdagent/spare/"
SPARE_KEYS = 8
NO_METRICS = " (no metrics)"


def _compactions_finished(snapshot: ClusterSnapshot) -> dict[int, float]:
    """Per member, how many compactions it has finished since it started."""
    return {
        m.member.id: m.metrics.compaction_duration.count
        for m in snapshot.members
        if m.metrics is not None and m.metrics.compaction_duration is not None
    }


def _compacted_revisions(snapshot: ClusterSnapshot) -> dict[int, int]:
    """Per member, the revision its last compaction was scheduled at (etcd sets the gauge then)."""
    return {
        m.member.id: m.metrics.compact_revision
        for m in snapshot.members
        if m.metrics is not None and m.metrics.compact_revision is not None
    }


def _may_still_run(exc: EtcdError) -> bool:
    """A request that timed out client-side: the compaction may have been proposed and run on."""
    text = str(exc).lower()
    return exc.transient and ("timed out" in text or "timeout" in text)


@dataclass(frozen=True)
class _Before:
    """What the members had done before this step's request: a member whose compact revision
    was below the target then must also finish a compaction (its count grows) to count as done."""

    finished: dict[int, float]
    compacted: dict[int, int]

    def must_finish(self, member_id: int, revision: int) -> bool:
        scheduled = self.compacted.get(member_id)
        return member_id in self.finished and (scheduled is None or scheduled < revision)


class CompactionStep:
    """Compacts the keyspace to the planned revision and waits until every member finished it."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx

    def run(self, step: Step, started_at: datetime, t0: float) -> StepResult:
        assert step.revision is not None and step.endpoint is not None
        settings = self.ctx.settings.compaction
        member = self.ctx.cluster.member(step.endpoint, step.member_name or "")
        if step.cas_version is not None:
            moved, version = move_compact_rev_key(member, step.cas_version, step.revision)
            if not moved:
                return self.ctx.result(
                    step,
                    StepStatus.SKIPPED,
                    f"compact_rev_key moved meanwhile (version {step.cas_version} -> {version}): "
                    "kube-apiserver (or another agent) just compacted; not compacting this time",
                    started_at=started_at,
                    duration=self.ctx.elapsed(t0),
                )
        first = self.ctx.observe()
        before = _Before(_compactions_finished(first), _compacted_revisions(first))
        timed_out: str | None = None
        asked = self.ctx.monotonic()
        try:
            fresh = member.compact(step.revision, timeout=settings.request_timeout)
        except EtcdError as exc:
            if not _may_still_run(exc):
                raise
            # Not cancelled on the server: watch it finish, like any other compaction.
            fresh, timed_out = True, str(exc)
        if self.ctx.monotonic() - asked >= settings.request_timeout and timed_out is None:
            # Timed out, then asked again: "already compacted" means by the first request.
            timed_out = f"no answer within {settings.request_timeout:g}s, asked again"
        # New to a member (whoever asked, whatever the answer): this run's compaction.
        fresh = fresh or any(before.must_finish(m, step.revision) for m in before.finished)
        pending, unknown = self.wait_applied(step.revision, before)
        if pending:
            why = f" (the request timed out: {timed_out})" if timed_out else ""
            return self.ctx.result(
                step,
                StepStatus.FAILED,
                f"compaction to revision {step.revision} not finished on every member within "
                f"{settings.applied_timeout:g}s{why}: {pending}; no defrag starts while a "
                "member still compacts",
                started_at=started_at,
                duration=self.ctx.elapsed(t0),
            )
        if timed_out:
            message = (
                f"compacted to revision {step.revision} (the request timed out after "
                f"{settings.request_timeout:g}s; watched until every member finished)"
            )
        elif fresh:
            message = f"compacted to revision {step.revision}"
        else:
            message = f"revision {step.revision} was already compacted"
        # A member whose /metrics do not answer cannot be watched; the defrag fence refuses to
        # defragment it (or anything) while that lasts, so a warning is enough here.
        warning = "not confirmed finished on: " + ", ".join(unknown) if unknown else None
        return self.ctx.result(
            step,
            StepStatus.DONE if fresh else StepStatus.ALREADY_DONE,
            message,
            started_at=started_at,
            duration=self.ctx.elapsed(t0),
            warning=warning,
        )

    def wait_applied(
        self, revision: int, before: _Before | None = None
    ) -> tuple[str | None, list[str]]:
        """Poll the members' metrics until every one has finished compacting to ``revision``.

        Returns who is still compacting when ``compaction.applied_timeout`` ran out (None when
        nobody is), and the members whose /metrics did not answer (they cannot be watched).

        Each member compacts on its own, in the background, after the raft entry commits, and a
        defrag before it finishes reclaims less and runs beside it. Its compact revision is set
        when the compaction is scheduled; the count of etcd_debugging_mvcc_db_compaction_total_
        duration grows when it finishes, so both are checked: the count on every member whose
        compact revision was below the target before the request (whoever's request it was, and
        whether or not that request answered in time).
        """
        deadline = self.ctx.monotonic() + self.ctx.settings.compaction.applied_timeout
        while True:
            pending = self._pending(self.ctx.observe(), revision, before)
            running = [p for p in pending if not p.endswith(NO_METRICS)]
            unknown = [p for p in pending if p.endswith(NO_METRICS)]
            if not pending:
                return None, []
            if self.ctx.monotonic() >= deadline or self.ctx.wait(0.1):
                return ("not finished on: " + ", ".join(running) if running else None), unknown

    @staticmethod
    def _pending(snapshot: ClusterSnapshot, revision: int, before: _Before | None) -> list[str]:
        """The members that answer (learners too: a defrag of theirs must not run beside it
        either) and are not yet done compacting to ``revision``, with why. A member that does
        not answer at all compacts when it is back, and nothing defragments it meanwhile."""
        finished_now = _compactions_finished(snapshot)
        pending: list[str] = []
        for snap in snapshot.members:
            if snap.status is None:
                continue
            name = snap.member.display_name
            member_id = snap.member.id
            if snap.metrics is None or snap.metrics.compact_revision is None:
                pending.append(f"{name}{NO_METRICS}")
            elif snap.metrics.compact_revision < revision:
                pending.append(name)
            elif before is not None and before.must_finish(member_id, revision):
                now = finished_now.get(member_id)
                # A smaller count means the member restarted: it compacted at start-up.
                if now is not None and now == before.finished[member_id]:
                    pending.append(f"{name} (still compacting)")
        return pending

    def _ensure_spares(self, client: MemberClient) -> None:
        """Keep ``SPARE_KEYS`` tiny keys under ``SPARE_PREFIX`` while writes work: deleting one
        is the only write etcd accepts under NOSPACE that leaves the data alone, and it makes
        the members commit, which brings their in-use sizes up to date."""
        have = {kv.key for kv in client.range_prefix(SPARE_PREFIX).kvs}
        for i in range(SPARE_KEYS):
            key = f"{SPARE_PREFIX}{i}"
            if key.encode() not in have:
                client.put(key, "1")

    def _spend_spare(self, client: MemberClient) -> bool:
        """Under NOSPACE: delete one spare key to make every member commit; False if none."""
        for kv in client.range_prefix(SPARE_PREFIX, limit=1).kvs:
            return client.delete(kv.key) > 0
        return False

    def refresh_sizes(self, timeout: float = 5.0) -> bool:
        """Make the "in use" sizes current before deciding on them; False when they may be
        stale (under NOSPACE with no spare key left to delete).

        etcd updates a member's in-use size at its backend commits, and pages freed by the last
        commit (a compaction's last batch: all of a small one) count as in use until the next.
        So: write (and delete) a small key, give the backends a commit interval (100 ms by
        default), and repeat until every member's in-use size stays the same twice in a row.
        Under NOSPACE, where the put is refused, a spare key kept for this is deleted instead
        (NOSPACE recovery decides on these sizes whether a defrag can help at all).
        """
        ctx = self.ctx
        deadline = ctx.monotonic() + timeout
        previous: dict[int, int | None] | None = None
        spares_checked = False
        spent = 0
        while True:
            snapshot = ctx.observe(with_metrics=False)
            leader = snapshot.by_id(snapshot.leader_id) if snapshot.leader_id else None
            if leader is None or leader.endpoint is None:
                return False
            client = ctx.client_for(leader)
            try:
                client.put(REFRESH_KEY, ctx.clock().isoformat())
                client.delete(REFRESH_KEY)
                if not spares_checked:
                    self._ensure_spares(client)
                    spares_checked = True
            except EtcdNoSpaceError:
                # Two commits: pages freed by one are released at the next but one (a reader
                # of the one before may still be open at the next).
                if spent < 2 and not self._spend_spare(client):
                    return spent > 0
                spent += 1
            if ctx.wait(0.15):
                return False
            current = {
                m.member.id: m.db_size_in_use for m in ctx.observe(with_metrics=False).members
            }
            if current == previous or ctx.monotonic() >= deadline:
                return True
            previous = current
