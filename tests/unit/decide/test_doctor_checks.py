"""The doctor's checks on hand-built snapshots: each finds its problem and stays quiet without it
(pure: snapshots, signals, key counts and the settings are passed in)."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from etcdagent_testing.snapshots import GIB, IDS, MIB, WHEN, alarm, cluster, settings, snap, three

from etcdagent.decide.apiserver import judge_apiserver
from etcdagent.decide.doctor.finding import Finding, Severity
from etcdagent.decide.doctor.inputs import DoctorInput
from etcdagent.decide.doctor.run import run_checks
from etcdagent.models import Histogram, MemberMetrics
from etcdagent.observe.compact_rev_key import CompactRevKey
from etcdagent.observe.key_counts import KeyCounts
from etcdagent.observe.known_bugs import load_known_bugs
from etcdagent.observe.signals import MemberSignals
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot
from etcdagent.settings import Settings, load_settings

S = settings()


def doc(
    after: ClusterSnapshot,
    *,
    before: ClusterSnapshot | None = None,
    signals: dict[int, MemberSignals] | None = None,
    counts: KeyCounts | None = None,
    s: Settings = S,
    **kwargs: Any,
) -> DoctorInput:
    return DoctorInput(
        after=after,
        before=before,
        settings=s,
        now=WHEN,
        lookback=300.0,
        signals=signals or {},
        key_counts=counts,
        known_bugs=load_known_bugs(),
        **kwargs,
    )


def of(d: DoctorInput, check: str) -> list[Finding]:
    return [f for f in run_checks(d).findings if f.check == check]


def severities(d: DoctorInput, check: str) -> dict[str | None, Severity]:
    return {f.member: f.severity for f in of(d, check)}


def sig(member: MemberSnapshot, **values: Any) -> MemberSignals:
    return MemberSignals(member_id=member.member.id, samples=2, **values)


def with_metrics(member: MemberSnapshot, **values: Any) -> MemberSnapshot:
    metrics = MemberMetrics(scraped_at=WHEN, **values)
    return member.model_copy(update={"metrics": metrics})


# -- quota --------------------------------------------------------------------------------------


def test_quota_levels_follow_the_settings() -> None:
    small = cluster(
        snap("m1", db_size=70 * MIB, in_use=60 * MIB, metrics_quota=100 * MIB),
        snap("m2", db_size=85 * MIB, in_use=60 * MIB, metrics_quota=100 * MIB),
        snap("m3", db_size=96 * MIB, in_use=60 * MIB, metrics_quota=100 * MIB),
    )
    got = severities(doc(small), "quota")
    assert got == {"m1": Severity.OK, "m2": Severity.WARNING, "m3": Severity.CRITICAL}
    [m3] = [f for f in of(doc(small), "quota") if f.member == "m3"]
    assert "96% of the 100 MiB quota used" in m3.summary
    assert "--quota-backend-bytes" in m3.action


def test_quota_time_to_quota_makes_a_warning_and_a_critical() -> None:
    c = three(db_size=100 * MIB, in_use=90 * MIB, metrics_quota=2 * GIB)
    m1, m2, _ = c.members
    signals = {
        m1.member.id: sig(m1, db_growth_rate=1000.0, time_to_quota=2 * 3600.0),
        m2.member.id: sig(m2, db_growth_rate=5000.0, time_to_quota=600.0),
    }
    got = severities(doc(c, signals=signals), "quota")
    assert got == {"m1": Severity.WARNING, "m2": Severity.CRITICAL, "m3": Severity.OK}


def test_quota_size_above_8_gib_and_default_quota_growing() -> None:
    big = three(metrics_quota=16 * GIB)
    [finding] = of(doc(big), "quota_size")
    assert finding.severity is Severity.WARNING
    assert "suggested maximum" in finding.summary
    default = three(metrics_quota=2 * GIB)
    [quiet] = of(doc(default), "quota_size")
    assert quiet.severity is Severity.OK
    m1 = default.members[0]
    growing = doc(default, signals={m1.member.id: sig(m1, time_to_quota=3 * 86400.0)})
    [warn] = of(growing, "quota_size")
    assert warn.severity is Severity.WARNING
    assert warn.member == "m1"
    assert "--quota-backend-bytes" in warn.action


# -- fragmentation ------------------------------------------------------------------------------


def test_fragmentation_warns_where_the_agent_would_defragment_and_says_when() -> None:
    c = cluster(
        snap("m1", db_size=400 * MIB, in_use=100 * MIB),
        snap("m2", db_size=110 * MIB, in_use=100 * MIB),
        snap("m3", db_size=400 * MIB, in_use=100 * MIB),
        snap("l1", learner=True, db_size=400 * MIB, in_use=100 * MIB),
    )
    got = severities(doc(c), "fragmentation")
    assert got == {"m1": Severity.WARNING, "m2": Severity.OK, "m3": Severity.WARNING}
    [m1] = [f for f in of(doc(c), "fragmentation") if f.member == "m1"]
    assert m1.summary.startswith("75% free, 300 MiB reclaimable of 400 MiB")
    assert "no maintenance window" in m1.action
    window = {"schedule": "0 5 * * *", "duration": "1h", "timezone": "UTC"}
    windowed = load_settings({"windows": [window]})
    [m1w] = [f for f in of(doc(c, s=windowed), "fragmentation") if f.member == "m1"]
    assert "next maintenance window, at 2025-01-02T05:00:00+00:00" in m1w.action  # WHEN: 03:04


# -- compaction ---------------------------------------------------------------------------------


def test_no_compaction_on_a_growing_database_is_critical() -> None:
    before = three(revision=1000, compact_revision=0)
    after = three(revision=5000, compact_revision=0)
    absent = judge_apiserver(CompactRevKey(revision=5000), S.compaction)
    [finding] = of(doc(after, before=before, apiserver=absent), "compaction")
    assert finding.severity is Severity.CRITICAL
    assert "4000 revisions written" in finding.summary
    assert "--auto-compaction-mode" in finding.action
    assert finding.evidence["revisions_kept"] == 5000


def test_compaction_seen_in_the_lookback_or_by_kube_apiserver_is_ok() -> None:
    before = three(revision=1000, compact_revision=500)
    after = three(revision=5000, compact_revision=4000)
    [moved] = of(doc(after, before=before), "compaction")
    assert moved.severity is Severity.OK
    assert "moved from 500 to 4000" in moved.summary
    key = CompactRevKey(revision=5000, version=3, value=4000, mod_revision=4800)
    apiserver = judge_apiserver(key, S.compaction)
    still = three(revision=5000, compact_revision=500)
    [kube] = of(doc(still, before=before, apiserver=apiserver), "compaction")
    assert kube.severity is Severity.OK
    assert "kube-apiserver compacts" in kube.summary


def test_compaction_idle_or_compacted_by_the_daemon_is_info() -> None:
    idle = three(revision=5000, compact_revision=10)
    [finding] = of(doc(idle, before=idle), "compaction")
    assert finding.severity is Severity.INFO
    grown = three(revision=6000, compact_revision=10)
    [daemon] = of(doc(grown, before=idle, agent_compacts=True), "compaction")
    assert daemon.severity is Severity.INFO
    huge = three(revision=2_000_000, compact_revision=10)
    [warn] = of(doc(huge, before=huge), "compaction")
    assert warn.severity is Severity.WARNING


# -- disk ---------------------------------------------------------------------------------------


def test_disk_latency_names_the_slow_member() -> None:
    c = three()
    m1, m2, m3 = c.members
    signals = {
        m1.member.id: sig(m1, wal_fsync_p99=0.004, wal_fsyncs=500, backend_commit_p99=0.01),
        m2.member.id: sig(m2, wal_fsync_p99=0.2, wal_fsyncs=500, backend_commit_p99=0.5),
        m3.member.id: sig(m3, wal_fsync_p99=None, wal_fsyncs=0, backend_commit_p99=None),
    }
    d = doc(c, signals=signals)
    assert severities(d, "wal_fsync") == {
        "m1": Severity.OK,
        "m2": Severity.WARNING,
        "m3": Severity.OK,
    }
    assert severities(d, "backend_commit")["m2"] is Severity.CRITICAL
    [slow] = [f for f in of(d, "wal_fsync") if f.member == "m2"]
    assert "p99 200.0 ms over 500 operations" in slow.summary
    assert "m2 has a slow disk" in slow.summary
    assert "SSD or NVMe" in slow.action


# -- leader, apply, slow applies ----------------------------------------------------------------


def test_leader_changes_and_counters_increasing_between_the_snapshots() -> None:
    before = cluster(
        *(with_metrics(m, slow_apply=3.0, proposals_failed=0.0) for m in three().members)
    )
    after = cluster(
        *(
            with_metrics(
                m,
                slow_apply=9.0 if m.member.name == "m2" else 3.0,
                proposals_failed=0.0,
                leader_changes=7.0,
            )
            for m in three(applied=0, raft_index=5000).members
        )
    )
    signals = {m.member.id: sig(m, leader_changes=5) for m in after.members}
    d = doc(after, before=before, signals=signals)
    [leader] = of(d, "leader_changes")
    assert leader.severity is Severity.WARNING
    assert "5 leader change(s)" in leader.summary and "7 since" in leader.summary
    assert severities(d, "slow_apply") == {"m2": Severity.WARNING}
    assert of(d, "proposals_failed") == []
    assert set(severities(d, "apply_lag")) == {"m1", "m2", "m3"}


def rtt(*counts: float) -> Histogram:
    """A round-trip histogram: ``counts`` observations in the 1 ms, 0.2 s and 0.8 s buckets."""
    fast, slow, slower = counts
    return Histogram(
        buckets=((0.001, fast), (0.2, fast + slow), (0.8, fast + slow + slower),
                 (math.inf, fast + slow + slower)),
        count=fast + slow + slower,
        sum=0.0,
    )  # fmt: skip


def with_peers(member: MemberSnapshot, peers: dict[str, Histogram]) -> MemberSnapshot:
    ids = {m: f"{IDS[m]:x}" for m in peers}
    return with_metrics(member, peer_round_trip=tuple((ids[m], h) for m, h in peers.items()))


def test_peer_round_trip_names_the_slow_pair_over_the_lookback_only() -> None:
    before = cluster(
        with_peers(snap("m1"), {"m2": rtt(50, 0, 0), "m3": rtt(50, 0, 0)}),
        with_peers(snap("m2"), {"m1": rtt(50, 0, 0), "m3": rtt(0, 50, 0)}),  # slow before
        snap("m3"),
    )
    after = cluster(
        with_peers(snap("m1"), {"m2": rtt(100, 0, 0), "m3": rtt(50, 50, 0)}),  # m3 got slow
        with_peers(snap("m2"), {"m1": rtt(100, 0, 0), "m3": rtt(50, 50, 0)}),  # m3 fast again
        with_peers(snap("m3"), {"m1": rtt(0, 0, 10), "m2": rtt(10, 0, 0)}),  # no earlier scrape
    )
    d = doc(after, before=before)
    assert severities(d, "peer_round_trip") == {
        "m1": Severity.WARNING,
        "m2": Severity.OK,
        "m3": Severity.INFO,  # slow since it started, but its first seconds are no measure
    }
    slow_now = cluster(
        with_peers(snap("m1"), {"m2": rtt(100, 0, 0), "m3": rtt(50, 0, 60)}),
        with_peers(snap("m2"), {"m1": rtt(100, 0, 0), "m3": rtt(50, 50, 0)}),
        with_peers(snap("m3"), {"m1": rtt(0, 0, 10), "m2": rtt(10, 0, 0)}),
    )
    assert severities(doc(slow_now, before=before), "peer_round_trip")["m1"] is Severity.CRITICAL
    [m1] = [f for f in of(d, "peer_round_trip") if f.member == "m1"]
    assert "slowest to m3" in m1.summary and "over the last 5m" in m1.summary
    assert m1.evidence["p99_seconds_to_m2"] is not None
    assert m1.evidence["p99_seconds_to_m2"] < 0.001  # type: ignore[operator]
    assert "--election-timeout" in m1.action
    [m3] = [f for f in of(d, "peer_round_trip") if f.member == "m3"]
    assert "need two scrapes" in m3.summary


def test_no_leader_is_critical() -> None:
    c = three(leader=None)
    [finding] = of(doc(c), "leader_changes")
    assert finding.severity is Severity.CRITICAL


# -- membership and versions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("m1",), Severity.WARNING),
        (("m1", "m2"), Severity.WARNING),
        (("m1", "m2", "m3"), Severity.OK),
        (("m1", "m2", "m3", "m4"), Severity.WARNING),
    ],
)
def test_member_count(names: tuple[str, ...], expected: Severity) -> None:
    c = cluster(*(snap(n, version="3.5.30") for n in names))
    [finding] = of(doc(c), "member_count")
    assert finding.severity is expected


def test_learner_mixed_versions_and_known_bugs() -> None:
    c = cluster(
        snap("m1", version="3.5.30"),
        snap("m2", version="3.6.14"),
        snap("m3", version="3.5.1"),
        snap("l1", learner=True, version="3.5.30"),
    )
    d = doc(c)
    assert severities(d, "learners") == {"l1": Severity.WARNING}
    [mixed] = of(d, "mixed_versions")
    assert mixed.severity is Severity.WARNING and "3.5.1: m3" in mixed.summary
    bugs = {f.evidence["bug"]: f.severity for f in of(d, "known_bug")}
    assert bugs["etcd-3.5.0-3.5.2-data-inconsistency"] is Severity.CRITICAL
    assert all(f.member is None and "m3" in f.summary for f in of(d, "known_bug"))
    clean = cluster(*(snap(n, version="3.6.14") for n in ("m1", "m2", "m3")))
    assert of(doc(clean), "known_bug") == []


def test_the_known_bug_list_is_sourced_and_dated() -> None:
    bugs = load_known_bugs()
    assert bugs.reviewed
    assert 1 <= len(bugs.bugs) <= 10
    for bug in bugs.bugs:
        assert bug.source.startswith("https://") and bug.published
        assert bug.severity in {"info", "warning", "critical"}
        assert bug.affects(bug.first) and bug.affects(bug.last)
        assert not bug.affects(bug.fixed_in)


# -- keys, alarms, the agent --------------------------------------------------------------------


def test_events_share_warns_only_on_a_large_share_of_enough_keys() -> None:
    c = three()
    [events] = of(doc(c, counts=KeyCounts(total=2000, events=1500, leases=10)), "events_share")
    assert events.severity is Severity.WARNING
    assert "1500 of 2000 keys (75%)" in events.summary
    assert "--etcd-servers-overrides=/events#" in events.action
    [few] = of(doc(c, counts=KeyCounts(total=100, events=90, leases=0)), "events_share")
    assert few.severity is Severity.OK
    [leases] = of(doc(c, counts=KeyCounts(total=2000, events=0, leases=1200)), "leases_share")
    assert leases.severity is Severity.WARNING
    [unknown] = of(doc(c, key_counts_error="permission denied"), "events_share")
    assert unknown.severity is Severity.INFO and "permission denied" in unknown.summary


def test_alarms_are_critical() -> None:
    c = cluster(*three().members, alarms=(alarm("m2"),))
    [finding] = of(doc(c), "alarms")
    assert finding.severity is Severity.CRITICAL and finding.member == "m2"
    assert "etcdagent recover" in finding.action


def test_a_healthy_cluster_has_nothing_above_info() -> None:
    before = three(
        version="3.6.14", db_size=50 * MIB, in_use=48 * MIB, revision=900, compact_revision=400
    )
    after = three(
        version="3.6.14", db_size=50 * MIB, in_use=48 * MIB, revision=1000, compact_revision=500
    )
    signals = {
        m.member.id: sig(
            m,
            wal_fsync_p99=0.002,
            wal_fsyncs=100,
            backend_commit_p99=0.005,
            backend_commits=100,
            leader_changes=0,
            db_growth_rate=0.0,
        )
        for m in after.members
    }
    after_m = cluster(
        *(
            with_metrics(
                m, quota=8 * GIB, leader_changes=1.0, has_leader=True, compact_revision=500
            )
            for m in after.members
        )
    )
    before_m = cluster(
        *(with_metrics(m, quota=8 * GIB, compact_revision=400) for m in before.members)
    )
    d = doc(
        after_m,
        before=before_m,
        signals=signals,
        counts=KeyCounts(total=5000, events=400, leases=100),
        cluster_request_rate=10.0,
    )
    report = run_checks(d)
    above = [f for f in report.findings if f.severity.rank > Severity.INFO.rank]
    assert above == []
    assert report.exit_code == 0
    assert report.findings[0].severity is Severity.INFO  # the missing windows, listed first


def test_report_orders_worst_first_and_exits_1_on_a_warning() -> None:
    c = cluster(snap("m1"), snap("m2"))
    report = run_checks(doc(c))
    ranks = [f.severity.rank for f in report.findings]
    assert ranks == sorted(ranks, reverse=True)
    assert report.exit_code == 1
    assert report.counts()["warning"] >= 1


def test_gates_blocking_now_are_info() -> None:
    c = three()
    before = c.model_copy(update={"taken_at": WHEN - timedelta(minutes=5)})
    d = doc(c, before=before)
    gates = of(d, "gates")
    assert gates and all(f.severity is Severity.INFO for f in gates)
    assert any("wal_fsync_p99" in f.summary for f in gates)  # no signals: the gate blocks


def test_peer_round_trip_not_measured_yet_is_info_and_a_single_member_has_none() -> None:
    d = doc(three())  # metrics without the family: no probe yet
    assert set(severities(d, "peer_round_trip").values()) == {Severity.INFO}
    assert of(doc(cluster(snap("m1"))), "peer_round_trip") == []
