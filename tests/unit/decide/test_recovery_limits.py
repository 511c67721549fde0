"""NOSPACE recovery that knows when it cannot help: refused up front when the data in use fills a
quota, disarmed only when every member's file (learners' too) is below the limit, learners
defragmented first, and the daemon's back-off on a refused recovery."""

from __future__ import annotations

import pytest
from etcdagent_testing.snapshots import MIB, alarm, cluster, settings, snap
from hypothesis import given
from hypothesis import strategies as st

from etcdagent.agent.metrics import AgentMetrics
from etcdagent.agent.nospace_backoff import NospaceBackoff
from etcdagent.decide.defrag import LEARNER_SKIPPED, plan_defrag
from etcdagent.decide.plan import StepKind
from etcdagent.decide.recovery import (
    UNRECOVERABLE,
    Shortfall,
    nospace_shortfalls,
    plan_recover,
    recover_disarm_problem,
    unrecoverable,
)
from etcdagent.observe.snapshot import ClusterSnapshot

QUOTA = 16 * MIB


def full(*, in_use: int = 15 * MIB, learner_in_use: int | None = None) -> ClusterSnapshot:
    """Compacted to the current revision (5000) already, NOSPACE raised, quota 16 MiB."""
    members = [
        snap(n, db_size=QUOTA, in_use=in_use, metrics_quota=QUOTA, compact_revision=5000)
        for n in ("m1", "m2", "m3")
    ]
    if learner_in_use is not None:
        members.append(
            snap(
                "l1",
                learner=True,
                db_size=QUOTA,
                in_use=learner_in_use,
                metrics_quota=QUOTA,
                compact_revision=5000,
            )
        )
    return cluster(*members, alarms=(alarm("m1"),))


def test_compacted_cluster_whose_live_data_fills_the_quota_is_refused_before_any_defrag() -> None:
    plan = plan_recover(full(), settings())

    assert plan.steps == ()
    assert plan.refusal is not None and plan.refusal.startswith(UNRECOVERABLE)
    # Per member, in bytes, both remedies: 15 MiB in use, limit 90% of 16 MiB = 15099494 bytes.
    assert "m1 holds 15 MiB (15728640 bytes) in use" in plan.refusal
    assert "delete at least" in plan.refusal and "(629147 bytes)" in plan.refusal
    assert "raise --quota-backend-bytes" in plan.refusal and "(17476268 bytes)" in plan.refusal
    assert all(name in plan.refusal for name in ("m1", "m2", "m3"))


def test_a_learner_whose_live_data_fills_its_quota_is_enough_to_refuse() -> None:
    plan = plan_recover(full(in_use=4 * MIB, learner_in_use=15 * MIB), settings())

    assert plan.refusal is not None and plan.refusal.startswith(UNRECOVERABLE)
    assert "l1 (learner) holds 15 MiB" in plan.refusal
    assert "m1 holds" not in plan.refusal


def test_not_yet_compacted_cluster_is_compacted_first_and_decided_again_after() -> None:
    snapshot = cluster(
        *(snap(n, db_size=QUOTA, in_use=15 * MIB, metrics_quota=QUOTA) for n in ("m1", "m2")),
        snap("m3", db_size=QUOTA, in_use=15 * MIB, metrics_quota=QUOTA),
        alarms=(alarm("m1"),),
    )
    plan = plan_recover(snapshot, settings())

    # In use before compaction says nothing about after it: compact, then the run decides.
    assert plan.refusal is None
    assert plan.steps[0].kind is StepKind.COMPACT
    assert unrecoverable(snapshot, 0.9) is not None  # what the run checks after compacting


def test_live_data_below_the_limit_is_recovered() -> None:
    plan = plan_recover(full(in_use=4 * MIB), settings())
    assert plan.refusal is None
    assert [s.kind for s in plan.steps][-2:] == [StepKind.DISARM, StepKind.PROBE_WRITE]


