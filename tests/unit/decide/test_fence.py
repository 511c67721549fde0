"""The defrag fence from hand-built snapshots: who is (or may be) defragmenting now, by name, and
that planning, recovery and the daemon's gate all say no while one is."""

from __future__ import annotations

from etcdagent_testing.snapshots import alarm, cluster, settings, snap, three

from etcdagent.decide.defrag import plan_defrag
from etcdagent.decide.fence import (
    FALLBACK_APPLY_LAG,
    GATE,
    defrag_fence,
    fence_reasons,
    fence_refusal,
)
from etcdagent.decide.plan import StepKind
from etcdagent.decide.recovery import plan_recover
from etcdagent.decide.triggers import GATES, SAFETY_GATES, evaluate_gates


def test_a_quiet_cluster_passes_the_fence() -> None:
    assert defrag_fence(three()) is None
    assert fence_refusal(three()) is None


def test_a_member_whose_gauge_says_so_is_named() -> None:
    snapshot = cluster(snap("m1"), snap("m2", defrag_inflight=True), snap("m3"))
    assert fence_reasons(snapshot) == ["m2 is being defragmented now (etcd_disk_defrag_inflight=1)"]


def test_every_busy_member_is_named() -> None:
    snapshot = cluster(
        snap("m1", defrag_inflight=True), snap("m2"), snap("m3", defrag_inflight=True)
    )
    refusal = fence_refusal(snapshot)
    assert refusal is not None
    assert refusal.startswith("a defrag is running on m1, m3: ")


def test_a_defragmenting_learner_fences_too() -> None:
    snapshot = cluster(
        snap("m1"), snap("m2"), snap("m3"), snap("l1", learner=True, defrag_inflight=True)
    )
    assert defrag_fence(snapshot) == "l1 is being defragmented now (etcd_disk_defrag_inflight=1)"


def test_a_learner_that_does_not_answer_does_not_fence() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3"), snap("l1", learner=True, up=False))
    assert defrag_fence(snapshot) is None


def test_a_voting_member_whose_status_does_not_answer_may_be_defragmenting() -> None:
    # A defragmenting etcd blocks its status (measured on 3.4.23, 3.5.1, 3.5.30, 3.6.14).
    snapshot = cluster(snap("m1"), snap("m2", up=False), snap("m3"))
    reason = defrag_fence(snapshot)
    assert reason is not None
    assert reason.startswith("cannot tell whether m2 is defragmenting: ")
    refusal = fence_refusal(snapshot)
    assert refusal is not None and refusal.startswith("a defrag may be running on m2: ")


def test_a_member_whose_metrics_do_not_answer_may_be_defragmenting() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3", metrics_up=False))
    reason = defrag_fence(snapshot)
    assert reason is not None
    assert "cannot tell whether m3 is defragmenting: /metrics: " in reason
    assert "connection refused" in reason


def test_without_the_gauge_a_member_trailing_in_applying_may_be_defragmenting() -> None:
    lagging = snap("m2", defrag_inflight=None, applied=700 - FALLBACK_APPLY_LAG - 1)
    reason = defrag_fence(cluster(snap("m1"), lagging, snap("m3")))
    assert reason is not None
    assert "m2 may be defragmenting now" in reason
    assert "exports no etcd_disk_defrag_inflight" in reason
    assert f"trails {FALLBACK_APPLY_LAG + 1} raft entries" in reason


def test_without_the_gauge_a_caught_up_member_passes() -> None:
    near = snap("m2", defrag_inflight=None, applied=700 - FALLBACK_APPLY_LAG)
    assert defrag_fence(cluster(snap("m1"), near, snap("m3"))) is None


def test_with_the_gauge_apply_lag_is_the_health_gate_s_business() -> None:
    lagging = snap("m2", defrag_inflight=False, applied=700 - FALLBACK_APPLY_LAG - 1)
    assert defrag_fence(cluster(snap("m1"), lagging, snap("m3"))) is None


def test_plan_defrag_refuses_naming_the_busy_member_even_when_forced() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3", defrag_inflight=True))
    plan = plan_defrag(snapshot, settings(), force=True)
    assert plan.refusal == (
        "a defrag is running on m3: m3 is being defragmented now (etcd_disk_defrag_inflight=1)"
    )
    assert plan.steps == ()


def test_nospace_recovery_refuses_while_a_member_defragments() -> None:
    snapshot = cluster(
        snap("m1"), snap("m2", defrag_inflight=True), snap("m3"), alarms=(alarm("m1"),)
    )
    plan = plan_recover(snapshot, settings())
    assert plan.refusal is not None
    assert "a defrag is running on m2" in plan.refusal


def test_nospace_recovery_goes_ahead_when_no_member_defragments() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3"), alarms=(alarm("m1"),))
    plan = plan_recover(snapshot, settings())
    assert plan.refusal is None
    assert StepKind.DEFRAG in [s.kind for s in plan.steps]


def test_the_daemon_names_the_fence_as_its_own_safety_gate() -> None:
    assert GATE in GATES
    assert GATE in SAFETY_GATES  # quota emergencies wait for it too
    snapshot = cluster(snap("m1"), snap("m2", defrag_inflight=True), snap("m3"))
    gates = evaluate_gates(snapshot, {}, settings(), None)
    assert gates[GATE] == "m2 is being defragmented now (etcd_disk_defrag_inflight=1)"
    assert gates["cluster_health"] is None  # separate from the health gate
