"""What the agent sees of the cluster: per-member gauges from the last snapshot, leader changes.

A value the agent does not know (a member that does not answer, a latency without enough data)
is an absent series, never NaN and never a made-up 0; a member that left loses its series.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import Gauge

from etcdagent.agent.metric_factory import MEMBER_LABELS, MetricFactory, discard, finite
from etcdagent.models import AlarmType
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot, Role

ALARM_KINDS = tuple(a.value for a in AlarmType if a is not AlarmType.NONE)


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


def _member_labels(snap: MemberSnapshot) -> tuple[str, str]:
    # An added-but-unstarted member has no name yet: its hex ID stands in for one.
    return (snap.member.name or snap.member.id_hex, snap.member.id_hex)


class ClusterMetrics:
    """The per-member gauges and the leader change counter, set from each snapshot."""

    def __init__(self, make: MetricFactory) -> None:
        self._lock = threading.Lock()
        self._members: set[tuple[str, str]] = set()
        self._last_leader: int | None = None
        self._define_sizes(make)
        self._define_latencies(make)
        self._define_roles_alarms_growth(make)

    def _define_sizes(self, make: MetricFactory) -> None:
        m = MEMBER_LABELS
        self.member_up = make.gauge(
            "member_up",
            "1 if the member answered the agent's last status request, 0 if it did not.",
            m,
        )
        self.member_db_size = make.gauge(
            "member_db_size_bytes",
            "Size of the member's backend database file (status dbSize); absent while the "
            "member does not answer.",
            m,
        )
        self.member_db_size_in_use = make.gauge(
            "member_db_size_in_use_bytes",
            "Bytes of the member's database file in use (status dbSizeInUse); the rest is free "
            "pages a defragmentation would give back. Absent while the member does not answer.",
            m,
        )
        self.member_quota = make.gauge(
            "member_quota_bytes",
            "The member's backend quota (status dbSizeQuota on etcd 3.6+, else its "
            "etcd_server_quota_backend_bytes metric); absent when unknown.",
            m,
        )
        self.member_fragmentation = make.gauge(
            "member_fragmentation_ratio",
            "Share of the member's database file that is free pages (0..1): (db size - in use) / "
            "db size. Absent while the member does not answer.",
            m,
        )

    def _define_latencies(self, make: MetricFactory) -> None:
        m = MEMBER_LABELS
        self.member_wal_fsync_p99 = make.gauge(
            "member_wal_fsync_p99_seconds",
            "99th percentile of the member's WAL fsync latency over the lookback (from "
            "histogram bucket deltas, as histogram_quantile(rate) does); absent while there is "
            "not enough data.",
            m,
        )
        self.member_backend_commit_p99 = make.gauge(
            "member_backend_commit_p99_seconds",
            "99th percentile of the member's backend commit latency over the lookback (from "
            "histogram bucket deltas, as histogram_quantile(rate) does); absent while there is "
            "not enough data.",
            m,
        )

    def _define_roles_alarms_growth(self, make: MetricFactory) -> None:
        m = MEMBER_LABELS
        self.member_is_leader = make.gauge(
            "member_is_leader",
            "1 if the member is the leader most answering voting members agree on, else 0.",
            m,
        )
        self.member_alarm_active = make.gauge(
            "member_alarm_active",
            "1 if an alarm of kind `alarm` (NOSPACE, CORRUPT) is raised on the member, else 0; "
            "absent when no member answered (alarms unknown).",
            (*m, "alarm"),
        )
        self.member_db_growth = make.gauge(
            "member_db_growth_bytes_per_second",
            "Growth rate of the member's database file over the lookback (least-squares slope "
            "since its last shrink, never negative); absent while there is not enough data.",
            m,
        )
        self.member_time_to_quota = make.gauge(
            "member_time_to_quota_seconds",
            "Estimated seconds until the member's database file reaches its quota at the current "
            "growth rate; absent when the file is not growing, the quota is unknown, or the growth "
            "has been watched for less than a minute.",
            m,
        )
        self.leader_changes = make.counter(
            "leader_changes_observed_total",
            "Times the agent saw a different leader than in its previous observation.",
        )

    # -- recording ------------------------------------------------------------------------------

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
            value = finite(raw)
            if value is None:
                discard(metric, *labels)
            else:
                metric.labels(*labels).set(value)
        if snapshot.alarms_error is not None:
            for kind in ALARM_KINDS:
                discard(self.member_alarm_active, *labels, kind)
        else:
            raised = {a.alarm.value for a in snapshot.alarms_of(snap)}
            for kind in ALARM_KINDS:
                self.member_alarm_active.labels(*labels, kind).set(1 if kind in raised else 0)

    def _remove_member(self, labels: tuple[str, str]) -> None:
        for metric in self._member_gauges():
            discard(metric, *labels)
        for kind in ALARM_KINDS:
            discard(self.member_alarm_active, *labels, kind)

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
