"""The decision rules of etcdagent.decide, from hand-built snapshots: gates, quorum, which members
are defragmented and in what order, move-leader, timeouts, compaction plans and NOSPACE recovery."""

from __future__ import annotations

import pytest
from etcdagent_testing.snapshots import GIB, IDS, MIB, alarm, cluster, settings, snap, three
from hypothesis import given
from hypothesis import strategies as st

from etcdagent.decide.compaction import Marker, plan_compaction
from etcdagent.decide.defrag import defrag_timeout, defrag_worth, plan_defrag
from etcdagent.decide.gates import cluster_gate_failures, quorum_failure
from etcdagent.decide.plan import Plan, StepKind
from etcdagent.decide.recovery import plan_recover, recover_disarm_problem
from etcdagent.models import AlarmType
from etcdagent.settings import DefragSettings


def kinds(plan: Plan) -> list[StepKind]:
    return [s.kind for s in plan.steps]


def names(plan: Plan, kind: StepKind = StepKind.DEFRAG) -> list[str]:
    return [s.member_label for s in plan.steps if s.kind is kind]


# -- gates -------------------------------------------------------------------------------------


def test_healthy_cluster_passes_every_gate() -> None:
    assert cluster_gate_failures(three(), DefragSettings()) == []


def test_a_voting_member_that_does_not_answer_refuses_the_whole_sweep_and_is_named() -> None:
    plan = plan_defrag(cluster(snap("m1"), snap("m2"), snap("m3", up=False)), settings())
    assert plan.refusal is not None
    assert "m3 does not answer" in plan.refusal
    assert "connection refused" in plan.refusal
    assert "m2" not in plan.refusal
    assert plan.steps == ()


def test_force_does_not_bypass_the_health_gate() -> None:
    plan = plan_defrag(
        cluster(snap("m1"), snap("m2", up=False), snap("m3")), settings(), force=True
    )
    assert plan.refusal is not None
    assert "m2" in plan.refusal
    assert plan.steps == ()


def test_a_learner_that_does_not_answer_does_not_refuse_the_sweep() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3"), snap("l1", learner=True, up=False))
    plan = plan_defrag(snapshot, settings())
    assert plan.refusal is None
    assert names(plan) == ["m2", "m3", "m1"]


def test_no_leader_refuses_the_sweep() -> None:
    plan = plan_defrag(three(leader=None), settings())
    assert plan.refusal is not None
    assert "no leader" in plan.refusal
    assert plan.steps == ()


def test_corrupt_alarm_refuses_the_sweep_and_names_the_member() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3"), alarms=(alarm("m2", AlarmType.CORRUPT),))
    plan = plan_defrag(snapshot, settings(), force=True)
    assert plan.refusal is not None
    assert "CORRUPT alarm on m2" in plan.refusal
    assert plan.steps == ()


def test_nospace_alarm_does_not_refuse_a_defrag() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3"), alarms=(alarm("m1"),))
    assert cluster_gate_failures(snapshot, DefragSettings()) == []
    plan = plan_defrag(snapshot, settings())
    assert plan.refusal is None
    assert names(plan) == ["m2", "m3", "m1"]


def test_apply_lag_over_the_limit_refuses_and_says_by_how_much() -> None:
    snapshot = cluster(snap("m1"), snap("m2", raft_index=5000, applied=3999), snap("m3"))
    plan = plan_defrag(snapshot, settings(defrag={"max_apply_lag": 1000}))
    assert plan.refusal is not None
    assert "m2 is 1001 raft entries behind" in plan.refusal
    assert "1000" in plan.refusal
    assert plan.steps == ()


def test_apply_lag_at_the_limit_is_allowed() -> None:
    snapshot = cluster(snap("m1"), snap("m2", raft_index=5000, applied=4000), snap("m3"))
    plan = plan_defrag(snapshot, settings(defrag={"max_apply_lag": 1000}))
    assert plan.refusal is None
    assert len(names(plan)) == 3


