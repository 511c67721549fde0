"""The defrag budget: each member's estimated defrag duration (its own history, else the
configured rate, raised to etcd's own mean), the members it holds back (over budget, or restarted
mid-defrag) with the offline procedure, the advisory gate, and the cap at the grace period."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from etcdagent_testing.snapshots import GIB, MIB, WHEN, cluster, settings, snap

from etcdagent.decide.defrag import plan_defrag
from etcdagent.decide.defrag_budget import estimate_defrag, estimate_defrag_seconds, within_grace
from etcdagent.decide.plan import StepKind
from etcdagent.decide.recovery import plan_recover
from etcdagent.decide.triggers import CycleDecision, Trigger, decide_cycle
from etcdagent.decide.windows import WindowState
from etcdagent.models import Alarm, AlarmType, Histogram, MemberMetrics
from etcdagent.observe.signals import MemberSignals
from etcdagent.observe.snapshot import (
    ClusterSnapshot,
    DefragAttempt,
    DefragRecord,
    MemberSnapshot,
)
from etcdagent.settings import Settings, load_settings

RATE_50 = settings()  # defrag.estimated_rate 50 MiB/s, budget 60 s


def with_record(member: MemberSnapshot, **fields: Any) -> MemberSnapshot:
    return member.model_copy(update={"defrag_record": DefragRecord(**fields)})


def with_metrics(member: MemberSnapshot, **fields: Any) -> MemberSnapshot:
    return member.model_copy(update={"metrics": MemberMetrics(scraped_at=WHEN, **fields)})


def defrag_names(snapshot: ClusterSnapshot, **kw: Any) -> list[str]:
    plan = plan_defrag(snapshot, kw.pop("s", RATE_50), **kw)
    return [s.member_label for s in plan.steps if s.kind is StepKind.DEFRAG]


def skip_reason(snapshot: ClusterSnapshot, name: str, **kw: Any) -> str:
    plan = plan_defrag(snapshot, kw.pop("s", RATE_50), **kw)
    return next(s.reason for s in plan.skipped if s.member_name == name)


# -- the estimate ------------------------------------------------------------------------------


def test_without_history_the_data_in_use_at_the_configured_rate() -> None:
    estimate = estimate_defrag(snap("m2", in_use=100 * MIB), RATE_50.defrag)
    assert estimate.seconds == 2.0
    assert "estimated_rate" in estimate.basis


def test_the_free_pages_do_not_count_a_defrag_rewrites_the_live_data() -> None:
    big_file = snap("m2", db_size=4 * GIB, in_use=100 * MIB)
    assert estimate_defrag_seconds(big_file, RATE_50.defrag) == 2.0


def test_the_members_last_defrag_gives_its_rate() -> None:
    member = with_record(snap("m2", in_use=100 * MIB), in_use=200 * MIB, duration=10.0)
    estimate = estimate_defrag(member, RATE_50.defrag)
    assert estimate.seconds == 5.0  # 20 MiB/s measured there, not the configured 50
    assert "last defrag" in estimate.basis


def test_a_tiny_last_defrag_measures_fixed_costs_and_is_not_extrapolated() -> None:
    member = with_record(snap("m2", in_use=100 * MIB), in_use=1 * MIB, duration=0.3)
    assert estimate_defrag_seconds(member, RATE_50.defrag) == 2.0


def test_etcds_own_mean_counts_when_it_is_slower_and_the_agent_has_no_history() -> None:
    histogram = Histogram(buckets=((float("inf"), 2.0),), count=2.0, sum=200.0)
    member = with_metrics(snap("m2", in_use=100 * MIB), defrag_duration=histogram)
    estimate = estimate_defrag(member, RATE_50.defrag)
    assert estimate.seconds == 100.0
    assert "etcd's own mean of its 2 defrag(s)" in estimate.basis
    # The agent's own measurement (with the size it rewrote) wins over a mean of unknown sizes.
    measured = with_record(member, in_use=100 * MIB, duration=4.0)
    assert estimate_defrag_seconds(measured, RATE_50.defrag) == 4.0


# -- the plan ----------------------------------------------------------------------------------


def test_a_member_over_budget_is_skipped_with_the_numbers_and_the_offline_procedure() -> None:
    snapshot = cluster(snap("m1"), snap("m2", db_size=8 * GIB, in_use=4 * GIB), snap("m3"))
    assert defrag_names(snapshot) == ["m3", "m1"]
    reason = skip_reason(snapshot, "m2")
    assert "estimated at 1m22s" in reason  # 4 GiB at 50 MiB/s
    assert "over the 1m budget (defrag.budget)" in reason
    assert "etcdutl defrag --data-dir" in reason


def test_a_budget_switched_off_plans_every_member() -> None:
    snapshot = cluster(snap("m1"), snap("m2", db_size=8 * GIB, in_use=4 * GIB), snap("m3"))
    off = settings(defrag={"budget": "off"})
    assert sorted(defrag_names(snapshot, s=off)) == ["m1", "m2", "m3"]


def test_forcing_does_not_lift_the_budget() -> None:
    snapshot = cluster(snap("m1"), snap("m2", in_use=4 * GIB, db_size=4 * GIB), snap("m3"))
    assert "m2" not in defrag_names(snapshot, force=True)


def test_nospace_recovery_still_defragments_with_a_warning() -> None:
    snapshot = cluster(
        snap("m1", in_use=4 * GIB, db_size=8 * GIB),
        snap("m2"),
        snap("m3"),
        alarms=(Alarm(member_id=snap("m1").member.id, alarm=AlarmType.NOSPACE),),
    )
    plan = plan_recover(snapshot, RATE_50)
    [leader] = [s for s in plan.steps if s.kind is StepKind.DEFRAG and s.member_name == "m1"]
    assert "warning: its defrag is estimated at" in leader.reason


def test_the_leaders_replica_does_not_wait_for_a_follower_the_budget_holds_back() -> None:
    snapshot = cluster(
        snap("m1"),
        snap("m2", db_size=8 * GIB, in_use=4 * GIB),  # worth it, but over budget
        snap("m3", db_size=100 * MIB, in_use=100 * MIB),  # not worth it
    )
    assert defrag_names(snapshot, local="m1") == ["m1"]


# -- restarted mid-defrag ----------------------------------------------------------------------


def interrupted(started_ago: timedelta, process_started_ago: timedelta) -> MemberSnapshot:
    started = WHEN - started_ago
    member = with_metrics(snap("m2"), process_start_time=(WHEN - process_started_ago).timestamp())
    return with_record(member, in_flight=DefragAttempt(size=400 * MIB, started_at=started))


def test_a_member_restarted_during_its_defrag_is_left_alone_for_a_day() -> None:
    member = interrupted(timedelta(hours=2), timedelta(hours=1, minutes=58))
    snapshot = cluster(snap("m1"), member, snap("m3"))
    assert "m2" not in defrag_names(snapshot)
    reason = skip_reason(snapshot, "m2")
    assert "etcd restarted during its defrag started 2025-01-02 01:04:05 UTC" in reason
    assert "/etcdagent/defrag/b2" in reason
    assert "etcdutl defrag" in reason


def test_an_unfinished_record_without_a_restart_is_not_held_against_the_member() -> None:
    # The agent died, not etcd: the member's process is older than the attempt.
    member = interrupted(timedelta(hours=2), timedelta(days=3))
    assert "m2" in defrag_names(cluster(snap("m1"), member, snap("m3")))


def test_after_a_day_the_member_is_tried_again() -> None:
    member = interrupted(timedelta(days=1, minutes=1), timedelta(days=1))
    assert "m2" in defrag_names(cluster(snap("m1"), member, snap("m3")))


# -- the gate and the grace period -------------------------------------------------------------


def calm(snapshot: ClusterSnapshot) -> dict[int, MemberSignals]:
    return {
        m.member.id: MemberSignals(
            member_id=m.member.id,
            samples=20,
            wal_fsync_p99=0.004,
            backend_commit_p99=0.008,
            wal_fsyncs=500,
            backend_commits=300,
            leader_changes=0,
            request_rate=3.0,
        )
        for m in snapshot.members
    }


def decided(snapshot: ClusterSnapshot, *, window_open: bool) -> CycleDecision:
    """The daemon's decision on a calm cluster at the 50 MiB/s default rate."""
    window = WindowState(open=window_open, window=None, ends_at=None, next_start=None)
    return decide_cycle(
        snapshot,
        calm(snapshot),
        RATE_50,
        window,
        WHEN,
        cluster_request_rate=1.0,
        last_compaction=None,
    )