@given(
    quota=st.integers(min_value=MIB, max_value=8 * 1024 * MIB),
    share=st.floats(min_value=0.9, max_value=1.0),
    max_use=st.floats(min_value=0.5, max_value=0.99),
)
def test_the_remedies_are_exactly_enough(quota: int, share: float, max_use: float) -> None:
    in_use = max(int(quota * max_use), int(quota * share))
    s = Shortfall("m1", 1, False, in_use, quota, max_use)
    assert in_use - s.to_delete < int(quota * max_use)  # deleting that gets below the limit
    assert in_use - (s.to_delete - 1) >= int(quota * max_use)  # one byte less does not
    assert in_use < int(s.quota_needed * max_use)  # the raised quota leaves room
    assert int((s.quota_needed - 1) * max_use) <= in_use  # and is the smallest that does
    assert s.quota_needed > quota


def test_disarm_waits_for_every_file_not_only_the_data_in_use() -> None:
    # m2's defrag was skipped or failed: little in use, but its file still at the quota.
    snapshot = cluster(
        snap("m1", db_size=5 * MIB, in_use=4 * MIB, metrics_quota=QUOTA),
        snap("m2", db_size=QUOTA, in_use=4 * MIB, metrics_quota=QUOTA),
        snap("m3", db_size=5 * MIB, in_use=4 * MIB, metrics_quota=QUOTA),
    )
    problem = recover_disarm_problem(snapshot, 0.9)
    assert problem is not None
    assert "m2's file is 16 MiB (16777216 bytes)" in problem
    assert "m1" not in problem and "m3" not in problem


def test_disarm_waits_for_a_learners_file_too() -> None:
    snapshot = cluster(
        *(snap(n, db_size=5 * MIB, in_use=4 * MIB, metrics_quota=QUOTA) for n in ("m1", "m2")),
        snap("m3", db_size=5 * MIB, in_use=4 * MIB, metrics_quota=QUOTA),
        snap("l1", learner=True, db_size=QUOTA, in_use=4 * MIB, metrics_quota=QUOTA),
    )
    problem = recover_disarm_problem(snapshot, 0.9)
    assert problem is not None and "l1 (learner)'s file is 16 MiB" in problem
    assert "etcdutl defrag --data-dir" in problem and "member remove" in problem


def test_disarm_refused_when_a_members_quota_is_unknown() -> None:
    snapshot = cluster(
        snap("m1", db_size=5 * MIB, in_use=4 * MIB, metrics_quota=QUOTA),
        snap("m2", db_size=5 * MIB, in_use=4 * MIB, metrics_up=False),
        snap("m3", db_size=5 * MIB, in_use=4 * MIB, metrics_quota=QUOTA),
    )
    problem = recover_disarm_problem(snapshot, 0.9)
    assert problem is not None
    assert "m2's quota is unknown" in problem and "etcd_server_quota_backend_bytes" in problem


def test_disarm_allowed_when_every_file_has_room() -> None:
    snapshot = cluster(
        *(snap(n, db_size=5 * MIB, in_use=4 * MIB, metrics_quota=QUOTA) for n in ("m1", "m2")),
        snap("m3", db_size=5 * MIB, in_use=4 * MIB, metrics_quota=QUOTA),
        snap("l1", learner=True, db_size=5 * MIB, in_use=4 * MIB, metrics_quota=QUOTA),
    )
    assert recover_disarm_problem(snapshot, 0.9) is None


def test_recovery_names_why_learners_are_not_defragmented() -> None:
    snapshot = cluster(
        snap("m1"), snap("m2"), snap("l1", learner=True), snap("m3"), alarms=(alarm("l1"),)
    )
    plan = plan_recover(snapshot, settings())
    defrags = [s.member_name for s in plan.steps if s.kind is StepKind.DEFRAG]
    assert defrags == ["m2", "m3", "m1"]
    assert [(s.member_name, s.reason) for s in plan.skipped] == [("l1", LEARNER_SKIPPED)]


def test_the_ordinary_sweep_still_leaves_learners_alone() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("l1", learner=True), snap("m3"))
    plan = plan_defrag(snapshot, settings())
    assert "l1" not in [s.member_name for s in plan.steps]
    assert [(s.member_name, s.reason) for s in plan.skipped] == [("l1", LEARNER_SKIPPED)]


# -- the daemon's back-off -----------------------------------------------------------------------