def test_every_gate_failure_is_listed_in_the_refusal() -> None:
    snapshot = cluster(
        snap("m1", leader=None),
        snap("m2", leader=None, applied=0),
        snap("m3", up=False),
        alarms=(alarm("m1", AlarmType.CORRUPT),),
    )
    failures = cluster_gate_failures(snapshot, DefragSettings(max_apply_lag=10))
    assert len(failures) == 4
    assert any("m3 does not answer" in f for f in failures)
    assert "no leader" in failures
    assert any("CORRUPT" in f for f in failures)
    assert any("m2 is 700 raft entries behind" in f for f in failures)


# -- quorum ------------------------------------------------------------------------------------


def test_three_members_all_answering_can_spare_any_one() -> None:
    snapshot = three()
    assert all(quorum_failure(snapshot, m) is None for m in snapshot.members)


def test_five_members_with_one_down_can_still_spare_one() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3"), snap("m4"), snap("m5", up=False))
    assert quorum_failure(snapshot, snapshot.members[1]) is None


def test_five_members_with_two_down_cannot_spare_another() -> None:
    snapshot = cluster(
        snap("m1"), snap("m2"), snap("m3"), snap("m4", up=False), snap("m5", up=False)
    )
    problem = quorum_failure(snapshot, snapshot.members[1])
    assert problem is not None
    assert "without m2 only 2 of 5 voting members would answer; quorum needs 3" in problem


@pytest.mark.parametrize("size", [1, 2])
def test_one_and_two_member_clusters_have_no_member_to_spare(size: int) -> None:
    snapshot = cluster(*(snap(f"m{i}") for i in range(1, size + 1)))
    plan = plan_defrag(snapshot, settings())
    assert plan.refusal is not None
    assert f"a {size}-member cluster has no member to spare" in plan.refusal
    assert plan.steps == ()


def test_learners_do_not_count_as_a_member_to_spare() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("l1", learner=True))
    plan = plan_defrag(snapshot, settings())
    assert plan.refusal is not None
    assert "a 2-member cluster has no member to spare" in plan.refusal


def test_a_two_member_cluster_with_nothing_worth_defragmenting_is_not_refused() -> None:
    snapshot = cluster(snap("m1", in_use=399 * MIB), snap("m2", in_use=399 * MIB))
    plan = plan_defrag(snapshot, settings())
    assert plan.refusal is None
    assert plan.nothing_to_do


# -- worth it ----------------------------------------------------------------------------------


def test_worth_it_shows_the_numbers() -> None:
    member = snap("m2", db_size=675 * MIB, in_use=263 * MIB)
    worth, why = defrag_worth(member, DefragSettings())
    assert worth
    assert why == "61% free, 412 MiB reclaimable of 675 MiB"
    plan = plan_defrag(
        cluster(snap("m1", in_use=400 * MIB), member, snap("m3", in_use=400 * MIB)), settings()
    )
    assert [s.reason for s in plan.steps] == ["61% free, 412 MiB reclaimable of 675 MiB"]
    assert plan.steps[0].reclaimable == 412 * MIB
    assert plan.steps[0].db_size == 675 * MIB


def test_exactly_at_the_default_thresholds_is_worth_it() -> None:
    worth, _ = defrag_worth(snap("m1", db_size=100 * MIB, in_use=55 * MIB), DefragSettings())
    assert worth


def test_not_enough_free_space_is_skipped_with_the_numbers_and_the_rule() -> None:
    snapshot = cluster(snap("m1"), snap("m2", db_size=GIB, in_use=600 * MIB), snap("m3"))
    plan = plan_defrag(snapshot, settings())
    assert names(plan) == ["m3", "m1"]
    [skip] = plan.skipped
    assert skip.member_name == "m2"
    assert skip.member_id == IDS["m2"]
    assert skip.reason.startswith("41% free, 424 MiB reclaimable of 1.0 GiB: not worth it")
    assert "needs >= 45% free of a file >= 100 MiB" in skip.reason
    assert "quota use >= 80% with >= 64 MiB reclaimable" in skip.reason


def test_a_small_file_is_not_worth_it_however_fragmented() -> None:
    worth, why = defrag_worth(snap("m1", db_size=50 * MIB, in_use=5 * MIB), DefragSettings())
    assert not worth
    assert why.startswith("90% free, 45 MiB reclaimable of 50 MiB: not worth it")


