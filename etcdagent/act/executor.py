"""Act: carry out plan steps, the only code that changes etcd.

Each step is re-checked against a fresh snapshot just before it runs (the plan was made from an
older one): gates, quorum, who the leader is now. A step that fails or is refused stops the sweep;
a stop request (SIGINT, SIGTERM) lets the current request finish and starts nothing new. A
defragmentation is never retried: a client-side timeout does not cancel it on the server, so the
member is watched until it answers again and its file size tells what happened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict

from etcdagent.decide.defrag import defrag_timeout
from etcdagent.decide.gates import cluster_gate_failures, quorum_failure
from etcdagent.decide.plan import Step, StepKind
from etcdagent.errors import EtcdAgentError, EtcdUnreachableError
from etcdagent.etcd.client import ClusterClient, MemberClient, utcnow
from etcdagent.observe.gather import take_snapshot
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot
from etcdagent.settings import Settings
from etcdagent.units import format_bytes, format_duration

log = structlog.get_logger()

PROBE_PREFIX = "/etcdagent/probe/"
REFRESH_KEY = "/etcdagent/refresh"


def _compactions_finished(snapshot: ClusterSnapshot) -> dict[int, float]:
    """Per member, how many compactions it has finished since it started."""
    return {
        m.member.id: m.metrics.compaction_duration.count
        for m in snapshot.members
        if m.metrics is not None and m.metrics.compaction_duration is not None
    }


class StepStatus(StrEnum):
    DONE = "done"
    ALREADY_DONE = "already-done"
    SKIPPED = "skipped"
    REFUSED = "refused"
    FAILED = "failed"
    NOT_STARTED = "not-started"


class StepResult(BaseModel):
    """What happened to one step: the numbers an operator checks afterwards."""

    model_config = ConfigDict(frozen=True)

    step: Step
    status: StepStatus
    started_at: datetime | None = None
    duration: float | None = None
    db_size_before: int | None = None
    db_size_after: int | None = None
    db_size_in_use_after: int | None = None
    reclaimed: int | None = None
    message: str = ""
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (StepStatus.DONE, StepStatus.ALREADY_DONE, StepStatus.SKIPPED)


class StepListener:
    """Told about each step as it runs (the human output prints it live)."""

    def started(self, step: Step) -> None:  # pragma: no cover - default does nothing
        """A step begins."""

    def finished(self, result: StepResult) -> None:  # pragma: no cover
        """A step ended, whatever the outcome."""

    def note(self, text: str) -> None:  # pragma: no cover
        """Something worth telling between steps."""


class Executor:
    """Runs steps against the cluster, re-checking the gates before each one."""

    def __init__(
        self,
        cluster: ClusterClient,
        settings: Settings,
        *,
        stop: threading.Event | None = None,
        listener: StepListener | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime] = utcnow,
        ensure_lock: Callable[[], None] = lambda: None,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.stop = stop or threading.Event()
        self.listener = listener or StepListener()
        self.monotonic = monotonic
        self._clock = clock
        self._ensure_lock = ensure_lock
        self.deadline: datetime | None = None  # end of the maintenance window, if any
        self.busy_member: int | None = None  # the member whose requests block right now
        self.last_snapshot: ClusterSnapshot | None = None

    # -- helpers --------------------------------------------------------------------------------

    def wait(self, seconds: float) -> bool:
        """Sleep that a stop request interrupts; True when interrupted."""
        return self.stop.wait(max(0.0, seconds))

    def observe(self, *, with_metrics: bool = True) -> ClusterSnapshot:
        """A fresh snapshot; polling loops pass ``with_metrics=False`` to spare the members."""
        snapshot = take_snapshot(self.cluster, with_metrics=with_metrics)
        self.last_snapshot = snapshot
        return snapshot

    def client_for(self, snap: MemberSnapshot) -> MemberClient:
        if snap.endpoint is None:
            raise EtcdAgentError(f"{snap.member.display_name}: no endpoint to reach it")
        return self.cluster.member(snap.endpoint, snap.member.name)

    def lock_members(self) -> list[MemberClient]:
        """Members the lock may talk to now, answering ones first, never the one being
        defragmented (its requests block until the defrag ends). Called from the lock's renewal
        thread: it reads only the last snapshot reference."""
        snapshot = self.last_snapshot
        busy = self.busy_member
        endpoints: list[str] = []
        if snapshot is not None:
            ranked = sorted(snapshot.voting, key=lambda m: not m.reachable)
            endpoints = [m.endpoint for m in ranked if m.endpoint and m.member.id != busy]
        busy_snap = snapshot.by_id(busy) if snapshot is not None and busy is not None else None
        busy_endpoint = busy_snap.endpoint if busy_snap is not None else None
        for endpoint in self.cluster.endpoints:
            if endpoint not in endpoints and endpoint != busy_endpoint:
                endpoints.append(endpoint)
        return [self.cluster.member(e) for e in endpoints]

    def _result(self, step: Step, status: StepStatus, message: str, **kw: Any) -> StepResult:
        result = StepResult(step=step, status=status, message=message, **kw)
        event = "maintenance step " + status.value
        level = log.info if result.ok else log.warning
        # One event per step: the member, the action, why it was planned, what came of it.
        level(
            event,
            member=step.member_label,
            action=step.kind.value,
            reason=step.reason,
            message=message,
            warning=result.warning,
        )
        self.listener.finished(result)
        return result

    # -- steps ----------------------------------------------------------------------------------

    def run(self, step: Step) -> StepResult:
        """Run one step (after the lock and stop checks); never raises for an etcd failure."""
        if self.stop.is_set():
            return self._result(step, StepStatus.NOT_STARTED, "stop requested before this step")
        try:
            self._ensure_lock()
        except EtcdAgentError as exc:
            return self._result(step, StepStatus.REFUSED, str(exc))
        self.listener.started(step)
        started_at = self._clock()
        t0 = self.monotonic()
        try:
            if step.kind is StepKind.COMPACT:
                return self._compact(step, started_at, t0)
            if step.kind is StepKind.DEFRAG:
                return self._defrag(step, started_at, t0)
            if step.kind is StepKind.MOVE_LEADER:
                return self._move_leader(step, started_at, t0)
            if step.kind is StepKind.DISARM:
                return self._disarm(step, started_at, t0)
            return self._probe(step, started_at, t0)
        except EtcdAgentError as exc:
            return self._result(
                step,
                StepStatus.FAILED,
                str(exc),
                started_at=started_at,
                duration=self.monotonic() - t0,
            )

    def _compact(self, step: Step, started_at: datetime, t0: float) -> StepResult:
        assert step.revision is not None and step.endpoint is not None
        member = self.cluster.member(step.endpoint, step.member_name or "")
        finished_before = _compactions_finished(self.observe())
        fresh = member.compact(step.revision)
        applied = self.wait_compaction_applied(step.revision, finished_before if fresh else None)
        message = (
            f"compacted to revision {step.revision}"
            if fresh
            else f"revision {step.revision} was already compacted"
        )
        warning = None if applied is None else applied
        return self._result(
            step,
            StepStatus.DONE if fresh else StepStatus.ALREADY_DONE,
            message,
            started_at=started_at,
            duration=self.monotonic() - t0,
            warning=warning,
        )

    def wait_compaction_applied(
        self, revision: int, finished_before: dict[int, float] | None = None
    ) -> str | None:
        """Poll the members' metrics until every one has compacted to ``revision``.

        Each member compacts on its own, in the background, after the raft entry commits, and a
        defrag before it finishes reclaims less. Its compact revision is set when the compaction
        is scheduled; the count of etcd_debugging_mvcc_db_compaction_total_duration grows when it
        finishes, so both are checked (the count only when this run's compaction was new).
        Returns a warning when it could not be confirmed in time.
        """
        deadline = self.monotonic() + self.settings.compaction.applied_timeout
        while True:
            snapshot = self.observe()
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
            if not pending:
                return None
            if self.monotonic() >= deadline or self.wait(0.1):
                return "not confirmed applied on: " + ", ".join(pending)

    def refresh_sizes(self, timeout: float = 5.0) -> None:
        """Make the "in use" sizes current before deciding on them.

        etcd updates a member's in-use size at its next backend commit, not at compaction, and
        each member compacts on its own schedule. So: write (and delete) a small key, give the
        backends a commit interval (100 ms by default), and repeat until every member's in-use
        size stays the same twice in a row.
        """
        deadline = self.monotonic() + timeout
        previous: dict[int, int | None] | None = None
        while True:
            snapshot = self.observe(with_metrics=False)
            leader = snapshot.by_id(snapshot.leader_id) if snapshot.leader_id else None
            if leader is None or leader.endpoint is None:
                return
            client = self.client_for(leader)
            client.put(REFRESH_KEY, self._clock().isoformat())
            client.delete(REFRESH_KEY)
            if self.wait(0.15):
                return
            current = {
                m.member.id: m.db_size_in_use for m in self.observe(with_metrics=False).voting
            }
            if current == previous or self.monotonic() >= deadline:
                return
            previous = current

    def _defrag(self, step: Step, started_at: datetime, t0: float) -> StepResult:
        snapshot = self.observe()
        target = snapshot.by_id(step.member_id) if step.member_id is not None else None
        if target is None:
            return self._result(step, StepStatus.REFUSED, "the member left the cluster")
        refusal = cluster_gate_failures(snapshot, self.settings.defrag)
        quorum = None if step.no_spare_ok else quorum_failure(snapshot, target)
        if quorum:
            refusal.append(quorum)
        if refusal:
            return self._result(
                step,
                StepStatus.REFUSED,
                "gate closed: " + "; ".join(refusal),
                started_at=started_at,
            )
        assert target.status is not None
        size_before = target.status.db_size
        if self.deadline is not None:
            estimate = size_before / max(1, self.settings.defrag.estimated_rate)
            if self._clock() + timedelta(seconds=estimate) > self.deadline:
                return self._result(
                    step,
                    StepStatus.SKIPPED,
                    f"would overrun the maintenance window (ends {self.deadline:%H:%M:%S} UTC; "
                    f"estimated {format_duration(estimate)} for {format_bytes(size_before)})",
                    started_at=started_at,
                )
        timeout = defrag_timeout(size_before, self.settings.defrag)
        client = self.client_for(target)
        self.busy_member = target.member.id
        warning: str | None = None
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
                self.busy_member = None
                raise
            # Timed out or cut off on our side: the member may still be defragmenting. Re-check,
            # never resend.
            warning = (
                f"no answer to the defragment request within {format_duration(timeout)}: "
                "waited for the member instead of retrying"
            )
        finally:
            self.busy_member = None
        after = self.wait_recovered(target.member.id)
        if isinstance(after, str):
            return self._result(
                step,
                StepStatus.FAILED,
                after,
                started_at=started_at,
                duration=self.monotonic() - t0,
                db_size_before=size_before,
                warning=warning,
            )
        assert after.status is not None
        size_after = after.status.db_size
        reclaimed = size_before - size_after
        if reclaimed <= 0 and (step.reclaimable or 0) >= 1024**2:
            warning = (warning + "; " if warning else "") + (
                f"the file did not shrink ({format_bytes(size_before)} before, "
                f"{format_bytes(size_after)} after)"
            )
        return self._result(
            step,
            StepStatus.DONE,
            f"{format_bytes(size_before)} -> {format_bytes(size_after)}, reclaimed "
            f"{format_bytes(max(0, reclaimed))}",
            started_at=started_at,
            duration=self.monotonic() - t0,
            db_size_before=size_before,
            db_size_after=size_after,
            db_size_in_use_after=after.status.db_size_in_use,
            reclaimed=max(0, reclaimed),
            warning=warning,
        )

    def wait_recovered(self, member_id: int) -> MemberSnapshot | str:
        """Until the member answers and has applied what the leader had committed; or why not."""
        deadline = self.monotonic() + self.settings.defrag.recovery_timeout
        target_index: int | None = None
        last = "it did not answer"
        while True:
            snapshot = self.observe(with_metrics=False)
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
            if self.monotonic() >= deadline:
                return (
                    f"did not answer and catch up within "
                    f"{format_duration(self.settings.defrag.recovery_timeout)}: {last}"
                )
            self.wait(0.1)  # a stop request does not abandon a member that is coming back

    def _move_leader(self, step: Step, started_at: datetime, t0: float) -> StepResult:
        assert step.target_id is not None and step.member_id is not None
        snapshot = self.observe()
        failures = cluster_gate_failures(snapshot, self.settings.defrag)
        if failures:
            return self._result(
                step,
                StepStatus.REFUSED,
                "gate closed: " + "; ".join(failures),
                started_at=started_at,
            )
        leader = snapshot.by_id(snapshot.leader_id) if snapshot.leader_id else None
        if leader is None or leader.member.id != step.member_id:
            return self._result(
                step,
                StepStatus.SKIPPED,
                "leadership already moved elsewhere",
                started_at=started_at,
                duration=self.monotonic() - t0,
            )
        target = snapshot.by_id(step.target_id)
        if target is None or not target.reachable:
            return self._result(
                step, StepStatus.REFUSED, "the new leader does not answer", started_at=started_at
            )
        self.client_for(leader).move_leader(step.target_id)
        deadline = self.monotonic() + self.settings.defrag.recovery_timeout
        while True:
            snapshot = self.observe(with_metrics=False)
            if snapshot.leader_id == step.target_id and all(
                m.status is not None and m.status.leader == step.target_id
                for m in snapshot.voting
                if m.reachable
            ):
                name = target.member.display_name
                return self._result(
                    step,
                    StepStatus.DONE,
                    f"{name} is the leader now",
                    started_at=started_at,
                    duration=self.monotonic() - t0,
                )
            if self.monotonic() >= deadline:
                return self._result(
                    step,
                    StepStatus.FAILED,
                    "the new leader was not confirmed in time",
                    started_at=started_at,
                    duration=self.monotonic() - t0,
                )
            self.wait(0.05)

    def _disarm(self, step: Step, started_at: datetime, t0: float) -> StepResult:
        """Deactivate every alarm of the planned kind that the alarm list shows now.

        Each member raises its own NOSPACE alarm when it hits the quota, possibly after the plan
        was made, so the list is read again here rather than trusted from the plan.
        """
        assert step.alarm is not None
        snapshot = self.observe(with_metrics=False)
        via = next((m for m in snapshot.voting if m.reachable and m.endpoint), None)
        if via is None:
            return self._result(step, StepStatus.FAILED, "no member answers")
        client = self.client_for(via)
        listed = [a for a in client.alarms() if a.alarm is step.alarm.alarm]
        if not listed:
            return self._result(
                step,
                StepStatus.ALREADY_DONE,
                f"no {step.alarm.alarm.value} alarm is listed",
                started_at=started_at,
                duration=self.monotonic() - t0,
            )
        for alarm in listed:
            client.disarm(alarm)
        remaining = [a for a in client.alarms() if a.alarm is step.alarm.alarm]
        if remaining:
            return self._result(
                step,
                StepStatus.FAILED,
                "still listed after disarming: " + ", ".join(str(a) for a in remaining),
                started_at=started_at,
                duration=self.monotonic() - t0,
            )
        return self._result(
            step,
            StepStatus.DONE,
            "disarmed " + ", ".join(str(a) for a in listed),
            started_at=started_at,
            duration=self.monotonic() - t0,
        )

    def _probe(self, step: Step, started_at: datetime, t0: float) -> StepResult:
        snapshot = self.observe(with_metrics=False)
        leader = snapshot.by_id(snapshot.leader_id) if snapshot.leader_id else None
        via = leader or next((m for m in snapshot.voting if m.reachable), None)
        if via is None:
            return self._result(step, StepStatus.FAILED, "no member answers")
        client = self.client_for(via)
        key = f"{PROBE_PREFIX}{int(self._clock().timestamp() * 1000)}"
        revision = client.put(key, "probe")
        client.delete(key)
        return self._result(
            step,
            StepStatus.DONE,
            f"wrote and deleted {key} (revision {revision})",
            started_at=started_at,
            duration=self.monotonic() - t0,
        )
