"""The agent daemon: every interval, watch, decide, act; expose /metrics, /healthz, /readyz.

The loop reuses the one-shot commands' code (observe, decide, the executor under the lease lock):
there is one copy of each rule and gate. It never dies of an exception: a failed cycle is logged,
counted and followed by a back-off. SIGTERM starts no new step, lets the current one finish or
time out, releases the lock and exits within the grace period; SIGHUP reloads the config file.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, disable_created_metrics

from etcdagent import __version__
from etcdagent.act.maintenance import Maintenance, Outcome, PlanListener, RunReport
from etcdagent.agent.http_server import AgentHTTPServer, push
from etcdagent.agent.metrics import AgentMetrics
from etcdagent.decide.plan import Step
from etcdagent.decide.triggers import Action, CycleDecision, Trigger, decide_cycle
from etcdagent.decide.windows import WindowState, describe, window_state
from etcdagent.errors import ClusterUnavailableError, ConfigError, EtcdAgentError
from etcdagent.etcd.client import ClusterClient, utcnow
from etcdagent.observe.gather import take_snapshot
from etcdagent.observe.signals import SignalHistory
from etcdagent.observe.snapshot import ClusterSnapshot
from etcdagent.settings import Settings

log = structlog.get_logger()


class _Heartbeat(PlanListener):
    """Keeps /healthz green while a long step (a multi-minute defrag) is legitimately running."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def started(self, step: Step) -> None:
        settings = self.daemon.settings
        budget = (step.timeout or settings.connection.request_timeout) + (
            settings.defrag.recovery_timeout + 3 * settings.daemon.interval
        )
        self.daemon.busy_until = self.daemon.monotonic() + budget

    def finished(self, result: Any) -> None:
        self.daemon.busy_until = None
        self.daemon.beat()