def test_the_thresholds_come_from_the_settings() -> None:
    member = snap("m1", db_size=50 * MIB, in_use=40 * MIB)
    worth, _ = defrag_worth(member, DefragSettings(min_free_ratio=0.1, min_db_size=10 * MIB))
    assert worth


def test_quota_pressure_makes_a_little_fragmentation_worth_it() -> None:
    member = snap("m1", db_size=1700 * MIB, in_use=1630 * MIB, quota=2 * GIB)
    worth, why = defrag_worth(member, DefragSettings())
    assert worth
    assert "70 MiB reclaimable of 1.7 GiB" in why
    assert "quota 83% used" in why
    assert "(quota pressure)" in why


def test_quota_pressure_uses_the_quota_from_metrics_on_3_5() -> None:
    member = snap("m1", db_size=1700 * MIB, in_use=1630 * MIB, metrics_quota=2 * GIB)
    worth, why = defrag_worth(member, DefragSettings())
    assert worth
    assert "quota 83% used" in why


def test_quota_pressure_with_too_little_to_reclaim_is_not_worth_it() -> None:
    member = snap("m1", db_size=1700 * MIB, in_use=1640 * MIB, quota=2 * GIB)
    worth, why = defrag_worth(member, DefragSettings())
    assert not worth
    assert "quota 83% used: not worth it" in why


def test_low_quota_use_does_not_trigger_the_pressure_rule() -> None:
    member = snap("m1", db_size=1000 * MIB, in_use=900 * MIB, quota=8 * GIB)
    worth, _ = defrag_worth(member, DefragSettings())
    assert not worth


def test_force_plans_every_voting_member_regardless() -> None:
    snapshot = cluster(
        snap("m1", in_use=399 * MIB),
        snap("m2", db_size=10 * MIB, in_use=10 * MIB),
        snap("m3", in_use=399 * MIB),
    )
    assert plan_defrag(snapshot, settings()).nothing_to_do
    plan = plan_defrag(snapshot, settings(), force=True)
    assert plan.refusal is None
    assert plan.skipped == ()
    assert sorted(names(plan)) == ["m1", "m2", "m3"]
    assert names(plan)[-1] == "m1"
    steps = [s for s in plan.steps if s.kind is StepKind.DEFRAG]
    assert all(s.reason.endswith("(forced)") or "[leader, last]" in s.reason for s in steps)
    assert all("not worth it" not in s.reason for s in steps)


# -- learners ----------------------------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_learners_are_never_defragmented_by_the_sweep(force: bool) -> None:
    snapshot = cluster(snap("m1"), snap("l1", learner=True), snap("m2"), snap("m3"))
    plan = plan_defrag(snapshot, settings(), force=force)
    assert "l1" not in names(plan)
    assert len(names(plan)) == 3
    assert "l1" not in names(plan, StepKind.MOVE_LEADER)
    [skip] = plan.skipped
    assert skip.member_name == "l1"
    assert "learner" in skip.reason


def test_a_member_that_reports_itself_as_learner_is_skipped() -> None:
    learner_by_status = snap("l1", learner=True).model_copy(update={"member": snap("l1").member})
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3"), learner_by_status)
    plan = plan_defrag(snapshot, settings())
    assert "l1" not in names(plan)
    assert [s.member_name for s in plan.skipped] == ["l1"]


# -- order -------------------------------------------------------------------------------------


def test_followers_first_most_reclaimable_first_and_the_leader_last() -> None:
    snapshot = cluster(
        snap("m1", leader="m3", in_use=10 * MIB),  # the most to reclaim, but...
        snap("m2", leader="m3", in_use=200 * MIB),
        snap("m3", leader="m3", in_use=5 * MIB),  # ...m3 is the leader
        snap("m4", leader="m3", in_use=100 * MIB),
        snap("m5", leader="m3", in_use=150 * MIB),
    )
    plan = plan_defrag(snapshot, settings())
    assert names(plan) == ["m1", "m4", "m5", "m2", "m3"]
    steps = [s for s in plan.steps if s.kind is StepKind.DEFRAG]
    assert steps[-1].reason.endswith("[leader, last]")
    assert not any("leader" in s.reason for s in steps[:-1])


