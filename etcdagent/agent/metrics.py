"""The agent's own Prometheus metrics: what it sees of the cluster and what it did about it.

Every metric lives on the registry the :class:`AgentMetrics` instance was given (or made), never on
prometheus_client's global one, so tests and several agents in one process do not collide.

Conventions: the ``etcdagent_`` prefix, base units in names (``_bytes``, ``_seconds``, ``_ratio``),
``_total`` counters. Per-member series carry ``member`` (the name) and ``member_id`` (hex, as
etcdctl and etcd's own metrics print it). A value the agent does not know (a member that does not
answer, a latency without enough data, no maintenance window) is an absent series, never NaN and
never a made-up 0: alert on ``absent()`` where absence matters.
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from etcdagent import __version__
from etcdagent.act.executor import StepResult, StepStatus
from etcdagent.act.maintenance import Outcome, RunReport
from etcdagent.decide.plan import StepKind
from etcdagent.models import AlarmType
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot, Role

PREFIX = "etcdagent_"
MEMBER_LABELS = ("member", "member_id")

TRIGGERS = ("window", "emergency-nospace", "emergency-quota", "periodic", "once")
RUN_RESULTS = tuple(o.value for o in Outcome)
COMPACTION_RESULTS = ("done", "already-done", "failed", "refused")
DEFRAG_RESULTS = ("done", "failed", "refused")
ALARM_KINDS = tuple(a.value for a in AlarmType if a is not AlarmType.NONE)

# A defrag takes from ~0.1 s (small file) to tens of minutes (multi-GiB file on slow disks).
DEFRAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800)
# A cycle is usually one snapshot (tens of ms), sometimes a whole maintenance run.
CYCLE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800)

_STATUS_RESULT = {
    StepStatus.DONE: "done",
    StepStatus.ALREADY_DONE: "already-done",
    StepStatus.FAILED: "failed",
    StepStatus.REFUSED: "refused",
}


class MemberSignalsLike(Protocol):
    """What the agent derives per member from successive scrapes (etcdagent.observe.signals)."""

    @property
    def member_id(self) -> int: ...
    @property
    def wal_fsync_p99(self) -> float | None: ...
    @property
    def backend_commit_p99(self) -> float | None: ...
    @property
    def leader_changes(self) -> int | None: ...
    @property
    def request_rate(self) -> float | None: ...
    @property
    def db_growth_rate(self) -> float | None: ...
    @property
    def time_to_quota(self) -> float | None: ...


class MetricDoc(NamedTuple):
    """One metric as an operator sees it on /metrics (counters with their ``_total``)."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...]


# Label names of the metrics AgentMetrics made, by exposed name, per registry: a labelled metric
# with no series yet shows no labels in ``registry.collect()``.
_declared: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, tuple[str, ...]]] = (
    weakref.WeakKeyDictionary()
)


def _exposed_name(family: Metric) -> str:
    if family.type == "counter":
        return family.name + "_total"
    if family.type == "info":
        return family.name + "_info"
    return family.name


def metric_docs(registry: CollectorRegistry) -> list[MetricDoc]:
    """Name, type, help and label names of every metric on ``registry``, sorted by name."""
    declared = _declared.get(registry, {})
    docs: list[MetricDoc] = []
    for family in registry.collect():
        name = _exposed_name(family)
        labels = declared.get(name)
        if labels is None:
            seen: dict[str, None] = {}
            for sample in family.samples:
                for label in sample.labels:
                    if label not in ("le", "quantile"):
                        seen.setdefault(label)
            labels = tuple(seen)
        docs.append(MetricDoc(name, family.type, family.documentation, labels))
    return sorted(docs)


