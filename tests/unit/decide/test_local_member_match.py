"""``--local-member`` that names no member, or names one only by the URL it answers on: the plan
says so instead of a replica that silently never defragments."""

from __future__ import annotations

from etcdagent_testing.snapshots import IDS, settings, snap, three

from etcdagent.decide.defrag import plan_defrag
from etcdagent.decide.gates import local_member_unmatched
from etcdagent.decide.plan import Plan
from etcdagent.observe.snapshot import ClusterSnapshot


def names(plan: Plan) -> list[str]:
    return [s.member_name or "" for s in plan.steps]


def resolved(
    snapshot: ClusterSnapshot, member_id: int | None, why: str | None = None
) -> ClusterSnapshot:
    """As observe leaves it once it asked a URL no member advertises who answers there."""
    return snapshot.model_copy(
        update={"local_member_id": member_id, "local_member_unresolved": why}
    )


def test_a_name_no_member_has_refuses_the_sweep_and_lists_the_members() -> None:
    plan = plan_defrag(three(), settings(), local="etcd1")  # kubespray's names, not the nodes'
    assert plan.steps == ()
    assert plan.refusal is not None
    assert plan.refusal.startswith("this replica defragments nothing: --local-member 'etcd1'")
    for name in ("m1", "m2", "m3"):
        assert f"{name} (http://{name}:2379)" in plan.refusal


def test_a_member_named_by_name_or_url_is_matched() -> None:
    assert local_member_unmatched(three(), "m2") is None
    assert local_member_unmatched(three(), "http://m3:2379/") is None
    assert local_member_unmatched(three(), "http://127.0.0.1:2379") is not None


def test_a_url_no_member_advertises_names_the_member_that_answered_there() -> None:
    local = "https://127.0.0.1:2379"  # kubeadm: members advertise https://<node-ip>:2379
    snapshot = resolved(three(), IDS["m3"])
    assert local_member_unmatched(snapshot, local) is None
    plan = plan_defrag(snapshot, settings(), local=local)
    assert names(plan) == ["m3"]
    others = {s.member_name: s.reason for s in plan.skipped}
    assert "left to its own replica (this one maintains m3)" in others["m2"]


def test_a_url_that_did_not_answer_says_why() -> None:
    why = "no member advertises https://127.0.0.1:2379, and it did not answer (refused)"
    snapshot = resolved(three(), None, why)
    problem = local_member_unmatched(snapshot, "https://127.0.0.1:2379")
    assert problem is not None and why in problem
    assert plan_defrag(snapshot, settings(), local="https://127.0.0.1:2379").refusal


def test_the_members_list_includes_a_member_that_does_not_answer() -> None:
    snapshot = resolved(
        three().model_copy(update={"members": (snap("m1"), snap("m2", up=False))}), None
    )
    problem = local_member_unmatched(snapshot, "node-a")
    assert problem is not None
    assert "m2 (http://m2:2379)" in problem