@given(
    frees=st.lists(st.integers(min_value=0, max_value=300), min_size=3, max_size=5),
    leader=st.integers(min_value=0, max_value=4),
)
def test_order_property_leader_last_followers_by_reclaimable(frees: list[int], leader: int) -> None:
    leader_name = f"m{leader % len(frees) + 1}"
    snapshot = cluster(
        *(
            snap(f"m{i + 1}", leader=leader_name, in_use=(400 - free) * MIB)
            for i, free in enumerate(frees)
        )
    )
    plan = plan_defrag(snapshot, settings(), force=True)
    assert plan.refusal is None
    steps = [s for s in plan.steps if s.kind is StepKind.DEFRAG]
    assert steps[-1].member_name == leader_name
    followers = [s.reclaimable or 0 for s in steps[:-1]]
    assert followers == sorted(followers, reverse=True)
    assert len(steps) == len(frees)


# -- move leader -------------------------------------------------------------------------------


def test_move_leader_comes_right_before_the_leaders_defrag_to_a_defragmented_member() -> None:
    snapshot = cluster(
        snap("m1", in_use=50 * MIB), snap("m2", in_use=100 * MIB), snap("m3", in_use=200 * MIB)
    )
    plan = plan_defrag(snapshot, settings(defrag={"move_leader": True}))
    assert kinds(plan) == [
        StepKind.DEFRAG,
        StepKind.DEFRAG,
        StepKind.MOVE_LEADER,
        StepKind.DEFRAG,
    ]
    move = plan.steps[2]
    assert move.member_id == IDS["m1"]
    assert move.target_id in {IDS["m2"], IDS["m3"]}
    assert move.target_name in names(plan)[:2]
    assert "already defragmented" in move.reason
    assert plan.steps[3].member_name == "m1"


def test_move_leader_targets_a_healthy_follower_when_none_is_defragmented_yet() -> None:
    snapshot = cluster(snap("m1"), snap("m2", in_use=399 * MIB), snap("m3", in_use=399 * MIB))
    plan = plan_defrag(snapshot, settings(defrag={"move_leader": True}))
    assert kinds(plan) == [StepKind.MOVE_LEADER, StepKind.DEFRAG]
    move = plan.steps[0]
    assert move.member_id == IDS["m1"]
    assert move.target_name in {"m2", "m3"}
    assert "is healthy" in move.reason
    assert plan.steps[1].member_name == "m1"


def test_leadership_moves_by_default() -> None:
    plan = plan_defrag(three(), settings())
    assert kinds(plan) == [StepKind.DEFRAG, StepKind.DEFRAG, StepKind.MOVE_LEADER, StepKind.DEFRAG]
    assert plan.steps[2].target_name == names(plan)[1]  # the member done last: moves only once


def test_move_leader_skips_a_done_member_that_lags_behind_the_leader() -> None:
    # m1 leads at raft index 5000; m2 (done first, most reclaimable) has committed only 3000.
    snapshot = cluster(
        snap("m1", raft_index=5000),
        snap("m2", raft_index=3000, in_use=10 * MIB),
        snap("m3", raft_index=4990, in_use=50 * MIB),
    )
    plan = plan_defrag(snapshot, settings(defrag={"max_apply_lag": 1000}))
    [move] = [s for s in plan.steps if s.kind is StepKind.MOVE_LEADER]
    assert move.target_name == "m3"


def test_move_leader_takes_no_member_that_is_behind_in_applying_or_down() -> None:
    # m2 applies within the gate but far behind m3; m3 is the most caught-up follower.
    snapshot = cluster(  # only the leader is worth defragmenting: no member is done first
        snap("m1", raft_index=5000),
        snap("m2", in_use=399 * MIB, raft_index=5000, applied=4500),
        snap("m3", in_use=399 * MIB, raft_index=5000),
    )
    plan = plan_defrag(snapshot, settings())
    assert plan.steps[0].kind is StepKind.MOVE_LEADER
    assert plan.steps[0].target_name == "m3"
    assert "caught up" in plan.steps[0].reason