class Daemon:
    """One agent process: the loop, its state between cycles, and its HTTP surface."""

    def __init__(
        self,
        load_settings: Callable[[], Settings],
        *,
        initial: Settings | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        once: bool = False,
    ) -> None:
        self._load = load_settings  # called again on SIGHUP
        self.settings = initial if initial is not None else load_settings()
        self.clock = clock
        self.monotonic = monotonic
        self.once = once
        # No `*_created` series beside every counter: they double the exposition for nothing an
        # alert or dashboard here uses.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        self.metrics = AgentMetrics(self.registry)
        self.history = SignalHistory(lookback=self.settings.daemon.lookback)
        self.cluster = ClusterClient(self.settings, clock=clock)
        self.stop = threading.Event()
        self.wake = threading.Event()
        self._reload = False
        self.last_compaction: datetime | None = None
        self.last_beat: float | None = None
        self.last_reachable: float | None = None
        self.busy_until: float | None = None
        self.started_at: float | None = None
        self.failures = 0
        self.cluster_id: int | None = None
        self.last_decision: CycleDecision | None = None
        self.last_report: RunReport | None = None
        self._last_logged: tuple[object, ...] | None = None
        self.server: AgentHTTPServer | None = None

    # -- health ---------------------------------------------------------------------------------

    def beat(self) -> None:
        self.last_beat = self.monotonic()

    def healthy(self) -> str | None:
        """None when the loop is alive (its last cycle is recent, or a long step is within its
        budget), else why not: /healthz answers 503 with it."""
        now = self.monotonic()
        if self.busy_until is not None and now < self.busy_until:
            return None
        limit = 3 * self.settings.daemon.interval + self.settings.connection.request_timeout * 4
        if self.last_beat is None:
            if self.started_at is not None and now - self.started_at < limit:
                return None  # still in its first cycle
            return "no cycle has finished yet"
        age = now - self.last_beat
        if age > limit:
            return f"last cycle finished {age:.0f}s ago (limit {limit:.0f}s)"
        return None

    def ready(self) -> str | None:
        """None when etcd is reachable (the last cycle could observe the cluster)."""
        if self.last_reachable is None:
            return "etcd not reached yet"
        age = self.monotonic() - self.last_reachable
        if age > 3 * self.settings.daemon.interval + 10:
            return f"etcd not reached for {age:.0f}s"
        return None

    # -- control --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stop.set()
        self.wake.set()

    def request_reload(self) -> None:
        self._reload = True
        self.wake.set()

    def _apply_reload(self) -> None:
        self._reload = False
        try:
            settings = self._load()
        except ConfigError as exc:
            log.error(
                "configuration reload refused; keeping the running configuration", error=str(exc)
            )
            return
        self.cluster.close()
        self.settings = settings
        self.cluster = ClusterClient(settings, clock=self.clock)
        self.history = SignalHistory(lookback=settings.daemon.lookback)
        log.info("configuration reloaded", config=effective_config(settings))

    # -- one cycle ------------------------------------------------------------------------------

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
        )

    def _count_errors(self, snapshot: ClusterSnapshot) -> None:
        for snap in snapshot.members:
            name = snap.member.display_name
            if snap.error:
                self.metrics.request_error(name)
            elif snap.metrics_error:
                self.metrics.scrape_error(name)

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

    def _act(self, decision: CycleDecision, window: WindowState) -> RunReport | None:
        if self.stop.is_set():
            return None
        maintenance = self._maintenance(
            compact_first=decision.compact_due or decision.trigger is Trigger.EMERGENCY_QUOTA
        )
        if decision.action is Action.RECOVER:
            report = maintenance.recover()
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
            self.last_compaction = self.clock()
        log.info(
            "maintenance run",
            trigger=trigger,
            outcome=report.outcome.value,
            reason=report.reason,
            reclaimed=report.reclaimed_total,
        )
        return report

    def cycle(self) -> bool:
        """One watch, decide, act pass. Never raises: failures are logged and counted."""
        started = self.monotonic()
        now = self.clock()
        error_kind: str | None = None
        self.last_report = None
        try:
            if self._reload:
                self._apply_reload()
            snapshot = take_snapshot(self.cluster)
            self._check_cluster_id(snapshot)
            # Decide at the time of the observation: samples stamped after a `now` taken before
            # the scrape would count as "from the future" and be left out.
            now = max(now, snapshot.taken_at)
            self.last_reachable = self.monotonic()
            self._count_errors(snapshot)
            self.history.observe(snapshot)
            signals = self.history.signals(now)
            self.metrics.observe_snapshot(snapshot, signals)
            window = self._window(now)
            self.metrics.set_window(window.open, window.next_start)
            decision = decide_cycle(
                snapshot,
                signals,
                self.settings,
                window,
                now,
                cluster_request_rate=self.history.cluster_request_rate(now),
                last_compaction=self.last_compaction,
            )
            self.last_decision = decision
            self.metrics.set_gates(decision.gates)
            self._log_decision(decision, window)
            self.last_report = self._act(decision, window)
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

    def _window(self, now: datetime) -> WindowState:
        if self.once and not self.settings.windows:
            # A CronJob's schedule is its window: with none configured, the pass may maintain.
            return WindowState(open=True, window=None, ends_at=None, next_start=None)
        return window_state(self.settings.windows, now)

    # -- running --------------------------------------------------------------------------------

    def pause(self) -> float:
        """Seconds until the next cycle: the interval, doubled per consecutive failure."""
        interval = self.settings.daemon.interval
        if self.failures == 0:
            return interval
        backoff = interval * 2.0 ** min(self.failures, 16)
        # Never sooner than a healthy cycle: a failing cluster is not watched more closely.
        return float(max(interval, min(self.settings.daemon.error_backoff_max, backoff)))

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.cycle()
            self.wake.clear()
            if self.stop.is_set():
                break
            self.wake.wait(self.pause())

    def run(self, *, install_signals: bool = True) -> int:
        """Serve and loop until SIGTERM/SIGINT; returns the exit code (0)."""
        self.started_at = self.monotonic()
        server = AgentHTTPServer(
            self.settings.daemon.listen, self.registry, healthy=self.healthy, ready=self.ready
        ).start()
        self.server = server
        log.info(
            "etcdagent started",
            version=__version__,
            listen=server.url,
            config=effective_config(self.settings),
        )
        previous: dict[int, Any] = {}
        if install_signals:
            previous = {
                signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: self.request_stop()),
                signal.SIGINT: signal.signal(signal.SIGINT, lambda *_: self.request_stop()),
                signal.SIGHUP: signal.signal(signal.SIGHUP, lambda *_: self.request_reload()),
            }
        worker = threading.Thread(target=self._loop, name="etcdagent-loop", daemon=True)
        worker.start()
        try:
            while worker.is_alive() and not self.stop.is_set():
                worker.join(0.2)
            if worker.is_alive():
                grace = self.settings.daemon.grace_period
                log.info("stopping: no new step starts", grace_period=grace)
                worker.join(grace)
                if worker.is_alive():
                    log.warning(
                        "grace period over with a step still running; exiting anyway (the "
                        "maintenance lock expires by itself with its lease)"
                    )
        finally:
            server.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not worker.is_alive():
            self.cluster.close()
        log.info("etcdagent stopped")
        return 0

    def run_once(self, *, install_signals: bool = True) -> int:
        """CronJob mode: two samples (for rates and p99), one decision, its action, exit code.

        SIGTERM/SIGINT (a Job deadline, a node drain) start no new step; the running one
        finishes or times out and the lock is released; the exit code is then 1.
        """
        previous: dict[int, Any] = {}
        if install_signals:
            previous = {
                sig: signal.signal(sig, lambda *_: self.request_stop())
                for sig in (signal.SIGTERM, signal.SIGINT)
            }
        try:
            return self._run_once()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run_once(self) -> int:
        log.info(
            "etcdagent started (one pass)",
            version=__version__,
            config=effective_config(self.settings),
        )
        self.cycle()
        if not self.stop.is_set():
            gap = min(self.settings.daemon.lookback, self.settings.daemon.interval)
            self.stop.wait(gap)
        ok = self.cycle()
        if self.settings.daemon.pushgateway:
            try:
                push(self.registry, self.settings.daemon.pushgateway)
            except EtcdAgentError as exc:
                log.error("push to the Pushgateway failed", error=str(exc))
                ok = False
        return 0 if ok and not self.stop.is_set() and self.pass_succeeded() else 1

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


def effective_config(settings: Settings) -> dict[str, Any]:
    """The configuration as it is in force, for the start-up log; secrets masked."""
    data = settings.model_dump(mode="json")
    auth = data.get("auth", {})
    if auth.get("password") is not None:
        auth["password"] = "[REDACTED]"
    return data
