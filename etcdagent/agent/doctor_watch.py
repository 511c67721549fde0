"""The doctor in the daemon: its checks every cycle, on the snapshots the cycle already took.

The only extra requests are the three count-only key ranges, at most every
``doctor.key_count_interval``. The earlier snapshot the checks compare with is the newest one
taken at least ``daemon.lookback`` ago (the oldest kept until one is that old). Nothing here may
break a cycle: a failure is logged and the previous findings stay exported.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime

import structlog

from etcdagent.agent.doctor_metrics import DoctorMetrics
from etcdagent.decide.apiserver import ApiserverCompaction
from etcdagent.decide.doctor.finding import Severity
from etcdagent.decide.doctor.inputs import DoctorInput, WindowRecord
from etcdagent.decide.doctor.run import DoctorReport, run_checks
from etcdagent.errors import EtcdError
from etcdagent.etcd.client import ClusterClient
from etcdagent.models import AlarmType
from etcdagent.observe.key_counts import KeyCounts
from etcdagent.observe.key_counts_read import count_keys
from etcdagent.observe.known_bugs import load_known_bugs
from etcdagent.observe.signals import MemberSignals
from etcdagent.observe.snapshot import ClusterSnapshot
from etcdagent.settings import CompactionMode, Settings

log = structlog.get_logger()

MAX_WINDOWS = 256  # daily windows for months, hourly ones for 10 days (the period is 3)


class DoctorWatch:
    def __init__(
        self, metrics: DoctorMetrics, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.metrics = metrics
        self.monotonic = monotonic
        self._snapshots: deque[tuple[float, ClusterSnapshot]] = deque()
        self._counts: KeyCounts | None = None
        self._counts_error: str | None = None
        self._counted_at: float | None = None
        self.last_report: DoctorReport | None = None
        self._logged: frozenset[tuple[str, str, str | None]] | None = None
        self._nospace: set[int] = set()  # members with a NOSPACE alarm in the last snapshot
        self.nospace_incidents = 0  # NOSPACE alarms seen appearing since start
        self._windows: deque[WindowRecord] = deque(maxlen=MAX_WINDOWS)  # closed, oldest first
        self._open: WindowRecord | None = None  # the window open now

    def track_window(
        self, now: datetime, window_open: bool, gates: Mapping[str, str | None]
    ) -> None:
        """Each cycle: which gates blocked while a window was open (for blocked_windows)."""
        blocking = frozenset(g for g, reason in gates.items() if reason is not None)
        if not window_open:
            if self._open is not None:
                self._windows.append(self._open)
                self._open = None
            return
        if self._open is None:
            self._open = WindowRecord(opened_at=now, cycles=1, blocked_throughout=blocking)
        else:
            self._open = WindowRecord(
                opened_at=self._open.opened_at,
                cycles=self._open.cycles + 1,
                blocked_throughout=self._open.blocked_throughout & blocking,
            )

    @property
    def windows_seen(self) -> tuple[WindowRecord, ...]:
        return (*self._windows, *([self._open] if self._open is not None else []))

    def _before(self, lookback: float, now: float) -> ClusterSnapshot | None:
        old = [i for i, (t, _) in enumerate(self._snapshots) if now - t >= lookback]
        if old:
            for _ in range(old[-1]):
                self._snapshots.popleft()  # older than the one compared with: not needed again
        return self._snapshots[0][1] if self._snapshots else None

    def _count(self, cluster: ClusterClient, snapshot: ClusterSnapshot, every: float) -> None:
        now = self.monotonic()
        if self._counted_at is not None and now - self._counted_at < every:
            return
        self._counted_at = now
        via = snapshot.answering_voter()
        if via is None or via.endpoint is None:
            return
        try:
            self._counts, self._counts_error = count_keys(cluster.member(via.endpoint)), None
        except EtcdError as exc:
            self._counts_error = str(exc)

    def observe(
        self,
        cluster: ClusterClient,
        settings: Settings,
        snapshot: ClusterSnapshot,
        signals: Mapping[int, MemberSignals],
        now: datetime,
        *,
        cluster_request_rate: float | None = None,
        apiserver: ApiserverCompaction | None = None,
        once: bool = False,
    ) -> None:
        try:
            self._observe(
                cluster, settings, snapshot, signals, now, cluster_request_rate, apiserver, once
            )
        except Exception as exc:  # the doctor must never break a cycle
            log.warning("doctor checks failed", error=str(exc))

    def _observe(
        self,
        cluster: ClusterClient,
        settings: Settings,
        snapshot: ClusterSnapshot,
        signals: Mapping[int, MemberSignals],
        now: datetime,
        cluster_request_rate: float | None,
        apiserver: ApiserverCompaction | None,
        once: bool,
    ) -> None:
        self._track_nospace(snapshot)
        mono = self.monotonic()
        before = self._before(settings.daemon.lookback, mono)
        self._snapshots.append((mono, snapshot))
        self._count(cluster, snapshot, settings.doctor.key_count_interval)
        lookback = (
            (snapshot.taken_at - before.taken_at).total_seconds()
            if before is not None
            else settings.daemon.lookback
        )
        doc = DoctorInput(
            after=snapshot,
            before=before,
            settings=settings,
            now=now,
            lookback=max(lookback, 0.0) or settings.daemon.lookback,
            signals=signals,
            cluster_request_rate=cluster_request_rate,
            apiserver=apiserver,
            key_counts=self._counts,
            key_counts_error=self._counts_error,
            known_bugs=load_known_bugs(),
            agent_compacts=not once
            and settings.compaction.mode is not CompactionMode.NEVER
            and settings.daemon.compaction_interval > 0,
            nospace_incidents=self.nospace_incidents,
            windows_seen=self.windows_seen,
        )
        report = run_checks(doc)
        self.last_report = report
        self.metrics.set_findings(report.findings)
        self._log(report)

    def _track_nospace(self, snapshot: ClusterSnapshot) -> None:
        raised = {a.member_id for a in snapshot.alarms if a.alarm is AlarmType.NOSPACE}
        if raised - self._nospace:
            self.nospace_incidents += 1  # one incident however many members raise it at once
        self._nospace = raised

    def _log(self, report: DoctorReport) -> None:
        """One event when the findings above ok change (what came, with evidence and fix)."""
        shown = [f for f in report.findings if f.severity is not Severity.OK]
        key = frozenset((f.check, f.severity.value, f.member) for f in shown)
        if key == self._logged:
            return
        self._logged = key
        log.info(
            "doctor findings",
            worst=report.worst.value,
            findings=[
                {
                    "check": f.check,
                    "severity": f.severity.value,
                    "member": f.member,
                    "summary": f.summary,
                    "action": f.action or None,
                }
                for f in shown
            ],
        )