def test_move_leader_is_not_planned_without_a_caught_up_member() -> None:
    snapshot = cluster(
        snap("m1", raft_index=9000),
        snap("m2", in_use=399 * MIB, raft_index=5000),
        snap("m3", in_use=399 * MIB, raft_index=5000),
    )
    plan = plan_defrag(snapshot, settings(defrag={"max_apply_lag": 1000}))
    assert StepKind.MOVE_LEADER not in kinds(plan)
    assert any("leadership" in note for note in plan.notes)


def test_move_leader_never_hands_leadership_to_a_learner() -> None:
    snapshot = cluster(
        snap("m1"),
        snap("l1", learner=True),
        snap("m2", in_use=399 * MIB),
        snap("m3", in_use=399 * MIB),
    )
    plan = plan_defrag(snapshot, settings(defrag={"move_leader": True}))
    move = plan.steps[0]
    assert move.kind is StepKind.MOVE_LEADER
    assert move.target_name in {"m2", "m3"}


def test_without_move_leader_there_is_no_move_step() -> None:
    plan = plan_defrag(three(), settings(defrag={"move_leader": False}))
    assert StepKind.MOVE_LEADER not in kinds(plan)
    assert kinds(plan) == [StepKind.DEFRAG] * 3


def test_move_leader_is_not_planned_when_the_leader_is_not_defragmented() -> None:
    snapshot = cluster(snap("m1", in_use=399 * MIB), snap("m2"), snap("m3"))
    plan = plan_defrag(snapshot, settings(defrag={"move_leader": True}))
    assert kinds(plan) == [StepKind.DEFRAG, StepKind.DEFRAG]


# -- timeouts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [(100 * MIB, 60.0), (8 * GIB, 8 * 120.0), (100 * GIB, 1800.0), (0, 60.0)],
)
def test_defrag_timeout_scales_with_the_file(size: int, expected: float) -> None:
    assert defrag_timeout(size, DefragSettings()) == pytest.approx(expected)