def test_the_gate_names_the_held_member_but_the_window_still_maintains() -> None:
    snapshot = cluster(snap("m1"), snap("m2", db_size=8 * GIB, in_use=4 * GIB), snap("m3"))
    decision = decided(snapshot, window_open=True)
    assert decision.trigger is Trigger.WINDOW
    gate = decision.gates["defrag_budget"]
    assert gate is not None and gate.startswith("m2: its defrag is estimated at")


def test_the_gate_is_open_when_the_big_member_is_not_worth_defragmenting() -> None:
    snapshot = cluster(snap("m1"), snap("m2", db_size=4 * GIB, in_use=4 * GIB), snap("m3"))
    decision = decided(snapshot, window_open=False)
    assert decision.gates["defrag_budget"] is None


def test_a_stoppable_process_gets_no_longer_budget_than_its_grace_period() -> None:
    default = load_settings({})
    assert default.defrag.budget == 60.0
    assert within_grace(default).defrag.budget == 30.0  # daemon.grace_period's default
    roomy = load_settings({"daemon": {"grace_period": "90s"}})
    assert within_grace(roomy) is roomy
    off = load_settings({"defrag": {"budget": None}})
    assert within_grace(off).defrag.budget == 30.0


def test_the_daemon_and_run_once_plan_with_the_capped_budget() -> None:
    from etcdagent.agent.daemon import Daemon  # the process, not the pure layer under test

    def loader() -> Settings:
        return load_settings({"connection": {"endpoints": ["http://127.0.0.1:1"]}})

    for once in (False, True):
        daemon = Daemon(loader, once=once)
        try:
            assert daemon.settings.defrag.budget == 30.0
        finally:
            daemon.cluster.close()
