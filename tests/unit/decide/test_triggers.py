"""The daemon's per-cycle decision (decide/triggers.py), from hand-built snapshots and signals:
every gate, the emergencies (NOSPACE, quota pressure), maintenance windows and periodic
compaction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from etcdagent_testing.snapshots import GIB, IDS, MIB, WHEN, alarm, cluster, snap, three

from etcdagent.decide.triggers import (
    GATES,
    SAFETY_GATES,
    Action,
    CycleDecision,
    Trigger,
    decide_cycle,
    evaluate_gates,
    quota_pressure,
)
from etcdagent.decide.windows import WindowState
from etcdagent.models import AlarmType
from etcdagent.observe.signals import MemberSignals
from etcdagent.observe.snapshot import ClusterSnapshot
from etcdagent.settings import Settings, load_settings

NOW = WHEN
OPEN = WindowState(
    open=True,
    window=None,
    ends_at=NOW + timedelta(hours=1),
    next_start=NOW + timedelta(days=1),
)
CLOSED = WindowState(open=False, window=None, ends_at=None, next_start=NOW + timedelta(hours=5))
QUIET = 10.0  # requests/s, well under the default traffic gate (1000)


def make_settings(**groups: dict[str, Any]) -> Settings:
    return load_settings(groups)


def calm(name: str, **fields: Any) -> MemberSignals:
    """A member with plenty of history, fast disks, no leader change and little traffic."""
    values: dict[str, Any] = {
        "member_id": IDS[name],
        "samples": 20,
        "wal_fsync_p99": 0.004,
        "backend_commit_p99": 0.008,
        "wal_fsyncs": 500,
        "backend_commits": 300,
        "leader_changes": 0,
        "request_rate": 3.0,
        "db_growth_rate": 0.0,
        "time_to_quota": None,
    }
    values.update(fields)
    return MemberSignals(**values)


def calm_all(snapshot: ClusterSnapshot, **overrides: dict[str, Any]) -> dict[int, MemberSignals]:
    """Calm signals for every member of ``snapshot``; ``overrides[name]`` changes one member."""
    result: dict[int, MemberSignals] = {}
    for m in snapshot.members:
        name = m.member.name
        assert name is not None
        result[m.member.id] = calm(name, **overrides.get(name, {}))
    return result


def gates_of(
    snapshot: ClusterSnapshot,
    signals: Mapping[int, MemberSignals],
    settings: Settings | None = None,
    rate: float | None = QUIET,
) -> dict[str, str | None]:
    return evaluate_gates(snapshot, signals, settings or make_settings(), rate)


def decide(
    snapshot: ClusterSnapshot,
    signals: Mapping[int, MemberSignals] | None = None,
    settings: Settings | None = None,
    window: WindowState = CLOSED,
    *,
    rate: float | None = QUIET,
    last_compaction: datetime | None = NOW,
    now: datetime = NOW,
) -> CycleDecision:
    return decide_cycle(
        snapshot,
        calm_all(snapshot) if signals is None else signals,
        settings or make_settings(),
        window,
        now,
        cluster_request_rate=rate,
        last_compaction=last_compaction,
    )


def blocked_by(decision: CycleDecision) -> set[str]:
    return set(decision.blocking)


# -- gates -------------------------------------------------------------------------------------


def test_calm_cluster_opens_every_gate_in_order() -> None:
    snapshot = three()
    gates = gates_of(snapshot, calm_all(snapshot))
    assert list(gates) == list(GATES)
    assert all(reason is None for reason in gates.values())


def test_safety_gates_are_all_but_traffic() -> None:
    assert set(SAFETY_GATES) == set(GATES) - {"traffic", "defrag_budget"}


def test_cluster_health_blocks_with_the_gate_failure_text() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3", up=False))
    gates = gates_of(snapshot, calm_all(snapshot))
    reason = gates["cluster_health"]
    assert reason is not None
    assert "m3 does not answer" in reason
    assert "connection refused" in reason
    # The fence cannot ask it either: a member that does not answer may be defragmenting.
    assert {g for g, r in gates.items() if r is not None} == {"cluster_health", "defrag_inflight"}
    assert "cannot tell whether m3 is defragmenting" in (gates["defrag_inflight"] or "")


def test_cluster_health_joins_every_failure() -> None:
    snapshot = cluster(
        snap("m1", leader=None),
        snap("m2", leader=None),
        snap("m3", leader=None),
        alarms=(alarm("m2", AlarmType.CORRUPT),),
    )
    reason = gates_of(snapshot, calm_all(snapshot))["cluster_health"]
    assert reason is not None
    assert "no leader" in reason
    assert "CORRUPT alarm on m2" in reason
    assert "; " in reason


def test_apply_lag_blocks_cluster_health() -> None:
    snapshot = cluster(snap("m1"), snap("m2", raft_index=5000, applied=100), snap("m3"))
    reason = gates_of(snapshot, calm_all(snapshot))["cluster_health"]
    assert reason is not None
    assert "m2 is 4900 raft entries behind" in reason


def test_nospace_alone_does_not_block_cluster_health() -> None:
    snapshot = three()
    snapshot = cluster(*snapshot.members, alarms=(alarm("m1"),))
    assert gates_of(snapshot, calm_all(snapshot))["cluster_health"] is None


@pytest.mark.parametrize(
    ("gate", "attr", "limit_key", "value", "shown"),
    [
        ("wal_fsync_p99", "wal_fsync_p99", "wal_fsync_p99_max", 0.8, "800 ms > 500 ms"),
        (
            "backend_commit_p99",
            "backend_commit_p99",
            "backend_commit_p99_max",
            0.3,
            "300 ms > 250 ms",
        ),
    ],
)
def test_latency_gate_blocks_when_one_member_is_slow(
    gate: str, attr: str, limit_key: str, value: float, shown: str
) -> None:
    snapshot = three()
    signals = calm_all(snapshot, m2={attr: value})
    gates = gates_of(snapshot, signals)
    assert gates[gate] == f"m2: {shown}"
    assert {g for g, r in gates.items() if r is not None} == {gate}


@pytest.mark.parametrize(
    ("gate", "attr", "limit_key"),
    [
        ("wal_fsync_p99", "wal_fsync_p99", "wal_fsync_p99_max"),
        ("backend_commit_p99", "backend_commit_p99", "backend_commit_p99_max"),
    ],
)
def test_latency_gate_threshold_is_exclusive(gate: str, attr: str, limit_key: str) -> None:
    snapshot = three()
    settings = make_settings(gates={limit_key: "100ms"})
    at_limit = calm_all(snapshot, m1={attr: 0.1})
    assert gates_of(snapshot, at_limit, settings)[gate] is None
    over = calm_all(snapshot, m1={attr: 0.101})
    assert gates_of(snapshot, over, settings)[gate] == "m1: 101 ms > 100 ms"


def test_latency_gate_names_every_slow_member() -> None:
    snapshot = three()
    signals = calm_all(snapshot, m1={"wal_fsync_p99": 0.6}, m3={"wal_fsync_p99": 1.5})
    assert (
        gates_of(snapshot, signals)["wal_fsync_p99"] == "m1: 600 ms > 500 ms; m3: 1500 ms > 500 ms"
    )


@pytest.mark.parametrize(
    ("gate", "attr", "count_attr"),
    [
        ("wal_fsync_p99", "wal_fsync_p99", "wal_fsyncs"),
        ("backend_commit_p99", "backend_commit_p99", "backend_commits"),
    ],
)
def test_latency_gate_blocks_on_too_few_samples(gate: str, attr: str, count_attr: str) -> None:
    snapshot = three()
    signals = calm_all(
        snapshot,
        m3={
            "samples": 1,
            attr: None,
            count_attr: None,
            "not_enough_data": "1 sample in the last 300 s; need 2",
        },
    )
    reason = gates_of(snapshot, signals)[gate]
    assert reason == "m3: not enough data (1 sample in the last 300 s; need 2)"


@pytest.mark.parametrize(
    ("gate", "attr", "count_attr"),
    [
        ("wal_fsync_p99", "wal_fsync_p99", "wal_fsyncs"),
        ("backend_commit_p99", "backend_commit_p99", "backend_commits"),
    ],
)
def test_latency_gate_blocks_with_too_few_samples_even_if_count_is_zero(
    gate: str, attr: str, count_attr: str
) -> None:
    # A "0 observations" figure with a not_enough_data reason is still unknown, not idle.
    snapshot = three()
    signals = calm_all(
        snapshot, m2={attr: None, count_attr: 0, "not_enough_data": "1 sample; need 2"}
    )
    reason = gates_of(snapshot, signals)[gate]
    assert reason is not None
    assert "m2: not enough data" in reason


@pytest.mark.parametrize(
    ("gate", "attr", "count_attr"),
    [
        ("wal_fsync_p99", "wal_fsync_p99", "wal_fsyncs"),
        ("backend_commit_p99", "backend_commit_p99", "backend_commits"),
    ],
)
def test_latency_gate_open_for_an_idle_member(gate: str, attr: str, count_attr: str) -> None:
    snapshot = three()
    signals = calm_all(snapshot, m2={attr: None, count_attr: 0, "not_enough_data": None})
    assert gates_of(snapshot, signals)[gate] is None


def test_fully_idle_cluster_opens_both_latency_gates() -> None:
    snapshot = three()
    idle = {
        "wal_fsync_p99": None,
        "backend_commit_p99": None,
        "wal_fsyncs": 0,
        "backend_commits": 0,
    }
    signals = calm_all(snapshot, m1=idle, m2=idle, m3=idle)
    gates = gates_of(snapshot, signals)
    assert gates["wal_fsync_p99"] is None
    assert gates["backend_commit_p99"] is None


@pytest.mark.parametrize(
    ("gate", "attr", "count_attr"),
    [
        ("wal_fsync_p99", "wal_fsync_p99", "wal_fsyncs"),
        ("backend_commit_p99", "backend_commit_p99", "backend_commits"),
    ],
)
def test_latency_gate_blocks_when_the_count_is_unknown(
    gate: str, attr: str, count_attr: str
) -> None:
    # No p99 and no observation count (the family is not exposed): unknown, so it blocks.
    snapshot = three()
    signals = calm_all(snapshot, m1={attr: None, count_attr: None})
    assert gates_of(snapshot, signals)[gate] == "m1: not enough data (none)"


def test_latency_gates_block_for_a_member_without_signals() -> None:
    snapshot = three()
    signals = calm_all(snapshot)
    del signals[IDS["m2"]]
    gates = gates_of(snapshot, signals)
    assert gates["wal_fsync_p99"] == "m2: not enough data (none)"
    assert gates["backend_commit_p99"] == "m2: not enough data (none)"


def test_latency_gates_ignore_learners() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3"), snap("l1", learner=True))
    signals = calm_all(
        snapshot, l1={"wal_fsync_p99": 9.0, "backend_commit_p99": 9.0, "leader_changes": 50}
    )
    gates = gates_of(snapshot, signals)
    assert all(reason is None for reason in gates.values()), gates


def test_leader_changes_blocks_above_the_maximum() -> None:
    snapshot = three()
    settings = make_settings(gates={"max_leader_changes": 2})
    at_max = calm_all(snapshot, m2={"leader_changes": 2})
    assert gates_of(snapshot, at_max, settings)["leader_changes"] is None
    over = calm_all(snapshot, m2={"leader_changes": 3})
    reason = gates_of(snapshot, over, settings)["leader_changes"]
    assert reason == "3 leader changes in the lookback (gate: 2)"


def test_leader_changes_reports_the_highest_count() -> None:
    snapshot = three()
    signals = calm_all(snapshot, m1={"leader_changes": 5}, m3={"leader_changes": 9})
    reason = gates_of(snapshot, signals)["leader_changes"]
    assert reason is not None
    assert reason.startswith("9 leader changes")


def test_leader_changes_zero_maximum_blocks_any_change() -> None:
    snapshot = three()
    settings = make_settings(gates={"max_leader_changes": 0})
    assert gates_of(snapshot, calm_all(snapshot), settings)["leader_changes"] is None
    signals = calm_all(snapshot, m1={"leader_changes": 1})
    assert gates_of(snapshot, signals, settings)["leader_changes"] is not None


def test_leader_changes_without_any_data_blocks() -> None:
    snapshot = three()
    none = {"leader_changes": None}
    signals = calm_all(snapshot, m1=none, m2=none, m3=none)
    assert gates_of(snapshot, signals)["leader_changes"] == "not enough data"
    assert gates_of(snapshot, {})["leader_changes"] == "not enough data"


def test_traffic_blocks_above_the_maximum_rate() -> None:
    snapshot = three()
    settings = make_settings(gates={"max_request_rate": 100})
    signals = calm_all(snapshot)
    assert gates_of(snapshot, signals, settings, rate=100.0)["traffic"] is None
    reason = gates_of(snapshot, signals, settings, rate=250.4)["traffic"]
    assert reason is not None
    assert "250 requests/s > 100" in reason
    assert {g for g, r in gates_of(snapshot, signals, settings, rate=250.4).items() if r} == {
        "traffic"
    }


def test_traffic_counted_from_the_store_says_so() -> None:
    snapshot = three()
    settings = make_settings(gates={"max_request_rate": 100})
    store = {"request_rate_source": "mvcc"}
    signals = calm_all(snapshot, m1=store, m2=store, m3=store)
    reason = gates_of(snapshot, signals, settings, rate=250.4)["traffic"]
    assert reason is not None
    assert "store operations on etcd 3.6.0-3.6.5" in reason
    plain = gates_of(snapshot, calm_all(snapshot), settings, rate=250.4)["traffic"]
    assert plain is not None and "store operations" not in plain


def test_traffic_unknown_rate_blocks() -> None:
    snapshot = three()
    assert gates_of(snapshot, calm_all(snapshot), rate=None)["traffic"] == "not enough data"


@pytest.mark.parametrize("rate", [None, 0.0, 1e9])
def test_traffic_gate_disabled_never_blocks(rate: float | None) -> None:
    snapshot = three()
    settings = make_settings(gates={"max_request_rate": None})
    assert gates_of(snapshot, calm_all(snapshot), settings, rate=rate)["traffic"] is None


# -- quota pressure ----------------------------------------------------------------------------


def test_quota_pressure_by_use() -> None:
    snapshot = cluster(
        snap("m1", quota=2 * GIB),
        snap("m2", db_size=int(1.9 * GIB), quota=2 * GIB),
        snap("m3", quota=2 * GIB),
    )
    reason = quota_pressure(snapshot, calm_all(snapshot), make_settings())
    assert reason is not None
    assert reason.startswith("m2 uses 95% of its quota")


def test_quota_pressure_use_threshold_is_inclusive() -> None:
    snapshot = three(db_size=900 * MIB, quota=1000 * MIB)
    assert quota_pressure(snapshot, calm_all(snapshot), make_settings()) is not None
    below = three(db_size=899 * MIB, quota=1000 * MIB)
    assert quota_pressure(below, calm_all(below), make_settings()) is None


def test_quota_pressure_quota_from_metrics() -> None:
    snapshot = three(db_size=950 * MIB, metrics_quota=1000 * MIB)
    assert quota_pressure(snapshot, calm_all(snapshot), make_settings()) is not None


def test_no_quota_pressure_without_a_known_quota() -> None:
    snapshot = three(db_size=8 * GIB)
    assert quota_pressure(snapshot, calm_all(snapshot), make_settings()) is None


def test_quota_pressure_by_time_to_quota() -> None:
    snapshot = three(quota=2 * GIB)
    signals = calm_all(snapshot, m3={"time_to_quota": 1800.0, "db_growth_rate": 1e6})
    reason = quota_pressure(snapshot, signals, make_settings())
    assert reason is not None
    assert reason.startswith("m3 reaches its quota in about")


def test_time_to_quota_threshold_is_exclusive() -> None:
    snapshot = three(quota=2 * GIB)
    at = calm_all(snapshot, m1={"time_to_quota": 3600.0})
    assert quota_pressure(snapshot, at, make_settings()) is None
    under = calm_all(snapshot, m1={"time_to_quota": 3599.0})
    assert quota_pressure(snapshot, under, make_settings()) is not None


def test_time_to_quota_disabled() -> None:
    snapshot = three(quota=2 * GIB)
    signals = calm_all(snapshot, m1={"time_to_quota": 1.0})
    settings = make_settings(emergency={"time_to_quota": None})
    assert quota_pressure(snapshot, signals, settings) is None


def test_quota_pressure_ignores_learners() -> None:
    snapshot = cluster(
        snap("m1", quota=GIB),
        snap("m2", quota=GIB),
        snap("m3", quota=GIB),
        snap("l1", learner=True, db_size=GIB, quota=GIB),
    )
    signals = calm_all(snapshot, l1={"time_to_quota": 1.0})
    assert quota_pressure(snapshot, signals, make_settings()) is None


# -- decide_cycle: NOSPACE -----------------------------------------------------------------------


def nospace_cluster() -> ClusterSnapshot:
    return cluster(*three().members, alarms=(alarm("m2"),))


def test_nospace_recovers_outside_a_window() -> None:
    decision = decide(nospace_cluster(), window=CLOSED)
    assert decision.action is Action.RECOVER
    assert decision.trigger is Trigger.EMERGENCY_NOSPACE
    assert decision.compact is False
    assert any("NOSPACE" in r for r in decision.reasons)


def test_nospace_recovers_with_latency_gates_blocking() -> None:
    snapshot = nospace_cluster()
    signals = calm_all(
        snapshot,
        m1={"wal_fsync_p99": 3.0, "backend_commit_p99": 2.0, "leader_changes": 40},
    )
    decision = decide(snapshot, signals, window=CLOSED, rate=1e6)
    assert decision.action is Action.RECOVER
    assert decision.trigger is Trigger.EMERGENCY_NOSPACE
    assert {"wal_fsync_p99", "backend_commit_p99", "leader_changes", "traffic"} <= blocked_by(
        decision
    )


def test_nospace_recovers_inside_a_window_too() -> None:
    decision = decide(nospace_cluster(), window=OPEN)
    assert decision.action is Action.RECOVER
    assert decision.trigger is Trigger.EMERGENCY_NOSPACE


def test_nospace_disabled_does_not_recover() -> None:
    settings = make_settings(emergency={"nospace": False})
    decision = decide(nospace_cluster(), settings=settings, window=CLOSED)
    assert decision.action is None
    assert decision.trigger is None


def test_nospace_disabled_leaves_the_window_to_decide() -> None:
    settings = make_settings(emergency={"nospace": False})
    decision = decide(nospace_cluster(), settings=settings, window=OPEN)
    assert decision.action is not Action.RECOVER
    assert decision.trigger is not Trigger.EMERGENCY_NOSPACE


def test_other_alarms_do_not_trigger_recovery() -> None:
    snapshot = cluster(*three().members, alarms=(alarm("m1", AlarmType.CORRUPT),))
    decision = decide(snapshot, window=OPEN)
    assert decision.action is None
    assert "cluster_health" in decision.blocking


# -- decide_cycle: quota pressure ----------------------------------------------------------------


def pressured() -> ClusterSnapshot:
    return three(db_size=int(0.95 * GIB), quota=GIB)


def test_quota_pressure_maintains_outside_a_window() -> None:
    decision = decide(pressured(), window=CLOSED)
    assert decision.action is Action.MAINTAIN
    assert decision.trigger is Trigger.EMERGENCY_QUOTA
    assert decision.compact is False
    assert any("quota pressure" in r for r in decision.reasons)


def test_quota_pressure_by_time_to_quota_maintains() -> None:
    snapshot = three(quota=4 * GIB)
    signals = calm_all(snapshot, m2={"time_to_quota": 600.0})
    decision = decide(snapshot, signals, window=CLOSED)
    assert decision.action is Action.MAINTAIN
    assert decision.trigger is Trigger.EMERGENCY_QUOTA


def test_quota_pressure_is_not_blocked_by_traffic() -> None:
    decision = decide(pressured(), window=CLOSED, rate=1e6)
    assert decision.blocking.keys() == {"traffic"}
    assert decision.action is Action.MAINTAIN
    assert decision.trigger is Trigger.EMERGENCY_QUOTA


def test_quota_pressure_is_not_blocked_by_unknown_traffic() -> None:
    decision = decide(pressured(), window=CLOSED, rate=None)
    assert decision.blocking == {"traffic": "not enough data"}
    assert decision.action is Action.MAINTAIN


def test_quota_pressure_inside_a_window_is_an_emergency_even_with_traffic() -> None:
    decision = decide(pressured(), window=OPEN, rate=1e6)
    assert decision.action is Action.MAINTAIN
    assert decision.trigger is Trigger.EMERGENCY_QUOTA


@pytest.mark.parametrize(
    ("gate", "signal_override"),
    [
        ("wal_fsync_p99", {"wal_fsync_p99": 2.0}),
        ("backend_commit_p99", {"backend_commit_p99": 2.0}),
        ("leader_changes", {"leader_changes": 10}),
        (
            "wal_fsync_p99",
            {"wal_fsync_p99": None, "wal_fsyncs": None, "not_enough_data": "1 sample; need 2"},
        ),
    ],
)
def test_quota_pressure_blocked_by_a_safety_gate(
    gate: str, signal_override: dict[str, Any]
) -> None:
    snapshot = pressured()
    signals = calm_all(snapshot, m1=signal_override)
    decision = decide(snapshot, signals, window=CLOSED)
    assert decision.action is None
    assert decision.trigger is None
    assert gate in decision.blocking
    text = " ".join(decision.reasons)
    assert "quota pressure" in text
    assert "blocked by" in text
    assert gate in text


def test_quota_pressure_blocked_by_cluster_health() -> None:
    snapshot = three(db_size=int(0.95 * GIB), quota=GIB)
    m1, m2, _ = snapshot.members
    snapshot = cluster(m1, m2, snap("m3", up=False))
    decision = decide(snapshot, window=CLOSED, last_compaction=None)
    assert decision.action is None
    assert decision.trigger is None
    assert "cluster_health" in decision.blocking
    text = " ".join(decision.reasons)
    assert "quota pressure" in text
    assert "cluster_health" in text
    # Nor does the periodic compaction run on an unhealthy cluster.
    assert decision.compact is False


def test_quota_pressure_blocked_inside_a_window_does_not_maintain() -> None:
    snapshot = pressured()
    signals = calm_all(snapshot, m2={"backend_commit_p99": 1.0})
    decision = decide(snapshot, signals, window=OPEN)
    assert decision.action is None
    assert "backend_commit_p99" in " ".join(decision.reasons)


def test_quota_pressure_disabled() -> None:
    settings = make_settings(emergency={"quota": False})
    decision = decide(pressured(), settings=settings, window=CLOSED)
    assert decision.action is None
    assert decision.trigger is None
    assert not any("quota" in r for r in decision.reasons)


def test_quota_pressure_threshold_from_settings() -> None:
    snapshot = three(db_size=600 * MIB, quota=1000 * MIB)
    assert decide(snapshot, window=CLOSED).action is None
    settings = make_settings(emergency={"quota_use": 0.5})
    decision = decide(snapshot, settings=settings, window=CLOSED)
    assert decision.trigger is Trigger.EMERGENCY_QUOTA


# -- decide_cycle: windows ---------------------------------------------------------------------


def test_window_open_and_every_gate_open_maintains() -> None:
    decision = decide(three(), window=OPEN)
    assert decision.action is Action.MAINTAIN
    assert decision.trigger is Trigger.WINDOW
    assert decision.compact is False  # the maintenance run compacts first
    assert decision.blocking == {}
    assert all(r is None for r in decision.gates.values())


@pytest.mark.parametrize(
    ("gate", "override", "rate"),
    [
        ("wal_fsync_p99", {"wal_fsync_p99": 0.9}, QUIET),
        ("backend_commit_p99", {"backend_commit_p99": 0.9}, QUIET),
        ("leader_changes", {"leader_changes": 4}, QUIET),
        ("traffic", {}, 5000.0),
        ("traffic", {}, None),
    ],
)
def test_window_open_but_a_gate_blocks(
    gate: str, override: dict[str, Any], rate: float | None
) -> None:
    snapshot = three()
    decision = decide(snapshot, calm_all(snapshot, m2=override), window=OPEN, rate=rate)
    assert decision.action is None
    assert decision.trigger is None
    assert blocked_by(decision) == {gate}
    text = " ".join(decision.reasons)
    assert "window open, blocked by" in text
    assert gate in text


def test_window_open_but_cluster_unhealthy() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3", up=False))
    decision = decide(snapshot, window=OPEN)
    assert decision.action is None
    assert "cluster_health" in decision.blocking
    assert "cluster_health" in " ".join(decision.reasons)


def test_window_open_reasons_name_every_blocking_gate() -> None:
    snapshot = three()
    signals = calm_all(snapshot, m1={"wal_fsync_p99": 1.0, "leader_changes": 7})
    decision = decide(snapshot, signals, window=OPEN, rate=5000.0)
    assert blocked_by(decision) == {"wal_fsync_p99", "leader_changes", "traffic"}
    text = " ".join(decision.reasons)
    for gate in ("wal_fsync_p99", "leader_changes", "traffic"):
        assert gate in text
    assert "backend_commit_p99" not in text


def test_window_closed_takes_no_action() -> None:
    decision = decide(three(), window=CLOSED)
    assert decision.action is None
    assert decision.trigger is None
    assert decision.compact is False
    assert decision.blocking == {}
    assert "outside maintenance windows" in decision.reasons


def test_window_closed_with_no_next_window() -> None:
    none = WindowState(open=False, window=None, ends_at=None, next_start=None)
    assert decide(three(), window=none).action is None


# -- decide_cycle: periodic compaction ---------------------------------------------------------


def test_compaction_due_without_a_previous_one() -> None:
    decision = decide(three(), window=CLOSED, last_compaction=None)
    assert decision.action is None
    assert decision.compact is True
    assert "periodic compaction due" in decision.reasons


def test_compaction_due_after_the_interval() -> None:
    settings = make_settings(daemon={"compaction_interval": "10m"})
    old = NOW - timedelta(minutes=10)
    assert decide(three(), settings=settings, last_compaction=old).compact is True
    older = NOW - timedelta(hours=3)
    assert decide(three(), settings=settings, last_compaction=older).compact is True


def test_compaction_not_due_within_the_interval() -> None:
    settings = make_settings(daemon={"compaction_interval": "10m"})
    recent = NOW - timedelta(minutes=9, seconds=59)
    decision = decide(three(), settings=settings, last_compaction=recent)
    assert decision.compact is False
    assert "periodic compaction due" not in decision.reasons


def test_compaction_disabled_by_zero_interval() -> None:
    settings = make_settings(daemon={"compaction_interval": 0})
    assert decide(three(), settings=settings, last_compaction=None).compact is False
    long_ago = NOW - timedelta(days=365)
    assert decide(three(), settings=settings, last_compaction=long_ago).compact is False


def test_compaction_not_while_cluster_health_blocks() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3", up=False))
    decision = decide(snapshot, window=CLOSED, last_compaction=None)
    assert decision.compact is False
    assert "periodic compaction due" not in decision.reasons


def test_compaction_still_due_when_only_latency_or_traffic_blocks() -> None:
    snapshot = three()
    signals = calm_all(snapshot, m1={"wal_fsync_p99": 2.0})
    decision = decide(snapshot, signals, window=OPEN, rate=1e6, last_compaction=None)
    assert decision.action is None
    assert decision.compact is True


def test_compaction_still_due_when_quota_pressure_is_blocked() -> None:
    snapshot = pressured()
    signals = calm_all(snapshot, m1={"leader_changes": 99})
    decision = decide(snapshot, signals, window=CLOSED, last_compaction=None)
    assert decision.action is None
    assert decision.compact is True


def test_maintenance_runs_do_not_also_request_compaction() -> None:
    assert decide(three(), window=OPEN, last_compaction=None).compact is False
    assert decide(pressured(), window=CLOSED, last_compaction=None).compact is False
    assert decide(nospace_cluster(), window=CLOSED, last_compaction=None).compact is False


# -- CycleDecision -----------------------------------------------------------------------------


def test_blocking_lists_only_the_blocking_gates() -> None:
    decision = CycleDecision(
        action=None,
        trigger=None,
        compact=False,
        gates={"cluster_health": None, "wal_fsync_p99": "slow", "traffic": None, "x": "y"},
        reasons=(),
    )
    assert decision.blocking == {"wal_fsync_p99": "slow", "x": "y"}


def test_blocking_matches_the_gates_of_a_decision() -> None:
    snapshot = three()
    signals = calm_all(snapshot, m3={"backend_commit_p99": 1.0})
    decision = decide(snapshot, signals, window=OPEN, rate=None)
    assert set(decision.gates) == set(GATES)
    assert decision.blocking == {g: r for g, r in decision.gates.items() if r is not None}
    assert set(decision.blocking) == {"backend_commit_p99", "traffic"}


def test_enum_values() -> None:
    assert Trigger.WINDOW.value == "window"
    assert Trigger.EMERGENCY_NOSPACE.value == "emergency-nospace"
    assert Trigger.EMERGENCY_QUOTA.value == "emergency-quota"
    assert Action.MAINTAIN.value == "maintain"
    assert Action.RECOVER.value == "recover"
