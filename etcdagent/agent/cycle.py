"""One pass of the agent: observe the cluster, decide, act under the lock; the back-off after it.

The pass reuses the one-shot commands' code (observe, decide, the executor under the lease lock):
there is one copy of each rule and gate. It never raises: a failed pass is logged, counted and
followed by a longer pause. Threads, signals, reloads and the HTTP surface are the process's
business (:class:`~etcdagent.agent.daemon.Daemon`), not the pass's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from prometheus_client import CollectorRegistry, disable_created_metrics

from etcdagent.act.lock import current_holder
from etcdagent.act.maintenance import Maintenance
from etcdagent.act.run_report import Outcome, PlanListener, RunReport
from etcdagent.act.step_results import StepResult, StepStatus
from etcdagent.agent.compact_rev_key_log import CompactRevKeyLog
from etcdagent.agent.doctor_watch import DoctorWatch
from etcdagent.agent.metrics import AgentMetrics
from etcdagent.agent.nospace_backoff import NospaceBackoff
from etcdagent.agent.revision_log import RevisionLog
from etcdagent.clock import utcnow
from etcdagent.decide.apiserver import ApiserverCompaction, judge_apiserver
from etcdagent.decide.compaction import current_revision
from etcdagent.decide.gates import local_member_unmatched
from etcdagent.decide.plan import Step
from etcdagent.decide.triggers import Action, CycleDecision, Trigger, decide_cycle
from etcdagent.decide.windows import WindowState, describe, window_state
from etcdagent.errors import ClusterUnavailableError, EtcdAgentError, EtcdError
from etcdagent.etcd.client import ClusterClient
from etcdagent.observe.compact_rev_key_read import read_compact_rev_key
from etcdagent.observe.gather import take_snapshot
from etcdagent.observe.signals import SignalHistory
from etcdagent.observe.snapshot import ClusterSnapshot
from etcdagent.settings import Settings

log = structlog.get_logger()


class _Heartbeat(PlanListener):
    """Keeps /healthz and /readyz green while a long step (a multi-minute defrag) is
    legitimately running: the cycle observes again only after the sweep."""

    def __init__(self, runner: CycleRunner) -> None:
        self.runner = runner

    def started(self, step: Step) -> None:
        settings = self.runner.settings
        budget = (step.timeout or settings.connection.request_timeout) + (
            settings.defrag.recovery_timeout + 3 * settings.daemon.interval
        )
        self.runner.busy_until = self.runner.monotonic() + budget

    def finished(self, result: StepResult) -> None:
        self.runner.busy_until = None
        self.runner.beat()
        if result.status in (StepStatus.DONE, StepStatus.ALREADY_DONE):
            self.runner.last_reachable = self.runner.monotonic()  # the step reached etcd


class CycleRunner:
    """The watch, decide, act pass and the state the agent keeps from one pass to the next."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        once: bool = False,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.once = once
        # No `*_created` series beside every counter: they double the exposition for nothing an
        # alert or dashboard here uses.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        self.metrics = AgentMetrics(self.registry)
        self.history = SignalHistory(lookback=self.settings.daemon.lookback)
        # Which revision was current when, by the monotonic clock: checks the retention markers.
        self.revision_log = RevisionLog(monotonic)
        # When kube-apiserver's compact_rev_key last moved, by the monotonic clock.
        self.key_log = CompactRevKeyLog(monotonic)
        self.apiserver: ApiserverCompaction | None = None  # this cycle's judgement
        self.doctor = DoctorWatch(self.metrics.doctor, monotonic)  # `doctor` checks per cycle
        self.cluster = ClusterClient(self.settings, clock=clock)
        self.stop = threading.Event()
        # When the last compaction was decided on, by this process's monotonic clock: a wall
        # clock stepped back must not hold the compaction cadence for as long as the step.
        self.last_compaction_at: float | None = None
        self.last_beat: float | None = None
        self.last_reachable: float | None = None
        self.busy_until: float | None = None
        self.failures = 0
        self.cluster_id: int | None = None
        self.last_decision: CycleDecision | None = None
        self.last_report: RunReport | None = None
        self.known_endpoints: tuple[str, ...] = ()  # the members' URLs, as the last cycle saw
        self.nospace_backoff = NospaceBackoff()  # a recovery refused as unrecoverable
        self._snapshot: ClusterSnapshot | None = None  # this cycle's observation
        self._last_logged: tuple[object, ...] | None = None
        self._local_unmatched: str | None = None  # why --local-member names no member, if so

    def last_compaction(self, now: datetime) -> datetime | None:
        """The last compaction decision as a time before ``now``, aged by the monotonic clock."""
        if self.last_compaction_at is None:
            return None
        return now - timedelta(seconds=max(0.0, self.monotonic() - self.last_compaction_at))

    def beat(self) -> None:
        self.last_beat = self.monotonic()

    def request_stop(self) -> None:
        """Start no new step; the running one finishes or times out."""
        self.stop.set()

    # -- one cycle ------------------------------------------------------------------------------

    def cycle(self) -> bool:
        """One watch, decide, act pass. Never raises: failures are logged and counted."""
        started = self.monotonic()
        now = self.clock()
        error_kind: str | None = None
        self.last_report = None
        try:
            self._before_observe()
            self._watch_decide_act(now)
        except ClusterUnavailableError as exc:
            error_kind = "unreachable" if exc.transient else "config"
            self.metrics.mark_unreachable()
            log.warning(
                "cycle failed: cluster unreachable"
                if exc.transient
                else "cycle failed: no endpoint can be used (check the configuration)",
                error=str(exc),
            )
        except EtcdAgentError as exc:
            error_kind = "etcd"
            log.warning("cycle failed", error=str(exc))
        except Exception as exc:  # the loop must survive a bug; the traceback goes to the log
            error_kind = "internal"
            log.exception("cycle failed with an internal error", error=str(exc))
        ok = error_kind is None
        self.failures = 0 if ok else self.failures + 1
        self.metrics.cycle_finished(ok, self.monotonic() - started, self.clock(), error_kind)
        self.beat()
        return ok

    def _before_observe(self) -> None:
        """Runs first in every cycle, inside its error handling (the daemon reloads here)."""

    def _watch_decide_act(self, now: datetime) -> None:
        snapshot = take_snapshot(self.cluster)
        self._check_cluster_id(snapshot)
        self.revision_log.record(current_revision(snapshot))
        self._read_compact_rev_key(snapshot)
        self.known_endpoints = tuple(m.endpoint for m in snapshot.voting if m.endpoint)
        # Decide at the time of the observation: samples stamped after a `now` taken before
        # the scrape would count as "from the future" and be left out.
        now = max(now, snapshot.taken_at)
        self.last_reachable = self.monotonic()
        self._count_errors(snapshot)
        self.history.observe(snapshot)
        signals = self.history.signals(now)
        self.metrics.observe_snapshot(snapshot, signals)
        self._local_member_observed(snapshot)
        window = self._window(now)
        self.metrics.set_window(window.open, window.next_start)
        decision = decide_cycle(
            snapshot,
            signals,
            self.settings,
            window,
            now,
            cluster_request_rate=self.history.cluster_request_rate(now),
            last_compaction=self.last_compaction(now),
        )
        self.last_decision = decision
        self.metrics.set_gates(decision.gates)
        self.doctor.track_window(now, window.open, decision.gates)
        self.doctor.observe(
            self.cluster, self.settings, snapshot, signals, now,
            cluster_request_rate=self.history.cluster_request_rate(now),
            apiserver=self.apiserver, once=self.once,
        )  # fmt: skip
        self._log_decision(decision, window)
        if self.once and decision.action is None and window.open and decision.blocking:
            self._log_other_holder(snapshot)
        self._nospace_observed(snapshot)
        self.last_report = self._act(decision, window)

    def _log_other_holder(self, snapshot: ClusterSnapshot) -> None:
        """`run --once` blocked by a gate: say so when another agent holds the lock, whose work
        (a member it defragments not answering) may be what blocks this pass."""
        via = snapshot.answering_voter()
        if via is None or via.endpoint is None:
            return
        try:
            holder = current_holder(self.cluster.member(via.endpoint, via.member.name))
        except EtcdError:
            return
        if holder:
            log.info(
                "another agent is maintaining the cluster; this pass is blocked meanwhile",
                reason=f"maintenance already running by {holder}",
            )

    def _read_compact_rev_key(self, snapshot: ClusterSnapshot) -> None:
        """Every cycle: the daemon's witness of how long compact_rev_key has been quiet (the
        markers alone prove a quiet key only once one older than two intervals exists)."""
        via = snapshot.answering_voter()
        if via is None or via.endpoint is None:
            return
        settings = self.settings.compaction
        try:
            key = read_compact_rev_key(self.cluster.member(via.endpoint, via.member.name))
        except EtcdError as exc:
            log.debug("compact_rev_key not read", error=str(exc))
            self.apiserver = judge_apiserver(None, settings, error=str(exc))
        else:
            self.key_log.record(key)
            self.apiserver = judge_apiserver(key, settings, witness=self.key_log.witness())
        self.metrics.apiserver.set(self.apiserver)

    def _check_cluster_id(self, snapshot: ClusterSnapshot) -> None:
        """Refuse to watch (let alone maintain) a different cluster than the one first seen:
        an endpoint reused by another cluster must not get its members defragmented."""
        if self.cluster_id is None:
            self.cluster_id = snapshot.cluster_id
        elif snapshot.cluster_id != self.cluster_id:
            raise EtcdAgentError(
                f"the endpoints now answer for cluster {snapshot.cluster_id:x}, not "
                f"{self.cluster_id:x} seen at start: refusing to act (restart the agent if the "
                "cluster was really replaced)"
            )

    def _count_errors(self, snapshot: ClusterSnapshot) -> None:
        for snap in snapshot.members:
            name = snap.member.display_name
            if snap.error:
                self.metrics.request_error(name)
            elif snap.metrics_error:
                self.metrics.scrape_error(name)

    def _window(self, now: datetime) -> WindowState:
        if self.once and not self.settings.windows:
            # A CronJob's schedule is its window: with none configured, the pass may maintain.
            return WindowState(open=True, window=None, ends_at=None, next_start=None)
        return window_state(self.settings.windows, now)

    def _log_decision(self, decision: CycleDecision, window: WindowState) -> None:
        key = (decision.action, decision.trigger, tuple(sorted(decision.blocking)), window.open)
        fields = {
            "action": decision.action.value if decision.action else None,
            "trigger": decision.trigger.value if decision.trigger else None,
            "blocking": decision.blocking,
            "window": describe(window),
            "reasons": list(decision.reasons),
        }
        # One event per decision, at info when it changes, so a quiet cluster is a quiet log.
        if key != self._last_logged or decision.action is not None:
            log.info("decision", **fields)
        else:
            log.debug("decision", **fields)
        self._last_logged = key

    # -- acting ---------------------------------------------------------------------------------

    def _maintenance(self, *, compact_first: bool = True) -> Maintenance:
        # The daemon never waits for another replica's lock: it tries again next cycle. Inside
        # a window it compacts on the periodic cadence, not on every cycle of the window.
        # `run --once` is a CronJob: it waits for the lock like the one-shot commands.
        lock_timeout = self.settings.lock.timeout if self.once else 0.0
        settings = self.settings.model_copy(
            update={
                "lock": self.settings.lock.model_copy(update={"timeout": lock_timeout}),
                "defrag": self.settings.defrag.model_copy(
                    update={"compact_first": self.settings.defrag.compact_first and compact_first}
                ),
            }
        )
        return Maintenance(
            self.cluster,
            settings,
            stop=self.stop,
            listener=_Heartbeat(self),
            clock=self.clock,
            monotonic=self.monotonic,
            # Under NOSPACE with every recovery slot used, a replica or CronJob never recovers
            # unlocked beside the others (nospace_slots); an operator's `recover` may.
            unlocked_fallback=False,
            observations=self.revision_log.observations(),
            key_witness=self.key_log.witness(),
        )

    def _act(self, decision: CycleDecision, window: WindowState) -> RunReport | None:
        if self.stop.is_set():
            return None
        maintenance = self._maintenance(
            compact_first=decision.compact_due or decision.trigger is Trigger.EMERGENCY_QUOTA
        )
        if decision.action is Action.RECOVER:
            held = self._nospace_hold()
            if held is not None:
                log.info("NOSPACE recovery backed off", reason=held)
                return None
            report = maintenance.recover()
            if not report.lock_busy:
                self._nospace_attempted(maintenance)
        elif decision.action is Action.MAINTAIN:
            deadline = window.ends_at if decision.trigger is Trigger.WINDOW else None
            report = maintenance.defrag(deadline=deadline)
        elif decision.compact:
            report = maintenance.compact()
        else:
            return None
        if report.lock_busy and not self.once:
            # Another replica is maintaining the cluster: not a refusal, just not our turn.
            log.info("another agent is maintaining the cluster; skipping", reason=report.reason)
            return report
        trigger = decision.trigger.value if decision.trigger else "periodic"
        if self.once and decision.trigger is Trigger.WINDOW and not self.settings.windows:
            trigger = "once"
        self.metrics.record_report(report, trigger)
        if any(p.phase == "compact" for p in report.plans):
            # Decided on (done, or nothing old enough yet): the cadence restarts either way.
            self.last_compaction_at = self.monotonic()
        log.info(
            "maintenance run",
            trigger=trigger,
            outcome=report.outcome.value,
            reason=report.reason,
            reclaimed=report.reclaimed_total,
        )
        return report

    def _local_member_observed(self, snapshot: ClusterSnapshot) -> None:
        """``--local-member`` checked on every cycle (members come and go): naming no member is
        a metric and an error in the log when it starts, never a replica silently idle."""
        local = self.settings.daemon.local_member
        problem = local_member_unmatched(snapshot, local) if local is not None else None
        self.metrics.set_local_member_unmatched(problem is not None)
        if problem is not None and self._local_unmatched is None:
            log.error(
                "local member names no member: this replica defragments nothing", error=problem
            )
        elif problem is None and self._local_unmatched is not None:
            log.info("local member names a member again", local_member=local)
        self._local_unmatched = problem

    def _nospace_observed(self, snapshot: ClusterSnapshot) -> None:
        self._snapshot = snapshot
        if self.nospace_backoff.alarm_gone(snapshot):
            self.metrics.record_nospace(None, counted=False)

    def _nospace_hold(self) -> str | None:
        """Why not to recover this cycle: refused as unrecoverable on the same sizes, recently."""
        if self._snapshot is None:
            return None
        retry = self.settings.defrag.recover_retry_unrecoverable
        return self.nospace_backoff.hold(self._snapshot, self.monotonic(), retry)

    def _nospace_attempted(self, maintenance: Maintenance) -> None:
        refused = maintenance.unrecoverable
        self.nospace_backoff.attempted(refused, self.monotonic())
        self.metrics.record_nospace(refused)
        if refused is not None:
            log.warning(
                "NOSPACE not recoverable: delete data or raise the quota",
                members={
                    s.member_name: {
                        "in_use": s.in_use,
                        "quota": s.quota,
                        "delete_bytes": s.to_delete,
                        "quota_needed": s.quota_needed,
                    }
                    for s in refused.shortfalls
                },
            )

    # -- between cycles and after the last ------------------------------------------------------

    def pause(self) -> float:
        """Seconds until the next cycle: the interval, doubled per consecutive failure."""
        interval = self.settings.daemon.interval
        if self.failures == 0:
            return interval
        backoff = interval * 2.0 ** min(self.failures, 16)
        # Never sooner than a healthy cycle: a failing cluster is not watched more closely.
        return float(max(interval, min(self.settings.daemon.error_backoff_max, backoff)))

    def pass_succeeded(self) -> bool:
        """For `run --once`: no failed or refused maintenance, and nothing due left blocked."""
        report = self.last_report
        if report is not None:
            return report.outcome in (Outcome.DONE, Outcome.NOTHING_TO_DO)
        decision = self.last_decision
        if decision is None:
            return False
        due = (
            decision.trigger is not None
            or decision.pending is not None
            or self._window(self.clock()).open
        )
        return not (due and decision.blocking)