class _OptionalGauge(Collector):
    """An unlabelled gauge that is absent until set, and again after ``clear()``."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._value: float | None = None
        self._lock = threading.Lock()
        registry.register(self)

    def set(self, value: float) -> None:
        with self._lock:
            self._value = float(value)

    def clear(self) -> None:
        with self._lock:
            self._value = None

    @property
    def value(self) -> float | None:
        return self._value

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self._name, self._documentation)]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self._name, self._documentation)
        with self._lock:
            value = self._value
        if value is not None:
            family.add_metric([], value)
        return [family]


def _finite(value: float | None) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return float(value)


def _discard(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


def _member_labels(snap: MemberSnapshot) -> tuple[str, str]:
    # An added-but-unstarted member has no name yet: its hex ID stands in for one.
    return (snap.member.name or snap.member.id_hex, snap.member.id_hex)


def _step_member(result: StepResult) -> tuple[str, str]:
    step = result.step
    member_id = f"{step.member_id:x}" if step.member_id is not None else ""
    return (step.member_name or step.member_label, member_id)


class AgentMetrics:
    """All of the agent's metrics, on one registry; the methods are what the agent loop calls."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, gates: Iterable[str] = ()
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._members: set[tuple[str, str]] = set()
        self._last_leader: int | None = None
        self._gates: set[str] = set()
        declared = _declared.setdefault(self.registry, {})

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
            declared[PREFIX + name] = tuple(labels)
            return Gauge(PREFIX + name, doc, labels, registry=self.registry)

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            assert name.endswith("_total"), name
            declared[PREFIX + name] = tuple(labels)
            return Counter(PREFIX + name, doc, labels, registry=self.registry)

        def histogram(
            name: str, doc: str, buckets: Sequence[float], labels: Sequence[str] = ()
        ) -> Histogram:
            declared[PREFIX + name] = tuple(labels)
            return Histogram(PREFIX + name, doc, labels, registry=self.registry, buckets=buckets)

        def optional(name: str, doc: str) -> _OptionalGauge:
            declared[PREFIX + name] = ()
            return _OptionalGauge(PREFIX + name, doc, self.registry)

        m = MEMBER_LABELS
        # -- per member, from the last snapshot -------------------------------------------------
        self.member_up = gauge(
            "member_up",
            "1 if the member answered the agent's last status request, 0 if it did not.",
            m,
        )
        self.member_db_size = gauge(
            "member_db_size_bytes",
            "Size of the member's backend database file (status dbSize); absent while the "
            "member does not answer.",
            m,
        )
        self.member_db_size_in_use = gauge(
            "member_db_size_in_use_bytes",
            "Bytes of the member's database file in use (status dbSizeInUse); the rest is free "
            "pages a defragmentation would give back. Absent while the member does not answer.",
            m,
        )
        self.member_quota = gauge(
            "member_quota_bytes",
            "The member's backend quota (status dbSizeQuota on etcd 3.6+, else its "
            "etcd_server_quota_backend_bytes metric); absent when unknown.",
            m,
        )
        self.member_fragmentation = gauge(
            "member_fragmentation_ratio",
            "Share of the member's database file that is free pages (0..1): (db size - in use) / "
            "db size. Absent while the member does not answer.",
            m,
        )
        self.member_wal_fsync_p99 = gauge(
            "member_wal_fsync_p99_seconds",
            "99th percentile of the member's WAL fsync latency over the lookback (from "
            "histogram bucket deltas, as histogram_quantile(rate) does); absent while there is "
            "not enough data.",
            m,
        )
        self.member_backend_commit_p99 = gauge(
            "member_backend_commit_p99_seconds",
            "99th percentile of the member's backend commit latency over the lookback (from "
            "histogram bucket deltas, as histogram_quantile(rate) does); absent while there is "
            "not enough data.",
            m,
        )
        self.member_is_leader = gauge(
            "member_is_leader",
            "1 if the member is the leader most answering voting members agree on, else 0.",
            m,
        )
        self.member_alarm_active = gauge(
            "member_alarm_active",
            "1 if an alarm of kind `alarm` (NOSPACE, CORRUPT) is raised on the member, else 0; "
            "absent when no member answered (alarms unknown).",
            (*m, "alarm"),
        )
        self.member_db_growth = gauge(
            "member_db_growth_bytes_per_second",
            "Growth rate of the member's database file over the lookback (least-squares slope "
            "since its last shrink, never negative); absent while there is not enough data.",
            m,
        )
        self.member_time_to_quota = gauge(
            "member_time_to_quota_seconds",
            "Estimated seconds until the member's database file reaches its quota at the current "
            "growth rate; absent when the file is not growing or the quota is unknown.",
            m,
        )
        self.leader_changes = counter(
            "leader_changes_observed_total",
            "Times the agent saw a different leader than in its previous observation.",
        )
        # -- maintenance ----------------------------------------------------------------------
        self.compactions = counter(
            "compactions_total",
            "Compactions the agent asked for, by result: done, already-done (the revision was "
            "already compacted), failed, refused (a gate or the lock refused it).",
            ("result",),
        )
        self.last_compacted_revision = optional(
            "last_compacted_revision",
            "The revision of the agent's last successful (or already done) compaction; absent "
            "until there is one.",
        )
        self.defrags = counter(
            "defragmentations_total",
            "Defragmentations of a member the agent attempted, by result: done, failed, refused "
            "(a safety gate said no just before it).",
            (*m, "result"),
        )
        self.defrag_duration = histogram(
            "defrag_duration_seconds",
            "Duration of the agent's successful defragmentations, from the request until the "
            "member answered again and caught up with the leader.",
            DEFRAG_BUCKETS,
            ("member",),
        )
        self.defrag_reclaimed = counter(
            "defrag_reclaimed_bytes_total",
            "Bytes the member's database file shrank by in the agent's defragmentations.",
            ("member",),
        )
        self.runs = counter(
            "maintenance_runs_total",
            "Maintenance runs by what started them (`trigger`: window, emergency-nospace, "
            "emergency-quota, periodic (compaction), once) and how they ended "
            "(`result`: done, nothing-to-do, refused, failed, interrupted). Dry runs are not "
            "counted.",
            ("trigger", "result"),
        )
        self.gate_blocking = gauge(
            "gate_blocking",
            "1 while the safety gate `gate` blocks maintenance, else 0.",
            ("gate",),
        )
        self.window_open = gauge(
            "maintenance_window_open",
            "1 while a maintenance window is open, else 0.",
        )
        self.window_next_start = optional(
            "maintenance_window_next_start_timestamp_seconds",
            "Unix time the next maintenance window opens; absent when no window is configured.",
        )
        # -- the agent itself -----------------------------------------------------------------
        self.last_success = optional(
            "last_successful_cycle_timestamp_seconds",
            "Unix time the agent's last successful observe/decide cycle finished; absent until "
            "the first one.",
        )
        self.cycle_duration = histogram(
            "cycle_duration_seconds",
            "Duration of the agent's observe/decide(/act) cycles, successful or not.",
            CYCLE_BUCKETS,
        )
        self.cycle_errors = counter(
            "cycle_errors_total",
            "Cycles that ended in an error, by `kind` of error.",
            ("kind",),
        )
        self.scrape_errors = counter(
            "scrape_errors_total",
            "Failed scrapes of a member's /metrics endpoint.",
            ("member",),
        )
        self.request_errors = counter(
            "request_errors_total",
            "Failed API requests (status, member list, maintenance calls) to a member.",
            ("member",),
        )
        self.build_info = gauge(
            "build_info",
            "Always 1; the `version` label is the running etcdagent's version.",
            ("version",),
        )

        # Series that must exist before the first event, so that rate() and alerts see the
        # first increment.
        self.build_info.labels(__version__).set(1)
        for result in COMPACTION_RESULTS:
            self.compactions.labels(result)
        for trigger in TRIGGERS:
            for result in RUN_RESULTS:
                self.runs.labels(trigger, result)
        self.set_gates({gate: None for gate in gates})
        self.window_open.set(0)

    # -- observation ----------------------------------------------------------------------------

    def observe_snapshot(
        self,
        snapshot: ClusterSnapshot,
        signals: Mapping[int, MemberSignalsLike] | None = None,
    ) -> None:
        """Set the per-member gauges from one snapshot (and the signals derived so far).

        Series of members no longer in the snapshot are removed; the leader change counter grows
        when a leader is known and differs from the last one known.
        """
        signals = signals or {}
        with self._lock:
            present: set[tuple[str, str]] = set()
            for snap in snapshot.members:
                labels = _member_labels(snap)
                present.add(labels)
                self._observe_member(snapshot, snap, labels, signals.get(snap.member.id))
            for labels in self._members - present:
                self._remove_member(labels)
            self._members = present

            leader = snapshot.leader_id
            if leader is not None:
                if self._last_leader is not None and leader != self._last_leader:
                    self.leader_changes.inc()
                self._last_leader = leader

    def mark_unreachable(self) -> None:
        """No endpoint answered: every known member is down as far as the agent can tell.

        Without this the gauges would keep the last good cycle's values through a full outage.
        Sizes stay (the last known), up and is-leader drop to 0.
        """
        with self._lock:
            for labels in self._members:
                self.member_up.labels(*labels).set(0)
                self.member_is_leader.labels(*labels).set(0)

    def _observe_member(
        self,
        snapshot: ClusterSnapshot,
        snap: MemberSnapshot,
        labels: tuple[str, str],
        signals: MemberSignalsLike | None,
    ) -> None:
        self.member_up.labels(*labels).set(1 if snap.reachable else 0)
        self.member_is_leader.labels(*labels).set(1 if snapshot.role(snap) is Role.LEADER else 0)
        fragmentation = snap.fragmentation
        values: list[tuple[Gauge, float | None]] = [
            (self.member_db_size, snap.db_size),
            (self.member_db_size_in_use, snap.db_size_in_use),
            (self.member_quota, snap.quota),
            (self.member_fragmentation, fragmentation),
            (self.member_wal_fsync_p99, signals.wal_fsync_p99 if signals else None),
            (self.member_backend_commit_p99, signals.backend_commit_p99 if signals else None),
            (self.member_db_growth, signals.db_growth_rate if signals else None),
            (self.member_time_to_quota, signals.time_to_quota if signals else None),
        ]
        for metric, raw in values:
            value = _finite(raw)
            if value is None:
                _discard(metric, *labels)
            else:
                metric.labels(*labels).set(value)
        if snapshot.alarms_error is not None:
            for kind in ALARM_KINDS:
                _discard(self.member_alarm_active, *labels, kind)
        else:
            raised = {a.alarm.value for a in snapshot.alarms_of(snap)}
            for kind in ALARM_KINDS:
                self.member_alarm_active.labels(*labels, kind).set(1 if kind in raised else 0)

    def _remove_member(self, labels: tuple[str, str]) -> None:
        for metric in self._member_gauges():
            _discard(metric, *labels)
        for kind in ALARM_KINDS:
            _discard(self.member_alarm_active, *labels, kind)

    def _member_gauges(self) -> Iterator[Gauge]:
        yield self.member_up
        yield self.member_is_leader
        yield self.member_db_size
        yield self.member_db_size_in_use
        yield self.member_quota
        yield self.member_fragmentation
        yield self.member_wal_fsync_p99
        yield self.member_backend_commit_p99
        yield self.member_db_growth
        yield self.member_time_to_quota

    # -- maintenance ----------------------------------------------------------------------------

    def record_report(self, report: RunReport, trigger: str) -> None:
        """Count one finished maintenance run and its compactions and defragmentations.

        A dry run changed nothing and is not counted. Steps that never started, or were skipped
        because there was nothing left to do, are not counted either.
        """
        if report.dry_run:
            return
        self.runs.labels(trigger, report.outcome.value).inc()
        for result in report.results:
            outcome = _STATUS_RESULT.get(result.status)
            if outcome is None:
                continue
            if result.step.kind is StepKind.COMPACT:
                self.compactions.labels(outcome).inc()
                ok = result.status in (StepStatus.DONE, StepStatus.ALREADY_DONE)
                if ok and result.step.revision is not None:
                    self.last_compacted_revision.set(result.step.revision)
            elif result.step.kind is StepKind.DEFRAG:
                name, member_id = _step_member(result)
                self.defrags.labels(name, member_id, outcome).inc()
                if result.status is StepStatus.DONE:
                    if result.duration is not None:
                        self.defrag_duration.labels(name).observe(max(0.0, result.duration))
                    if result.reclaimed:
                        self.defrag_reclaimed.labels(name).inc(max(0, result.reclaimed))
                    else:
                        self.defrag_reclaimed.labels(name)  # exists, at 0

    def set_gates(self, blocking: Mapping[str, str | None]) -> None:
        """Gate name -> why it blocks (None: it does not). Known gates left out read 0."""
        with self._lock:
            self._gates.update(blocking)
            for gate in self._gates:
                self.gate_blocking.labels(gate).set(0 if blocking.get(gate) is None else 1)

    def set_window(self, open: bool, next_start: datetime | None) -> None:
        self.window_open.set(1 if open else 0)
        if next_start is None:
            self.window_next_start.clear()
        else:
            self.window_next_start.set(next_start.timestamp())

    # -- the loop -------------------------------------------------------------------------------

    def cycle_finished(
        self, ok: bool, duration: float, now: datetime, error_kind: str | None = None
    ) -> None:
        self.cycle_duration.observe(max(0.0, duration))
        if ok:
            self.last_success.set(now.timestamp())
        else:
            self.cycle_errors.labels(error_kind or "unknown").inc()

    def scrape_error(self, member: str) -> None:
        self.scrape_errors.labels(member).inc()

    def request_error(self, member: str) -> None:
        self.request_errors.labels(member).inc()
