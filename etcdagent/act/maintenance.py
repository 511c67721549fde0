"""The maintenance commands: observe, decide, act, for compact, defrag and recover.

This is the code a CronJob, an operator and (later) the daemon all run. Each command takes a
snapshot, asks ``decide`` for a plan, prints or returns it, and in a real run hands the steps to
the executor under the cluster-wide lock. ``dry_run`` stops after the plan: nothing is written,
not even the retention marker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

import structlog
from pydantic import BaseModel, ConfigDict, Field, computed_field

from etcdagent.act.executor import Executor, StepListener, StepResult, StepStatus
from etcdagent.act.lock import MaintenanceLock, current_holder, default_holder
from etcdagent.act.markers import prune_markers, read_markers, write_marker
from etcdagent.decide.compaction import Marker, plan_compaction
from etcdagent.decide.defrag import plan_defrag
from etcdagent.decide.plan import Plan, Step, StepKind
from etcdagent.decide.recovery import plan_recover, recover_disarm_problem
from etcdagent.errors import EtcdError, EtcdNoSpaceError, LockBusyError
from etcdagent.etcd.client import ClusterClient, utcnow
from etcdagent.observe.snapshot import ClusterSnapshot
from etcdagent.settings import Settings

log = structlog.get_logger()


class Outcome(StrEnum):
    DONE = "done"
    NOTHING_TO_DO = "nothing-to-do"
    REFUSED = "refused"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class PhasePlan(BaseModel):
    """A plan with the moment it was decided: a defrag after compaction is decided again on the
    sizes the compaction left."""

    model_config = ConfigDict(frozen=True)

    phase: str
    decided: str
    plan: Plan
    provisional: bool = False  # made before a compaction that will change the sizes


class RunReport(BaseModel):
    """Everything one command did or would do; ``--output json`` prints exactly this."""

    command: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    plans: list[PhasePlan] = Field(default_factory=list)
    results: list[StepResult] = Field(default_factory=list)
    outcome: Outcome = Outcome.NOTHING_TO_DO
    reason: str | None = None
    notes: list[str] = Field(default_factory=list)
    lock_busy: bool = False  # refused only because another agent holds the maintenance lock

    @computed_field  # type: ignore[prop-decorator]
    @property
    def exit_code(self) -> int:
        return 0 if self.outcome in (Outcome.DONE, Outcome.NOTHING_TO_DO) else 1

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reclaimed_total(self) -> int:
        return sum(r.reclaimed or 0 for r in self.results)


class PlanListener(StepListener):
    """Adds the moment a plan is decided to the step events."""

    def plan(self, phase: PhasePlan) -> None:  # pragma: no cover - default does nothing
        """A plan was decided."""


def _step_keys(plan: Plan) -> list[tuple[str, int | None]]:
    return [(step.kind.value, step.member_id) for step in plan.steps]


class Maintenance:
    """Runs one maintenance command against one cluster."""

    def __init__(
        self,
        cluster: ClusterClient,
        settings: Settings,
        *,
        dry_run: bool = False,
        stop: threading.Event | None = None,
        listener: PlanListener | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.dry_run = dry_run
        self.local_member = settings.daemon.local_member
        self.stop = stop or threading.Event()
        self.listener = listener or PlanListener()
        self.clock = clock
        self._lock: MaintenanceLock | None = None
        self.executor = Executor(
            cluster,
            settings,
            stop=self.stop,
            listener=self.listener,
            monotonic=monotonic,
            clock=clock,
            ensure_lock=self._ensure_lock,
        )

    # -- shared pieces --------------------------------------------------------------------------

    def _ensure_lock(self) -> None:
        if self._lock is not None:
            self._lock.ensure_held()

    def _report(self, command: str) -> RunReport:
        return RunReport(command=command, dry_run=self.dry_run, started_at=self.clock())

    def _decided(
        self,
        report: RunReport,
        phase: str,
        decided: str,
        plan: Plan,
        *,
        provisional: bool = False,
    ) -> Plan:
        entry = PhasePlan(phase=phase, decided=decided, plan=plan, provisional=provisional)
        report.plans.append(entry)
        self.listener.plan(entry)
        if plan.refusal:
            log.warning("maintenance refused", command=report.command, reason=plan.refusal)
        return plan

    def _finish(self, report: RunReport, outcome: Outcome, reason: str | None = None) -> RunReport:
        report.outcome = outcome
        report.reason = reason
        report.finished_at = self.clock()
        log.info(
            "maintenance finished",
            command=report.command,
            outcome=outcome.value,
            reason=reason,
            reclaimed=report.reclaimed_total,
            dry_run=self.dry_run,
        )
        return report

    def _markers(self, snapshot: ClusterSnapshot, report: RunReport) -> list[Marker]:
        """Read the retention markers, and in a real run record this moment as a new one."""
        via = next(
            (m for m in snapshot.voting if m.reachable and m.endpoint),
            None,
        )
        if via is None:
            return []
        client = self.executor.client_for(via)
        try:
            markers = read_markers(client)
        except EtcdError as exc:
            report.notes.append(f"retention markers not readable: {exc}")
            return []
        if self.dry_run:
            return markers
        now = self.clock()
        try:
            write_marker(client, now, default_holder(report.command))
            prune_markers(client, markers, now, self.settings.compaction.retain)
        except EtcdError as exc:
            report.notes.append(f"retention marker not written: {exc}")
        return markers

    def _acquire_lock(self, report: RunReport) -> str | None:
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

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _run_steps(self, report: RunReport, steps: list[Step]) -> Outcome | None:
        """Run steps in order; the outcome that ends the run early, or None when all went well.

        The leader is defragmented last even if leadership moved during the sweep: a member that
        became the leader is put back behind the remaining followers once.
        """
        queue = list(steps)
        deferred: set[int] = set()
        while queue:
            step = queue.pop(0)
            remaining_defrags = [s for s in queue if s.kind is StepKind.DEFRAG]
            current = self.executor.last_snapshot
            if (
                step.kind is StepKind.DEFRAG
                and remaining_defrags
                and current is not None
                and step.member_id == current.leader_id
                and step.member_id is not None
                and step.member_id not in deferred
            ):
                deferred.add(step.member_id)
                queue.insert(len(queue), step)
                report.notes.append(
                    f"{step.member_label} became the leader during the sweep: defragmented last"
                )
                continue
            result = self.executor.run(step)
            report.results.append(result)
            if not result.ok:
                for rest in queue:
                    report.results.append(
                        StepResult(
                            step=rest,
                            status=StepStatus.NOT_STARTED,
                            message="not started: an earlier step did not succeed"
                            if result.status is not StepStatus.NOT_STARTED
                            else "stop requested",
                        )
                    )
                if result.status is StepStatus.NOT_STARTED:
                    return Outcome.INTERRUPTED
                return Outcome.REFUSED if result.status is StepStatus.REFUSED else Outcome.FAILED
            more_defrags = any(s.kind is StepKind.DEFRAG for s in queue)
            if step.kind is StepKind.DEFRAG and more_defrags:
                self.listener.note(
                    f"waiting {self.settings.defrag.wait_between:g}s before the next member"
                )
                if self.executor.wait(self.settings.defrag.wait_between):
                    for rest in queue:
                        report.results.append(
                            StepResult(
                                step=rest, status=StepStatus.NOT_STARTED, message="stop requested"
                            )
                        )
                    return Outcome.INTERRUPTED
        return None

    def _end(self, report: RunReport, early: Outcome | None) -> RunReport:
        if early is not None:
            failed = next((r for r in report.results if not r.ok), None)
            reason = failed.message if failed else None
            if early is Outcome.INTERRUPTED:
                reason = "stop requested: " + (
                    f"{sum(r.status is StepStatus.DONE for r in report.results)} step(s) done, "
                    f"{sum(r.status is StepStatus.NOT_STARTED for r in report.results)} not "
                    "started"
                )
            elif failed is not None:
                reason = f"{failed.step.kind.value} {failed.step.member_label}: {failed.message}"
            return self._finish(report, early, reason)
        done = any(r.status is StepStatus.DONE for r in report.results)
        return self._finish(report, Outcome.DONE if done else Outcome.NOTHING_TO_DO)

    # -- commands -------------------------------------------------------------------------------

    def compact(self) -> RunReport:
        report = self._report("compact")
        snapshot = self.executor.observe()
        markers = self._markers(snapshot, report)
        plan = self._decided(
            report,
            "compact",
            "now",
            plan_compaction(snapshot, self.settings, markers, self.clock()),
        )
        if plan.refusal:
            return self._finish(report, Outcome.REFUSED, plan.refusal)
        if plan.nothing_to_do or self.dry_run:
            return self._finish(
                report,
                Outcome.NOTHING_TO_DO if plan.nothing_to_do else Outcome.DONE,
                plan.notes[0] if plan.notes else None,
            )
        early = self._run_steps(report, list(plan.steps))
        if early is None:
            # So that `etcdagent status` right after shows what a defrag would reclaim.
            try:
                self.executor.refresh_sizes()
            except EtcdError as exc:
                report.notes.append(f"sizes not refreshed after compaction: {exc}")
        return self._end(report, early)

    def defrag(self, *, force: bool = False, deadline: datetime | None = None) -> RunReport:
        """Compact (unless disabled), then defragment the members worth it, one at a time.

        ``deadline`` (the end of the maintenance window) keeps a defrag that would overrun it from
        starting.
        """
        report = self._report("defrag")
        self.executor.deadline = deadline
        snapshot = self.executor.observe()
        compaction: Plan | None = None
        if self.settings.defrag.compact_first:
            markers = self._markers(snapshot, report)
            compaction = self._decided(
                report,
                "compact",
                "now",
                plan_compaction(snapshot, self.settings, markers, self.clock()),
            )
            if compaction.refusal:
                return self._finish(report, Outcome.REFUSED, compaction.refusal)
        will_compact = compaction is not None and bool(compaction.steps)
        first = self._decided(
            report,
            "defrag",
            "on today's sizes, before the compaction frees anything; decided again after it"
            if will_compact
            else "now",
            plan_defrag(snapshot, self.settings, force=force, local=self.local_member),
            provisional=will_compact,
        )
        if self.dry_run:
            outcome = (
                Outcome.REFUSED
                if first.refusal
                else (
                    Outcome.NOTHING_TO_DO
                    if first.nothing_to_do and not will_compact
                    else Outcome.DONE
                )
            )
            return self._finish(report, outcome, first.refusal)
        if first.refusal and not will_compact:
            return self._finish(report, Outcome.REFUSED, first.refusal)
        if first.nothing_to_do and not will_compact:
            return self._finish(report, Outcome.NOTHING_TO_DO)
        busy = self._acquire_lock(report)
        if busy is not None:
            return self._finish(report, Outcome.REFUSED, busy)
        try:
            if not will_compact:
                # The plan was made before the lock was ours: another agent may have done (some
                # of) the work meanwhile, so decide again on what the cluster looks like now.
                again = plan_defrag(
                    self.executor.observe(), self.settings, force=force, local=self.local_member
                )
                if _step_keys(again) != _step_keys(first) or again.refusal != first.refusal:
                    first = self._decided(
                        report,
                        "defrag",
                        "again once the lock was ours (the cluster changed)",
                        again,
                    )
                if first.refusal:
                    return self._finish(report, Outcome.REFUSED, first.refusal)
            if compaction is not None and compaction.steps:
                early = self._run_steps(report, list(compaction.steps))
                if early is not None:
                    return self._end(report, early)
                try:
                    self.executor.refresh_sizes()
                except EtcdError as exc:
                    report.notes.append(f"sizes not refreshed after compaction: {exc}")
                snapshot = self.executor.observe()
                plan = self._decided(
                    report,
                    "defrag",
                    "after compaction",
                    plan_defrag(snapshot, self.settings, force=force, local=self.local_member),
                )
            else:
                plan = first
            if plan.refusal:
                return self._finish(report, Outcome.REFUSED, plan.refusal)
            return self._end(report, self._run_steps(report, list(plan.steps)))
        finally:
            self._release_lock()

    def recover(self) -> RunReport:
        report = self._report("recover")
        snapshot = self.executor.observe()
        plan = self._decided(report, "recover", "now", plan_recover(snapshot, self.settings))
        if plan.refusal:
            return self._finish(report, Outcome.REFUSED, plan.refusal)
        if plan.nothing_to_do:
            return self._finish(report, Outcome.NOTHING_TO_DO, plan.notes[0])
        if self.dry_run:
            return self._finish(report, Outcome.DONE)
        busy = self._acquire_lock(report)
        if busy is not None:
            return self._finish(report, Outcome.REFUSED, busy)
        again = plan_recover(self.executor.observe(), self.settings)
        if _step_keys(again) != _step_keys(plan) or again.refusal != plan.refusal:
            plan = self._decided(
                report, "recover", "again once the lock was ours (the cluster changed)", again
            )
            if plan.refusal or plan.nothing_to_do:
                self._release_lock()
                if plan.refusal:
                    return self._finish(report, Outcome.REFUSED, plan.refusal)
                return self._finish(report, Outcome.NOTHING_TO_DO, plan.notes[0])
        try:
            before_disarm = [
                s
                for s in plan.steps
                if s.kind in (StepKind.COMPACT, StepKind.DEFRAG, StepKind.MOVE_LEADER)
            ]
            after = [s for s in plan.steps if s not in before_disarm]
            early = self._run_steps(report, before_disarm)
            if early is not None:
                return self._end(report, early)
            problem = recover_disarm_problem(
                self.executor.observe(), self.settings.defrag.recover_max_quota_use
            )
            if problem is not None:
                for step in after:
                    report.results.append(
                        StepResult(
                            step=step,
                            status=StepStatus.NOT_STARTED,
                            message="not started: " + problem,
                        )
                    )
                return self._finish(
                    report,
                    Outcome.REFUSED,
                    f"the alarm stays armed: {problem}",
                )
            return self._end(report, self._run_steps(report, after))
        finally:
            self._release_lock()
