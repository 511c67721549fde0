"""The cluster verdict from hand-built snapshots: no etcd needed."""

from __future__ import annotations

from etcdagent_testing.snapshots import IDS, WHEN, member

from etcdagent.models import Alarm, AlarmType, Member, MemberMetrics, MemberStatus
from etcdagent.observe.health import Verdict, assess
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot, Role


def snap(
    name: str,
    *,
    leader: str | None = "m1",
    up: bool = True,
    learner: bool = False,
    metrics: MemberMetrics | None = None,
) -> MemberSnapshot:
    m = member(name, learner=learner)
    if not up:
        return MemberSnapshot(
            member=m,
            endpoint=f"http://{name}:2379",
            error=f"http://{name}:2379: status failed: connection refused",
        )
    status = MemberStatus(
        member_id=m.id,
        cluster_id=1,
        revision=10,
        version="3.5.1",
        db_size=4096,
        db_size_in_use=2048,
        leader=IDS[leader] if leader else 0,
        raft_index=20,
        raft_term=2,
        raft_applied_index=20,
        is_learner=learner,
    )
    return MemberSnapshot(member=m, endpoint=f"http://{name}:2379", status=status, metrics=metrics)


def cluster(*members: MemberSnapshot, alarms: tuple[Alarm, ...] = ()) -> ClusterSnapshot:
    return ClusterSnapshot(
        taken_at=WHEN, cluster_id=1, discovered_via="http://m1:2379", members=members, alarms=alarms
    )


def test_healthy() -> None:
    health = assess(cluster(snap("m1"), snap("m2"), snap("m3")))
    assert health.verdict is Verdict.HEALTHY
    assert health.reasons == ()


def test_one_of_three_down_is_degraded_and_names_it() -> None:
    health = assess(cluster(snap("m1"), snap("m2"), snap("m3", up=False)))
    assert health.verdict is Verdict.DEGRADED
    assert any("m3" in r for r in health.reasons)
    assert not any("m2" in r for r in health.reasons)


def test_leader_down_but_still_reported_is_degraded() -> None:
    health = assess(cluster(snap("m1", up=False), snap("m2"), snap("m3")))
    assert health.verdict is Verdict.DEGRADED
    assert any("m1" in r for r in health.reasons)


def test_two_of_three_down_is_unavailable_no_quorum() -> None:
    health = assess(cluster(snap("m1"), snap("m2", up=False), snap("m3", up=False)))
    assert health.verdict is Verdict.UNAVAILABLE
    assert any("quorum" in r for r in health.reasons)
    assert any("m2" in r for r in health.reasons)
    assert any("m3" in r for r in health.reasons)


def test_all_down_is_unavailable() -> None:
    health = assess(cluster(*(snap(n, up=False) for n in ("m1", "m2", "m3"))))
    assert health.verdict is Verdict.UNAVAILABLE


def test_no_leader_is_unavailable() -> None:
    health = assess(cluster(*(snap(n, leader=None) for n in ("m1", "m2", "m3"))))
    assert health.verdict is Verdict.UNAVAILABLE
    assert any("no leader" in r for r in health.reasons)


def test_metrics_saying_no_leader_is_degraded() -> None:
    lost = MemberMetrics(scraped_at=WHEN, has_leader=False)
    health = assess(cluster(snap("m1"), snap("m2"), snap("m3", metrics=lost)))
    assert health.verdict is Verdict.DEGRADED
    assert any("m3" in r and "no leader" in r for r in health.reasons)


def test_nospace_alarm_is_degraded_and_names_the_member() -> None:
    alarm = Alarm(member_id=IDS["m2"], alarm=AlarmType.NOSPACE)
    health = assess(cluster(snap("m1"), snap("m2"), snap("m3"), alarms=(alarm,)))
    assert health.verdict is Verdict.DEGRADED
    assert any("NOSPACE" in r and "m2" in r for r in health.reasons)


def test_alarm_of_an_unknown_member_names_its_hex_id() -> None:
    alarm = Alarm(member_id=0xDEADBEEF, alarm=AlarmType.CORRUPT)
    health = assess(cluster(snap("m1"), snap("m2"), snap("m3"), alarms=(alarm,)))
    assert health.verdict is Verdict.DEGRADED
    assert any("CORRUPT" in r and "deadbeef" in r for r in health.reasons)


def test_learner_does_not_count_towards_quorum() -> None:
    # 3 voters + 1 learner: with two voters down the learner answering cannot make a quorum.
    health = assess(
        cluster(
            snap("m1"),
            snap("m2", up=False),
            snap("m3", up=False),
            snap("l1", learner=True),
        )
    )
    assert health.verdict is Verdict.UNAVAILABLE
    assert any("quorum" in r and "1 of 3" in r for r in health.reasons)


def test_down_learner_is_not_a_quorum_problem() -> None:
    # 2 voters + 1 learner: quorum is 2 of the 2 voters, both answer.
    health = assess(cluster(snap("m1"), snap("m2"), snap("l1", learner=True, up=False)))
    assert health.verdict is Verdict.DEGRADED
    assert not any("quorum" in r for r in health.reasons)
    assert any("l1" in r for r in health.reasons)


def test_learner_is_not_the_leader_it_reports() -> None:
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3"), snap("l1", learner=True))
    assert assess(snapshot).verdict is Verdict.HEALTHY
    assert snapshot.role(snapshot.members[3]) is Role.LEARNER
    assert snapshot.role(snapshot.members[0]) is Role.LEADER
    assert snapshot.role(snapshot.members[1]) is Role.FOLLOWER


def test_members_disagreeing_on_the_leader_is_degraded() -> None:
    health = assess(cluster(snap("m1"), snap("m2"), snap("m3", leader="m3")))
    assert health.verdict is Verdict.DEGRADED
    assert any("m3" in r and "follows" in r for r in health.reasons)


def test_the_majority_view_of_the_leader_wins() -> None:
    snapshot = cluster(snap("m1", leader="m2"), snap("m2", leader="m2"), snap("m3", leader="m1"))
    assert snapshot.leader_id == IDS["m2"]
    health = assess(snapshot)
    assert any(r.startswith("m3 follows") for r in health.reasons)


def test_leader_outside_the_member_list_is_degraded() -> None:
    snapshot = cluster(snap("m1", leader="m4"), snap("m2", leader="m4"), snap("m3", leader="m4"))
    health = assess(snapshot)
    assert health.verdict is Verdict.DEGRADED
    assert any("d4" in r and "not in the member list" in r for r in health.reasons)


def test_five_members_two_down_keeps_quorum() -> None:
    members = [snap(n) for n in ("m1", "m2", "m3")] + [
        snap("m4", up=False),
        MemberSnapshot(member=Member(id=0xF6, name="m5"), endpoint=None, error="not started"),
    ]
    health = assess(cluster(*members))
    assert health.verdict is Verdict.DEGRADED