def test_defrag_timeout_follows_the_settings() -> None:
    custom = DefragSettings(timeout_min=10, timeout_per_gib=30, timeout_max=100)
    assert defrag_timeout(GIB // 2, custom) == 15.0
    assert defrag_timeout(GIB, custom) == 30.0
    assert defrag_timeout(10 * GIB, custom) == 100.0


def test_each_defrag_step_carries_the_timeout_for_its_own_file() -> None:
    snapshot = cluster(
        snap("m1", db_size=8 * GIB, in_use=GIB),
        snap("m2", db_size=200 * MIB, in_use=10 * MIB),
        snap("m3", db_size=100 * GIB, in_use=GIB),
    )
    plan = plan_defrag(snapshot, settings())
    timeouts = {s.member_name: s.timeout for s in plan.steps}
    assert timeouts == {"m1": 960.0, "m2": 60.0, "m3": 1800.0}


# -- compaction plan ---------------------------------------------------------------------------


def test_compaction_goes_via_the_leader_and_keeps_the_retention() -> None:
    snapshot = three(leader="m2", revision=5000)
    plan = plan_compaction(snapshot, settings(compaction={"retain_revisions": 1000}), [])
    assert plan.refusal is None
    [step] = plan.steps
    assert step.kind is StepKind.COMPACT
    assert step.revision == 4000
    assert step.member_id == IDS["m2"]
    assert step.endpoint == "http://m2:2379"
    assert "keeps the last 1000 revisions" in step.reason


def test_compaction_reason_says_which_revisions_are_dropped() -> None:
    snapshot = three(revision=5000, compact_revision=3000)
    plan = plan_compaction(snapshot, settings(compaction={"retain_revisions": 1000}), [])
    assert plan.steps[0].reason.startswith("drops revisions 3001..3999")


def test_compaction_without_quorum_is_refused() -> None:
    snapshot = cluster(snap("m1"), snap("m2", up=False), snap("m3", up=False))
    plan = plan_compaction(snapshot, settings(compaction={"retain_revisions": 10}), [])
    assert plan.refusal is not None
    assert "1 of 3 voting members answer" in plan.refusal
    assert plan.steps == ()


def test_compaction_without_leader_is_refused() -> None:
    plan = plan_compaction(three(leader=None), settings(compaction={"retain_revisions": 10}), [])
    assert plan.refusal is not None
    assert "no leader" in plan.refusal
    assert plan.steps == ()


def test_compaction_with_one_member_down_still_runs() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3", up=False))
    plan = plan_compaction(snapshot, settings(compaction={"retain_revisions": 10}), [])
    assert plan.refusal is None
    assert kinds(plan) == [StepKind.COMPACT]


def test_nothing_to_compact_is_a_note_not_a_refusal() -> None:
    plan = plan_compaction(three(), settings(), [])
    assert plan.refusal is None
    assert plan.nothing_to_do
    assert plan.notes[0].startswith("nothing to compact: no revision is known to be older than")


def test_time_retention_compacts_to_the_marker() -> None:
    markers = [Marker(revision=4200, age=6 * 60)]
    plan = plan_compaction(three(), settings(), markers)
    assert [s.revision for s in plan.steps] == [4200]


# -- NOSPACE recovery --------------------------------------------------------------------------


def test_recover_without_nospace_has_nothing_to_do() -> None:
    plan = plan_recover(three(), settings())
    assert plan.nothing_to_do
    assert plan.notes == ("nothing to recover: no NOSPACE alarm is raised",)


def test_recover_refuses_on_corrupt() -> None:
    snapshot = cluster(
        snap("m1"),
        snap("m2"),
        snap("m3"),
        alarms=(alarm("m1"), alarm("m2", AlarmType.CORRUPT)),
    )
    plan = plan_recover(snapshot, settings())
    assert plan.refusal is not None
    assert "CORRUPT" in plan.refusal
    assert plan.steps == ()


def test_recover_compacts_defragments_every_voting_member_disarms_then_probes() -> None:
    snapshot = cluster(
        snap("m1", revision=9000, in_use=399 * MIB),
        snap("m2", revision=9000, in_use=100 * MIB),
        snap("l1", learner=True, revision=9000),
        snap("m3", revision=9000, in_use=50 * MIB),
        alarms=(alarm("m1"), alarm("m3")),
    )
    plan = plan_recover(snapshot, settings())
    assert plan.refusal is None
    assert kinds(plan) == [
        StepKind.COMPACT,
        StepKind.DEFRAG,
        StepKind.DEFRAG,
        StepKind.MOVE_LEADER,  # defrag.move_leader's default
        StepKind.DEFRAG,
        StepKind.DISARM,
        StepKind.PROBE_WRITE,
    ]
    assert plan.steps[0].revision == 9000
    assert plan.steps[0].member_id == IDS["m1"]
    # m1 is not worth defragmenting by the sweep's rules, but recovery does every voting member;
    # etcd refuses Defragment on a learner, whose file the disarm checks instead.
    assert names(plan) == ["m3", "m2", "m1"]
    assert [s.member_name for s in plan.skipped] == ["l1"]
    assert "rpc not supported for learner" in plan.skipped[0].reason
    # One DISARM step deactivates every NOSPACE alarm listed when it runs (members raise their
    # own alarms, possibly after planning); its reason names the ones raised now.
    disarm = plan.steps[5]
    assert disarm.alarm is not None and disarm.alarm.alarm is AlarmType.NOSPACE
    assert "m1" in disarm.reason and "m3" in disarm.reason
    assert any("retention shortened" in n for n in plan.notes)


def test_recover_does_not_compact_again_when_already_compacted_to_the_current_revision() -> None:
    snapshot = cluster(
        snap("m1", compact_revision=5000),
        snap("m2"),
        snap("m3"),
        alarms=(alarm("m2"),),
    )
    plan = plan_recover(snapshot, settings())
    assert StepKind.COMPACT not in kinds(plan)
    assert kinds(plan)[-2:] == [StepKind.DISARM, StepKind.PROBE_WRITE]


def test_recover_refuses_when_a_voting_member_does_not_answer() -> None:
    snapshot = cluster(snap("m1"), snap("m2", up=False), snap("m3"), alarms=(alarm("m1"),))
    plan = plan_recover(snapshot, settings())
    assert plan.refusal is not None
    assert "m2" in plan.refusal
    assert plan.steps == ()


@pytest.mark.parametrize("size", [1, 2])
def test_recover_plans_small_clusters_with_a_note(size: int) -> None:
    snapshot = cluster(*(snap(f"m{i}") for i in range(1, size + 1)), alarms=(alarm("m1"),))
    plan = plan_recover(snapshot, settings())
    assert plan.refusal is None
    assert len(names(plan)) == size
    assert names(plan)[-1] == "m1"
    assert all(s.no_spare_ok for s in plan.steps if s.kind is StepKind.DEFRAG)
    assert any("no member to spare" in n for n in plan.notes)


def test_disarm_problem_says_how_much_to_delete() -> None:
    snapshot = cluster(
        snap("m1", db_size=2 * GIB, in_use=int(0.95 * 2 * GIB), quota=2 * GIB),
        snap("m2", db_size=2 * GIB, in_use=GIB, quota=2 * GIB),
        snap("m3", db_size=2 * GIB, in_use=GIB, quota=2 * GIB),
        alarms=(alarm("m1"),),
    )
    problem = recover_disarm_problem(snapshot, 0.9)
    assert problem is not None
    assert "m1 holds 1.9 GiB of live data against a 2.0 GiB quota" in problem
    assert "delete at least 102 MiB" in problem
    assert "90%" in problem
    # Not compacted yet: decided again on the sizes the compaction leaves, before any defrag.
    plan = plan_recover(snapshot, settings())
    assert plan.refusal is None
    assert any("decided again after the compaction" in n for n in plan.notes)


def test_no_disarm_problem_when_the_live_data_leaves_room() -> None:
    snapshot = three(db_size=GIB + 100 * MIB, in_use=GIB, metrics_quota=2 * GIB)
    assert recover_disarm_problem(snapshot, 0.9) is None


def test_recover_with_move_leader_still_ends_with_disarm_and_probe() -> None:
    # A leader defrag long enough (6 s estimated) to be moved away from during recovery.
    snapshot = cluster(snap("m1", in_use=300 * MIB), snap("m2"), snap("m3"), alarms=(alarm("m1"),))
    plan = plan_recover(snapshot, settings(defrag={"move_leader": True}))
    assert kinds(plan) == [
        StepKind.COMPACT,
        StepKind.DEFRAG,
        StepKind.DEFRAG,
        StepKind.MOVE_LEADER,
        StepKind.DEFRAG,
        StepKind.DISARM,
        StepKind.PROBE_WRITE,
    ]


# -- --local-member (a DaemonSet replica per control-plane node) ----------------------------------


def test_local_member_defragments_only_its_own_member() -> None:
    plan = plan_defrag(three(), settings(), local="m2")
    assert names(plan) == ["m2"]
    others = {s.member_name: s.reason for s in plan.skipped}
    assert set(others) == {"m1", "m3"}
    assert "left to its own replica (this one maintains m2)" in others["m3"]


def test_local_member_matches_a_client_url_too() -> None:
    member_url = snap("m3").member.client_urls[0]
    assert names(plan_defrag(three(), settings(), local=member_url)) == ["m3"]


def test_the_leaders_replica_waits_for_the_followers() -> None:
    plan = plan_defrag(three(), settings(), local="m1")  # m1 leads; m2 and m3 still need it
    assert plan.steps == ()
    waiting = next(s for s in plan.skipped if s.member_name == "m1")
    assert "the leader waits until the followers are done (m2, m3 still to do)" in waiting.reason


def test_the_leaders_replica_goes_once_the_followers_are_done() -> None:
    done = 100 * MIB  # a defragmented follower: file == in use, nothing left to reclaim
    snapshot = cluster(
        snap("m1"), snap("m2", db_size=done, in_use=done), snap("m3", db_size=done, in_use=done)
    )
    assert names(plan_defrag(snapshot, settings(), local="m1")) == ["m1"]
