"""The consistency check in the defrag plan, from hand-built snapshots: which member each defrag's
HashKV is compared with, and the note that says why there is none on etcd before 3.5.10."""

from __future__ import annotations

import pytest
from etcdagent_testing.snapshots import IDS, alarm, cluster, settings, snap

from etcdagent.decide.consistency import check_peer
from etcdagent.decide.defrag import plan_defrag
from etcdagent.decide.plan import Plan, StepKind
from etcdagent.decide.recovery import plan_recover
from etcdagent.etcd.versions import hashkv_missing
from etcdagent.observe.snapshot import ClusterSnapshot

NEW = "3.6.14"


def peers(plan: Plan) -> list[tuple[str, str | None]]:
    return [(s.member_label, s.check_peer_name) for s in plan.steps if s.kind is StepKind.DEFRAG]


def of_version(version: str, *, leader: str = "m1") -> ClusterSnapshot:
    return cluster(*(snap(n, version=version, leader=leader) for n in ("m1", "m2", "m3")))


@pytest.mark.parametrize(
    ("version", "missing"),
    [
        ("3.4.23", "etcd 3.4.23 has no HashKV on its gateway (3.5.10+)"),
        ("3.5.1", "etcd 3.5.1 has no HashKV on its gateway (3.5.10+)"),
        ("3.5.9", "etcd 3.5.9 has no HashKV on its gateway (3.5.10+)"),
        ("3.5.10", None),
        ("3.5.30", None),
        ("3.6.0", None),
        ("3.6.14", None),
        ("4.0.0", None),
        ("not a version", None),  # the act layer takes a 404 as "not available" too
    ],
)
def test_hashkv_is_served_from_3_5_10(version: str, missing: str | None) -> None:
    assert hashkv_missing(version) == missing


def test_every_defrag_is_compared_with_an_untouched_member_the_leader_with_the_last_done() -> None:
    plan = plan_defrag(of_version(NEW), settings())

    # Followers first, the leader last: the followers are compared with the untouched leader,
    # the leader with the member defragmented just before it.
    assert peers(plan) == [("m2", "m1"), ("m3", "m1"), ("m1", "m3")]
    assert not [n for n in plan.notes if "HashKV" in n]
    first = plan.steps[0]
    assert first.check_peer_id == IDS["m1"]
    assert first.model_dump(mode="json")["check_peer_id"] == f"{IDS['m1']:x}"


@pytest.mark.parametrize("version", ["3.4.23", "3.5.1"])
def test_before_3_5_10_the_plan_says_the_check_is_not_available(version: str) -> None:
    plan = plan_defrag(of_version(version), settings())

    assert [name for name, _ in peers(plan)] == ["m2", "m3", "m1"]  # the sweep is unchanged
    assert all(peer is None for _, peer in peers(plan))
    note = (
        f"etcd {version} has no HashKV on its gateway (3.5.10+): "
        "the consistency check is not available"
    )
    assert [n for n in plan.notes if "HashKV" in n] == [note]  # once, not once per member


def test_a_peer_must_answer_serve_hashkv_and_vote() -> None:
    snapshot = cluster(
        snap("m1", version=NEW),
        snap("m2", version=NEW),
        snap("m3", version="3.5.1"),  # mid-upgrade: no HashKV yet
        snap("m4", version=NEW, up=False),
        snap("m5", version=NEW),
        snap("l1", version=NEW, learner=True),
    )
    m5 = snapshot.members[4]
    found = check_peer(snapshot, m5)
    assert found is not None and found.member.name == "m1"  # the leader, untouched
    only_m2 = check_peer(snapshot, m5, [IDS["m1"], IDS["m2"]])
    assert only_m2 is not None and only_m2.member.name == "m2"  # the last one done
    alone = cluster(snap("m1", version=NEW), snap("m3", version="3.5.1"))
    assert check_peer(alone, alone.members[0]) is None


def test_without_a_peer_that_serves_hashkv_the_note_names_the_member() -> None:
    snapshot = cluster(
        snap("m1", version="3.5.1"), snap("m2", version=NEW), snap("m3", version="3.5.1")
    )
    plan = plan_defrag(snapshot, settings())

    assert dict(peers(plan))["m2"] is None
    assert (
        "no other healthy voting member serves HashKV to compare with: the consistency check "
        "is not available for m2"
    ) in plan.notes
    assert (
        "etcd 3.5.1 has no HashKV on its gateway (3.5.10+): the consistency check is not available"
    ) in plan.notes


def test_a_leader_move_does_not_change_who_the_leader_is_compared_with() -> None:
    plan = plan_defrag(of_version(NEW), settings(defrag={"move_leader": True}))

    assert [s.kind for s in plan.steps][-2:] == [StepKind.MOVE_LEADER, StepKind.DEFRAG]
    assert peers(plan)[-1] == ("m1", "m3")  # m3 is done and takes over leadership


def test_nospace_recovery_checks_every_member_too() -> None:
    snapshot = cluster(*(snap(n, version=NEW) for n in ("m1", "m2", "m3")), alarms=(alarm("m2"),))
    plan = plan_recover(snapshot, settings())

    assert [peer for _, peer in peers(plan)] == ["m1", "m1", "m3"]
