"""One cluster's loop: every interval, watch, decide, act; its health and readiness.

The pass itself (observe, decide, act under the lock, back-off) is
:class:`~etcdagent.agent.cycle.CycleRunner`'s; this module is the loop around it: its thread
and interruptible sleep, its configuration reload, its health for /healthz and /readyz. The
process (agent/process.py) runs one per cluster and owns the signals and the HTTP server:
SIGTERM starts no new step, lets the current one finish or time out, releases the lock and exits
within the grace period; SIGHUP reloads the config file before the next cycle. While the NOSPACE
emergency is on, the pause between cycles watches the alarms (agent/alarm_watch.py): a NOSPACE
raised between cycles starts the next one within about a second, not an interval later.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from etcdagent import __version__
from etcdagent.act.lock import default_holder
from etcdagent.act.nospace_slots import SlotKeeper
from etcdagent.act.run_report import Outcome, RunReport
from etcdagent.agent.alarm_watch import AlarmWatch, NospaceProbe
from etcdagent.agent.cycle import CycleRunner
from etcdagent.agent.http_server import AgentHTTPServer
from etcdagent.clock import utcnow
from etcdagent.decide.defrag_budget import within_grace
from etcdagent.decide.triggers import CycleDecision, Trigger
from etcdagent.errors import ConfigError
from etcdagent.etcd.client import ClusterClient, MemberClient
from etcdagent.observe.signals import SignalHistory
from etcdagent.settings import Settings
from etcdagent.settings.clusters import DEFAULT_CLUSTER

log = structlog.get_logger()


class Daemon(CycleRunner):
    """One agent process: the loop around the cycle, its signals and reloads, its HTTP surface."""

    def __init__(
        self,
        load_settings: Callable[[], Settings],
        *,
        initial: Settings | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        once: bool = False,
        name: str = DEFAULT_CLUSTER,
    ) -> None:
        self.name = name  # the cluster this loop maintains (``clusters:``; else default)
        self._load = load_settings  # called again on SIGHUP
        super().__init__(
            # A defrag must end within the grace period SIGTERM gives (decide/defrag_budget.py).
            within_grace(initial if initial is not None else load_settings()),
            registry=registry,
            clock=clock,
            monotonic=monotonic,
            once=once,
        )
        self.wake = threading.Event()
        self.alarm_watch = AlarmWatch(
            NospaceProbe(self._slot_members), wake=self.wake, monotonic=monotonic
        )
        self._reload = False
        self.started_at: float | None = None
        self.server: AgentHTTPServer | None = None  # the process's, once it serves
        self._keeper: SlotKeeper | None = None

    # -- health ---------------------------------------------------------------------------------

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
        """None when etcd is reachable (the last cycle could observe the cluster, or a step
        since reached it), or while a step runs within its budget: a sweep of multi-minute
        defrags observes again only when it ends, and a rollout must not stall behind it."""
        now = self.monotonic()
        if self.busy_until is not None and now < self.busy_until:
            return None
        if self.last_reachable is None:
            return "etcd not reached yet"
        age = now - self.last_reachable
        if age > 3 * self.settings.daemon.interval + 10:
            return f"etcd not reached for {age:.0f}s"
        return None

    # -- control --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        super().request_stop()
        self.wake.set()

    def request_reload(self) -> None:
        self._reload = True
        self.wake.set()

    def _before_observe(self) -> None:
        # Here, not in the signal handler: a reload never swaps the client under a running step.
        if self._reload:
            self._apply_reload()

    def _apply_reload(self) -> None:
        self._reload = False
        try:
            settings = self._load()
        except ConfigError as exc:
            log.error(
                "configuration reload refused; keeping the running configuration", error=str(exc)
            )
            return
        known = self.cluster.known_urls
        self.cluster.close()
        settings = within_grace(settings)
        self.settings = settings
        self.cluster = ClusterClient(settings, clock=self.clock)
        self.cluster.known_urls = known  # the members found so far still answer discovery
        self.history = SignalHistory(lookback=settings.daemon.lookback)
        log.info("configuration reloaded", config=effective_config(settings))

    # -- running --------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stop.is_set():
            before = self.last_decision
            self.cycle()
            self._log_recovery()
            self.wake.clear()
            if self.stop.is_set():
                break
            if self.watch_alarms(before):
                self.alarm_watch.sleep(self.pause())
            else:
                self.wake.wait(self.pause())

    def watch_alarms(self, before: CycleDecision | None) -> bool:
        """Whether the coming pause should watch for a NOSPACE alarm; ``before`` is the decision
        the loop had before the cycle that just ran (to tell whether that cycle decided at all).

        Not when the last cycle failed (a failing cluster is not watched more closely than its
        back-off says), nor right after a NOSPACE recovery that did not bring writes back
        (refused, failed, another agent's turn): that alarm is the same incident, and waking
        for it every second would repeat the recovery instead of backing off.
        """
        if self.once or not self.settings.emergency.nospace or self.failures:
            return False
        decision = self.last_decision
        if decision is None or decision is before:
            return False  # the cycle decided nothing: it did not get to see the cluster
        if decision.trigger is not Trigger.EMERGENCY_NOSPACE:
            return True
        report = self.last_report
        return report is not None and report.outcome in (Outcome.DONE, Outcome.NOTHING_TO_DO)

    def _log_recovery(self) -> None:
        """After a NOSPACE recovery: how long it took, and how much of that its steps' own work
        (compact, defrags, disarm, probe): the rest is observing, planning and locking."""
        report = self.last_report
        if report is None or report.command != "recover" or not report.results:
            return
        log.info("nospace recovery timing", **recovery_timing(report))

    def start(self) -> threading.Thread:
        """Start this cluster's loop (and its NOSPACE slot keeper) in a thread of its own; the
        process (agent/process.py) serves, handles signals and waits. Every log line of the
        loop and of the threads it starts carries ``cluster``."""
        self.started_at = self.monotonic()
        context = contextvars.copy_context()
        context.run(structlog.contextvars.bind_contextvars, cluster=self.name)
        self._keeper = context.run(self._start_slot_keeper)
        worker = threading.Thread(
            target=context.run, args=(self._loop,), name=f"etcdagent-loop-{self.name}", daemon=True
        )
        worker.start()
        return worker

    def stopped(self, worker: threading.Thread) -> None:
        """After the process stopped waiting for ``worker``: the slot keeper goes, and the
        clients close unless a step still runs in the loop (it exits with the process)."""
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
        if not worker.is_alive():
            self.cluster.close()

    def run(self, *, install_signals: bool = True) -> int:
        """Serve and loop this one cluster until SIGTERM/SIGINT (agent/process.py)."""
        from etcdagent.agent.process import AgentProcess

        return AgentProcess.of(self).run(install_signals=install_signals)

    def run_once(self, *, install_signals: bool = True) -> int:
        """CronJob mode for this one cluster (agent/process.py)."""
        from etcdagent.agent.process import AgentProcess

        return AgentProcess.of(self).run_once(install_signals=install_signals)

    def _start_slot_keeper(self) -> SlotKeeper | None:
        """Keep the NOSPACE recovery slots (act/nospace_slots.py) while this daemon may recover."""
        if not self.settings.emergency.nospace:
            return None
        return SlotKeeper(
            self._slot_members, holder=default_holder("daemon"), ttl=self.settings.lock.ttl
        ).start()

    def _slot_members(self) -> list[MemberClient]:
        """The members seen by the last cycle, then the configured endpoints (read each time:
        a reload swaps the client)."""
        cluster = self.cluster
        endpoints = list(dict.fromkeys([*self.known_endpoints, *cluster.endpoints]))
        return [cluster.member(e) for e in endpoints]

    def pass_once(self) -> int:
        """One pass: two samples (for rates and p99), one decision, its action; 0 or 1.

        A stop asked for (SIGTERM/SIGINT: a Job deadline, a node drain) starts no new step;
        the running one finishes or times out and the lock is released; the result is then 1.
        """
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
        return 0 if ok and not self.stop.is_set() and self.pass_succeeded() else 1


def recovery_timing(report: RunReport) -> dict[str, Any]:
    """A recovery's own durations: every step's, their sum, and the whole run's."""
    timed = [(r, r.duration) for r in report.results if r.duration is not None]
    steps = [
        {
            "action": r.step.kind.value,
            "member": r.step.member_label,
            "status": r.status.value,
            "seconds": round(seconds, 4),
        }
        for r, seconds in timed
    ]
    run = (
        (report.finished_at - report.started_at).total_seconds()
        if report.finished_at is not None
        else None
    )
    return {
        "outcome": report.outcome.value,
        "steps": steps,
        "steps_seconds": round(sum(seconds for _, seconds in timed), 4),
        "run_seconds": None if run is None else round(run, 4),
    }


def effective_config(settings: Settings) -> dict[str, Any]:
    """The configuration as it is in force, for the start-up log; secrets masked."""
    data = settings.model_dump(mode="json")
    auth = data.get("auth", {})
    if auth.get("password") is not None:
        auth["password"] = "[REDACTED]"
    return data
