"""The maintenance commands: observe, decide, act, for compact, defrag and recover.

This is the code a CronJob, an operator and (later) the daemon all run. Each command takes a
snapshot, asks ``decide`` for a plan, prints or returns it, and in a real run hands the steps to
the executor under the cluster-wide lock. ``dry_run`` stops after the plan: nothing is written,
not even the retention marker.

What the report types are and how a report is filled in lives in run_report; how a list of steps
is run (leader last, pauses between members) in step_sweep; the lock's policy in sweep_lock.
Here is only the order of things per command.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from etcdagent.act.compaction_step import SPARE_PREFIX
from etcdagent.act.executor import Executor
from etcdagent.act.lock import current_holder, default_holder
from etcdagent.act.markers import due, prune_markers, read_markers, write_marker
from etcdagent.act.run_report import (
    Outcome,
    PlanListener,
    RunRecorder,
    RunReport,
    mark_not_started,
)
from etcdagent.act.step_sweep import StepSweep
from etcdagent.act.sweep_lock import SweepLock
from etcdagent.clock import utcnow
from etcdagent.decide.apiserver import ApiserverCompaction, KeyWitness, judge_apiserver
from etcdagent.decide.compaction import Marker, Observation, plan_compaction
from etcdagent.decide.defrag import plan_defrag
from etcdagent.decide.plan import Plan, StepKind
from etcdagent.decide.recovery import (
    UNRECOVERABLE,
    Unrecoverable,
    plan_recover,
    recover_disarm_problem,
    unrecoverable,
    unrecoverable_refusal,
)
from etcdagent.errors import EtcdError
from etcdagent.etcd.client import ClusterClient, MemberClient
from etcdagent.observe.compact_rev_key_read import read_compact_rev_key
from etcdagent.observe.snapshot import ClusterSnapshot
from etcdagent.settings import Settings


def _step_keys(plan: Plan) -> list[tuple[str, int | None]]:
    return [(step.kind.value, step.member_id) for step in plan.steps]


def _changed(again: Plan, before: Plan) -> bool:
    """Whether a plan decided again differs in its steps or its refusal from the first one."""
    return _step_keys(again) != _step_keys(before) or again.refusal != before.refusal


STALE_SIZES = (
    "in-use sizes may be stale (etcd updates them at its next commit, and under NOSPACE no spare "
    f"key under {SPARE_PREFIX} was left to delete): whether a defrag can help is decided after "
    "the defrags"
)


def _decided_on_sizes(plan: Plan) -> bool:
    """A recovery plan without compaction that defragments, or refuses on the sizes in use."""
    if any(s.kind is StepKind.COMPACT for s in plan.steps):
        return False
    if plan.refusal is not None:
        return plan.refusal.startswith(UNRECOVERABLE)
    return any(s.kind is StepKind.DEFRAG for s in plan.steps)


def _dry_run_defrag_outcome(first: Plan, will_compact: bool) -> Outcome:
    if first.refusal:
        return Outcome.REFUSED
    if first.nothing_to_do and not will_compact:
        return Outcome.NOTHING_TO_DO
    return Outcome.DONE


class Maintenance:
    """Runs one maintenance command against one cluster."""

    # Set by `recover` when it refused because the data in use fills a quota (the daemon backs
    # off on it and counts it); None otherwise.
    unrecoverable: Unrecoverable | None = None

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
        unlocked_fallback: bool = True,
        observations: Sequence[Observation] = (),
        key_witness: KeyWitness | None = None,
    ) -> None:
        """``observations``: the daemon's own (age, revision) record, checked against the
        retention markers; ``key_witness``: what it saw of compact_rev_key (neither for a
        one-shot command)."""
        self.cluster = cluster
        self.observations = tuple(observations)
        self.key_witness = key_witness
        self.apiserver: ApiserverCompaction | None = None  # the last judgement on the key
        self.settings = settings
        self.dry_run = dry_run
        self.local_member = settings.daemon.local_member
        self.stop = stop or threading.Event()
        self.listener = listener or PlanListener()
        self.clock = clock
        self.executor = Executor(
            cluster,
            settings,
            stop=self.stop,
            listener=self.listener,
            monotonic=monotonic,
            clock=clock,
            ensure_lock=self._ensure_lock,
        )
        self._lock = SweepLock(self.executor, settings, unlocked_fallback=unlocked_fallback)
        self._sweep = StepSweep(self.executor, settings, self.listener)
        self._record = RunRecorder(self.listener, clock, dry_run=dry_run)

    # -- shared pieces --------------------------------------------------------------------------

    def _ensure_lock(self) -> None:
        self._lock.ensure_held()

    def _reader(self, snapshot: ClusterSnapshot) -> MemberClient | None:
        via = snapshot.answering_voter()
        return self.executor.client_for(via) if via is not None else None

    def _markers(self, client: MemberClient, report: RunReport) -> list[Marker]:
        """Read the retention markers, and in a real run record this moment as a new one when
        the newest is old enough (markers are thin: each read asks etcd one age per marker)."""
        try:
            read = read_markers(client)
        except EtcdError as exc:
            report.notes.append(f"retention markers not readable: {exc}")
            return []
        if self.dry_run:
            return read.markers
        retain = self.settings.compaction.retain
        # Also kept: a marker old enough to show compact_rev_key quiet for two intervals.
        horizon = 2 * max(
            self.settings.compaction.apiserver_interval,
            (self.key_witness.interval if self.key_witness else None) or 0.0,
        )
        try:
            written = None
            if due(read.markers, retain):
                # The wall clock goes into the value for humans only; no decision reads it.
                holder = default_holder(report.command)
                written = write_marker(client, retain, holder, self.clock())
            prune_markers(client, read, retain, written, horizons=(horizon,))
        except EtcdError as exc:
            report.notes.append(f"retention marker not written: {exc}")
        return read.markers

    def judge_apiserver(
        self, client: MemberClient, markers: Sequence[Marker]
    ) -> ApiserverCompaction:
        """Whether kube-apiserver compacts, from one read of compact_rev_key."""
        try:
            key = read_compact_rev_key(client)
        except EtcdError as exc:
            judged = judge_apiserver(None, self.settings.compaction, error=str(exc))
        else:
            judged = judge_apiserver(key, self.settings.compaction, markers, self.key_witness)
        self.apiserver = judged
        return judged

    def _decide_compaction(self, report: RunReport, snapshot: ClusterSnapshot) -> Plan:
        client = self._reader(snapshot)
        markers = self._markers(client, report) if client is not None else []
        apiserver = self.judge_apiserver(client, markers) if client is not None else None
        return self._record.decided(
            report,
            "compact",
            "now",
            plan_compaction(snapshot, self.settings, markers, self.observations, apiserver),
        )

    def _run_compaction(self, report: RunReport, plan: Plan) -> Outcome | None:
        """Run the compaction steps; when they all went well, make the sizes current."""
        early = self._sweep.run(report, list(plan.steps))
        if early is None:
            # So that what is decided (or shown by `etcdagent status`) next sees what a defrag
            # would reclaim.
            try:
                self.executor.refresh_sizes()
            except EtcdError as exc:
                report.notes.append(f"sizes not refreshed after compaction: {exc}")
        return early

    # -- commands -------------------------------------------------------------------------------

    def compact(self) -> RunReport:
        report = self._record.start("compact")
        plan = self._decide_compaction(report, self.executor.observe())
        if plan.refusal:
            return self._record.finish(report, Outcome.REFUSED, plan.refusal)
        if plan.nothing_to_do or self.dry_run:
            return self._record.finish(
                report,
                Outcome.NOTHING_TO_DO if plan.nothing_to_do else Outcome.DONE,
                plan.notes[0] if plan.notes else None,
            )
        return self._record.end(report, self._run_compaction(report, plan))

    def defrag(self, *, force: bool = False, deadline: datetime | None = None) -> RunReport:
        """Compact (unless disabled), then defragment the members worth it, one at a time.

        ``deadline`` (the end of the maintenance window) keeps a defrag that would overrun it from
        starting.
        """
        report = self._record.start("defrag")
        self.executor.deadline = deadline
        snapshot = self.executor.observe()
        compaction: Plan | None = None
        if self.settings.defrag.compact_first:
            compaction = self._decide_compaction(report, snapshot)
            if compaction.refusal:
                return self._record.finish(report, Outcome.REFUSED, compaction.refusal)
        will_compact = compaction is not None and bool(compaction.steps)
        first = self._record.decided(
            report,
            "defrag",
            "on today's sizes, before the compaction frees anything; decided again after it"
            if will_compact
            else "now",
            plan_defrag(snapshot, self.settings, force=force, local=self.local_member),
            provisional=will_compact,
        )
        if self.dry_run:
            outcome = _dry_run_defrag_outcome(first, will_compact)
            return self._record.finish(report, outcome, first.refusal)
        if first.refusal and not will_compact:
            holder = self._other_holder(snapshot) if self.settings.lock.timeout > 0 else None
            if holder is None:
                return self._record.finish(report, Outcome.REFUSED, first.refusal)
            # Maybe the other agent's own work: a member it defragments does not answer.
            report.notes.append(
                f"{first.refusal}; {holder} holds the maintenance lock: waiting for it, then "
                "deciding again"
            )
        elif first.nothing_to_do and not will_compact:
            return self._record.finish(report, Outcome.NOTHING_TO_DO)
        busy = self._lock.acquire(report)
        if busy is not None:
            return self._record.finish(report, Outcome.REFUSED, busy)
        try:
            if will_compact:
                assert compaction is not None
                return self._compact_then_defrag(report, compaction, force=force)
            return self._defrag_locked(report, first, force=force)
        finally:
            self._lock.release(report)

    def _other_holder(self, snapshot: ClusterSnapshot) -> str | None:
        """Who holds the maintenance lock now, if anybody (asked of an answering member)."""
        client = self._reader(snapshot)
        if client is None:
            return None
        try:
            return current_holder(client) or None
        except EtcdError:
            return None

    def _defrag_locked(self, report: RunReport, first: Plan, *, force: bool) -> RunReport:
        """With the lock, and no compaction first: decide again, then defragment."""
        # The plan was made before the lock was ours: another agent may have done (some of) the
        # work meanwhile, so decide again on what the cluster looks like now.
        again = plan_defrag(
            self.executor.observe(), self.settings, force=force, local=self.local_member
        )
        plan = first
        if _changed(again, first):
            plan = self._record.decided(
                report, "defrag", "again once the lock was ours (the cluster changed)", again
            )
        if plan.refusal:
            return self._record.finish(report, Outcome.REFUSED, plan.refusal)
        return self._record.end(report, self._sweep.run(report, list(plan.steps)))

    def _compact_then_defrag(
        self, report: RunReport, compaction: Plan, *, force: bool
    ) -> RunReport:
        """With the lock: compact, then decide the defrag on the sizes it left and run it."""
        early = self._run_compaction(report, compaction)
        if early is not None:
            return self._record.end(report, early)
        snapshot = self.executor.observe()
        plan = self._record.decided(
            report,
            "defrag",
            "after compaction",
            plan_defrag(snapshot, self.settings, force=force, local=self.local_member),
        )
        if plan.refusal:
            return self._record.finish(report, Outcome.REFUSED, plan.refusal)
        return self._record.end(report, self._sweep.run(report, list(plan.steps)))

    def recover(self) -> RunReport:
        report = self._record.start("recover")
        self.unrecoverable = None
        snapshot = self.executor.observe()
        first = plan_recover(snapshot, self.settings)
        if not self.dry_run and _decided_on_sizes(first):
            # Already compacted: the plan went by the in-use sizes, which lag until the members
            # commit again. Make them current first (writing nothing), then decide on them:
            # before the lock, so a hopeless recovery does not even claim a recovery slot.
            current = self._refresh_sizes(report)
            snapshot = self.executor.observe()
            first = plan_recover(snapshot, self.settings, sizes_current=current)
        plan = self._record.decided(report, "recover", "now", first)
        if plan.refusal:
            return self._refuse_recovery(report, plan.refusal, snapshot)
        if plan.nothing_to_do:
            return self._record.finish(report, Outcome.NOTHING_TO_DO, plan.notes[0])
        if self.dry_run:
            return self._record.finish(report, Outcome.DONE)
        busy = self._lock.acquire(report)
        if busy is not None:
            return self._record.finish(report, Outcome.REFUSED, busy)
        snapshot = self.executor.observe()
        again = plan_recover(snapshot, self.settings)
        if _changed(again, plan):
            plan = self._record.decided(
                report, "recover", "again once the lock was ours (the cluster changed)", again
            )
            if plan.refusal or plan.nothing_to_do:
                self._lock.release()
                if plan.refusal:
                    return self._refuse_recovery(report, plan.refusal, snapshot)
                return self._record.finish(report, Outcome.NOTHING_TO_DO, plan.notes[0])
        try:
            return self._recover_locked(report, plan)
        finally:
            self._lock.release(report)

    def _refresh_sizes(self, report: RunReport) -> bool:
        """Bring the in-use sizes up to date; False (with a note) when they may be stale."""
        try:
            if self.executor.refresh_sizes():
                return True
            report.notes.append(STALE_SIZES)
        except EtcdError as exc:
            report.notes.append(f"sizes not refreshed: {exc}")
        return False

    def _refuse_recovery(
        self, report: RunReport, refusal: str, snapshot: ClusterSnapshot
    ) -> RunReport:
        """A refused recovery; remembered as unrecoverable when the data in use is the reason."""
        self.unrecoverable = unrecoverable(snapshot, self.settings.defrag.recover_max_quota_use)
        return self._record.finish(report, Outcome.REFUSED, refusal)

    def _recover_locked(self, report: RunReport, plan: Plan) -> RunReport:
        """Compact; decide on the sizes it leaves whether a defrag can help at all; free space;
        disarm (and probe) only once every member's file has room to spare."""
        compaction = [s for s in plan.steps if s.kind is StepKind.COMPACT]
        defrags = [s for s in plan.steps if s.kind in (StepKind.DEFRAG, StepKind.MOVE_LEADER)]
        after = [s for s in plan.steps if s not in compaction and s not in defrags]
        max_use = self.settings.defrag.recover_max_quota_use
        if compaction:
            early = self._sweep.run(report, compaction)
            if early is not None:
                mark_not_started(report, defrags + after, "not started: the compaction did not")
                return self._record.end(report, early)
            current = self._refresh_sizes(report)
            snapshot = self.executor.observe()
            hopeless = unrecoverable(snapshot, max_use) if current else None
            if hopeless is not None:
                refusal = unrecoverable_refusal(list(hopeless.shortfalls), max_use)
                mark_not_started(report, defrags + after, "not started: " + refusal)
                self.unrecoverable = hopeless
                return self._record.finish(report, Outcome.REFUSED, refusal)
        early = self._sweep.run(report, defrags, emergency=True)
        if early is not None:
            return self._record.end(report, early)
        defragmented = self.executor.observe()
        hopeless = unrecoverable(defragmented, max_use)
        if hopeless is not None:
            # Found only now, the sizes before could not be made current: not again for the
            # same sizes (the daemon backs off on it like on a refusal before the defrags).
            self.unrecoverable = hopeless
            refusal = unrecoverable_refusal(list(hopeless.shortfalls), max_use)
            mark_not_started(report, after, "not started: " + refusal)
            return self._record.finish(report, Outcome.REFUSED, refusal)
        problem = recover_disarm_problem(defragmented, max_use)
        if problem is not None:
            mark_not_started(report, after, "not started: " + problem)
            return self._record.finish(
                report,
                Outcome.REFUSED,
                f"the alarm stays armed: {problem}",
            )
        return self._record.end(report, self._sweep.run(report, after))