def test_backoff_holds_on_the_same_sizes_until_they_change_or_time_passes() -> None:
    refused_on = full()
    refused = unrecoverable(refused_on, 0.9)
    assert refused is not None
    backoff = NospaceBackoff()
    backoff.attempted(refused, now=100.0)

    held = backoff.hold(full(), now=105.0, retry_after=600.0)
    assert held is not None and "not tried again until" in held and "m1" in held
    assert backoff.hold(full(in_use=14 * MIB), now=105.0, retry_after=600.0) is None  # deleted
    assert backoff.hold(full(), now=700.0, retry_after=600.0) is None  # the bounded retry
    bigger = cluster(
        *(snap(n, db_size=QUOTA, in_use=15 * MIB, metrics_quota=32 * MIB) for n in ("m1",)),
        *refused_on.members[1:],
        alarms=refused_on.alarms,
    )
    assert backoff.hold(bigger, now=105.0, retry_after=600.0) is None  # the quota was raised


def test_backoff_forgets_once_the_alarm_is_gone() -> None:
    backoff = NospaceBackoff()
    refused = unrecoverable(full(), 0.9)
    backoff.attempted(refused, now=1.0)
    assert backoff.alarm_gone(full()) is False
    cleared = cluster(*full().members)
    assert backoff.alarm_gone(cleared) is True
    assert backoff.hold(full(), now=2.0, retry_after=600.0) is None


@pytest.mark.parametrize("refusals", [1, 3])
def test_metrics_count_refusals_and_say_how_much_to_delete(refusals: int) -> None:
    metrics = AgentMetrics()
    refused = unrecoverable(full(), 0.9)
    assert refused is not None
    for _ in range(refusals):
        metrics.record_nospace(refused)
    value = metrics.registry.get_sample_value
    assert value("etcdagent_nospace_unrecoverable") == 1
    assert value("etcdagent_nospace_unrecoverable_refusals_total") == refusals
    to_delete = value("etcdagent_nospace_to_delete_bytes", {"member": "m1", "member_id": "a1"})
    assert to_delete == nospace_shortfalls(full(), 0.9)[0].to_delete

    metrics.record_nospace(None, counted=False)
    assert value("etcdagent_nospace_unrecoverable") == 0
    assert value("etcdagent_nospace_unrecoverable_refusals_total") == refusals
    assert value("etcdagent_nospace_to_delete_bytes", {"member": "m1", "member_id": "a1"}) is None


# -- leadership during recovery ------------------------------------------------------------------


def test_recovery_defragments_a_leader_with_a_short_defrag_in_place() -> None:
    """Under NOSPACE a move costs a forwarded put etcd's request timeout (~6 s) and saves nothing
    (writes fail anyway): a 2 s leader defrag runs in place, and the plan says why."""
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3"), alarms=(alarm("m1"),))
    plan = plan_recover(snapshot, settings())

    assert [s.kind for s in plan.steps if s.kind is StepKind.MOVE_LEADER] == []
    assert [s.member_name for s in plan.steps if s.kind is StepKind.DEFRAG][-1] == "m1"
    assert any("defragmented in place" in n and "m1" in n for n in plan.notes), plan.notes


def test_recovery_moves_leadership_away_from_a_long_leader_defrag() -> None:
    snapshot = cluster(snap("m1", in_use=300 * MIB), snap("m2"), snap("m3"), alarms=(alarm("m1"),))
    plan = plan_recover(snapshot, settings())

    moves = [s for s in plan.steps if s.kind is StepKind.MOVE_LEADER]
    assert [m.member_name for m in moves] == ["m1"]
    assert not any("defragmented in place" in n for n in plan.notes)


def test_a_short_lock_ttl_lowers_the_threshold_for_moving() -> None:
    """A 3 s lease lapses during a 2 s leader defrag's keep-alive gap sooner: move from 1 s."""
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3"), alarms=(alarm("m1"),))
    plan = plan_recover(snapshot, settings(lock={"ttl": 3}))

    assert [s.member_name for s in plan.steps if s.kind is StepKind.MOVE_LEADER] == ["m1"]
