"""The doctor in the daemon, on hand-built snapshots: which earlier snapshot it compares with,
the key counts' cadence, the NOSPACE incidents it remembers (no etcd: key counting fails)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from etcdagent_testing.snapshots import WHEN, alarm, cluster, settings, snap, three
from prometheus_client import CollectorRegistry

from etcdagent.agent.doctor_watch import DoctorWatch
from etcdagent.agent.metrics import AgentMetrics
from etcdagent.decide.doctor.finding import Severity
from etcdagent.errors import EtcdUnreachableError
from etcdagent.etcd.client import ClusterClient
from etcdagent.observe.snapshot import ClusterSnapshot


class _NoEtcd:
    """Stands in for the cluster client: every count fails, as with a member gone."""

    calls = 0

    def member(self, endpoint: str, *_args: Any) -> Any:
        self.calls += 1
        raise EtcdUnreachableError(f"{endpoint}: count keys failed: connection refused")


def _at(snapshot: ClusterSnapshot, seconds: float, revision: int) -> ClusterSnapshot:
    members = tuple(
        m.model_copy(
            update={"status": m.status.model_copy(update={"revision": revision})}
            if m.status
            else {}
        )
        for m in snapshot.members
    )
    return snapshot.model_copy(
        update={"taken_at": WHEN + timedelta(seconds=seconds), "members": members}
    )


def test_compares_with_the_snapshot_a_lookback_old_and_counts_keys_every_interval() -> None:
    elapsed = [0.0]
    metrics = AgentMetrics(CollectorRegistry())
    watch = DoctorWatch(metrics.doctor, monotonic=lambda: elapsed[0])
    s = settings()  # lookback 5m, key counts every 5m
    fake = _NoEtcd()
    client: ClusterClient = fake  # type: ignore[assignment]
    base = three(compact_revision=0)
    for step in range(25):  # a cycle every 15 s, the revision growing by 100 per cycle
        elapsed[0] = 15.0 * step
        snapshot = _at(base, elapsed[0], 1000 + 100 * step)
        watch.observe(client, s, snapshot, {}, snapshot.taken_at)
    report = watch.last_report
    assert report is not None
    [compaction] = [f for f in report.findings if f.check == "compaction"]
    # The newest snapshot at least 300 s older than the last (at 360 s): the one at 60 s.
    assert compaction.evidence["revisions_written_in_lookback"] == 2000
    assert compaction.severity is Severity.INFO  # the daemon compacts itself (mode auto)
    assert fake.calls == 2  # at 0 s and at 300 s
    [events] = [f for f in report.findings if f.check == "events_share"]
    assert "connection refused" in events.summary
    assert (
        metrics.registry.get_sample_value(
            "etcdagent_doctor_finding", {"check": "compaction", "severity": "info"}
        )
        == 1
    )


def test_a_nospace_alarm_seen_earlier_stays_a_warning() -> None:
    metrics = AgentMetrics(CollectorRegistry())
    watch = DoctorWatch(metrics.doctor, monotonic=lambda: 0.0)
    client: ClusterClient = _NoEtcd()  # type: ignore[assignment]
    members = (snap("m1"), snap("m2"), snap("m3"))
    raised = cluster(*members, alarms=(alarm("m1"), alarm("m2")))
    for snapshot in (cluster(*members), raised, raised, cluster(*members)):
        watch.observe(client, settings(), snapshot, {}, WHEN)
    assert watch.nospace_incidents == 1
    report = watch.last_report
    assert report is not None
    [alarms] = [f for f in report.findings if f.check == "alarms"]
    assert alarms.severity is Severity.WARNING
    assert "NOSPACE was raised 1 time(s)" in alarms.summary


def test_a_gate_that_blocked_every_window_for_days_is_a_warning() -> None:
    """Daily windows, 4 cycles each: traffic blocked all of three; wal_fsync only some cycles.
    One window where every gate opened once breaks the streak."""
    metrics = AgentMetrics(CollectorRegistry())
    watch = DoctorWatch(metrics.doctor, monotonic=lambda: 0.0)
    client: ClusterClient = _NoEtcd()  # type: ignore[assignment]
    s = settings()

    def day(n: int, *, opens_once: bool = False) -> None:
        start = WHEN + timedelta(days=n)
        for cycle in range(4):
            gates = {"traffic": "busy", "wal_fsync_p99": "slow" if cycle % 2 else None}
            if opens_once and cycle == 3:
                gates = {"traffic": None, "wal_fsync_p99": None}
            watch.track_window(start + timedelta(minutes=15 * cycle), True, gates)
        watch.track_window(start + timedelta(hours=2), False, {"traffic": "busy"})

    def blocked(now_days: float) -> list[str]:
        now = WHEN + timedelta(days=now_days)
        watch.observe(client, s, three(), {}, now)
        assert watch.last_report is not None
        return [f.summary for f in watch.last_report.findings if f.check == "blocked_windows"]

    day(0, opens_once=True)
    day(1)
    assert blocked(1.5) == []  # the window of day 0 ran maintenance once
    day(2)
    day(3)
    [summary] = blocked(3.5)  # days 1 to 3: the 3-day period holds days 1, 2 and 3
    assert summary.startswith("gate traffic blocked every maintenance window of the last 72h")
    assert "(3 windows since" in summary and "wal_fsync" not in summary
    assert (
        metrics.registry.get_sample_value(
            "etcdagent_doctor_finding", {"check": "blocked_windows", "severity": "warning"}
        )
        == 1
    )
