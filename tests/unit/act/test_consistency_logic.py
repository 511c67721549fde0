"""The HashKV comparison after a defrag, with scripted answers where real etcd cannot be made to
give them on demand: a compaction applied on one member and not yet on the other (its hashes
differ legitimately and must never be called a mismatch), a compaction overtaking the revision
asked for, a version that answers 404. The real comparisons run in
tests/integration/test_consistency_check.py."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import cast

from etcdagent_testing.snapshots import IDS, WHEN, cluster, snap

from etcdagent.act.consistency_check import ATTEMPTS, ConsistencyChecker
from etcdagent.act.step_context import StepContext
from etcdagent.act.step_results import ConsistencyResult, StepListener
from etcdagent.decide.plan import Step, StepKind
from etcdagent.errors import EtcdCompactedError, EtcdError
from etcdagent.etcd.client import ClusterClient
from etcdagent.models import HashKV, MemberStatus
from etcdagent.settings import load_settings

Answer = Callable[[int], HashKV]


class ScriptedMember:
    """A member's status and HashKV answers: ``answers[i]`` answers the i-th HashKV."""

    def __init__(self, name: str, revision: int, answers: list[Answer]) -> None:
        self.name = name
        self.revision = revision
        self.answers = answers
        self.asked: list[int] = []

    def status(self) -> MemberStatus:
        return MemberStatus(member_id=IDS[self.name], revision=self.revision, version="3.6.14")

    def hashkv(self, revision: int, *, timeout: float | None = None) -> HashKV:
        self.asked.append(revision)
        answer = self.answers[min(len(self.asked), len(self.answers)) - 1]
        return answer(revision)


class ScriptedCluster:
    def __init__(self, *members: ScriptedMember) -> None:
        self.by_endpoint = {f"http://{m.name}:2379": m for m in members}

    def member(self, endpoint: str, name: str = "") -> ScriptedMember:
        return self.by_endpoint[endpoint]


def hashed(value: int, compacted: int = 100) -> Answer:
    return lambda revision: HashKV(
        hash=value, compact_revision=compacted, hash_revision=revision, revision=revision
    )


def compacted_meanwhile(revision: int) -> HashKV:
    raise EtcdCompactedError("required revision has been compacted", status=400)


def not_found(revision: int) -> HashKV:
    raise EtcdError(
        "http://m2:2379: hashkv failed: HTTP 404", endpoint="http://m2:2379", status=404
    )


def check(ours: ScriptedMember, theirs: ScriptedMember) -> ConsistencyChecker:
    settings = load_settings({"connection": {"endpoints": "http://m1:2379"}})
    ctx = StepContext(
        cast(ClusterClient, ScriptedCluster(ours, theirs)),
        settings,
        stop=threading.Event(),
        listener=StepListener(),
        monotonic=lambda: 0.0,
        clock=lambda: WHEN,
    )
    ctx.wait = lambda seconds: False  # type: ignore[method-assign]
    return ConsistencyChecker(ctx)


SNAPSHOT = cluster(*(snap(n, version="3.6.14", leader="m2") for n in ("m1", "m2", "m3")))
STEP = Step(
    kind=StepKind.DEFRAG,
    reason="test",
    member_id=IDS["m1"],
    member_name="m1",
    endpoint="http://m1:2379",
    check_peer_id=IDS["m2"],
    check_peer_name="m2",
)


def test_equal_hashes_at_the_lower_of_both_revisions_match() -> None:
    ours, theirs = ScriptedMember("m1", 520, [hashed(7)]), ScriptedMember("m2", 515, [hashed(7)])

    found = check(ours, theirs).check(STEP, SNAPSHOT)

    assert found.result is ConsistencyResult.MATCH
    assert ours.asked == theirs.asked == [515]  # both have applied it
    assert (found.peer_name, found.revision, found.compact_revision) == ("m2", 515, 100)


def test_a_compaction_applied_on_one_member_only_is_asked_again_not_a_mismatch() -> None:
    ours = ScriptedMember("m1", 520, [hashed(7, compacted=510), hashed(9, compacted=510)])
    theirs = ScriptedMember("m2", 520, [hashed(8, compacted=100), hashed(9, compacted=510)])

    found = check(ours, theirs).check(STEP, SNAPSHOT)

    assert found.result is ConsistencyResult.MATCH
    assert len(ours.asked) == 2


def test_compacted_revisions_that_never_agree_skip_the_check_and_never_call_it_a_mismatch() -> None:
    ours = ScriptedMember("m1", 520, [hashed(7, compacted=510)])
    theirs = ScriptedMember("m2", 520, [hashed(8, compacted=100)])

    found = check(ours, theirs).check(STEP, SNAPSHOT)

    assert found.result is ConsistencyResult.SKIPPED
    assert len(ours.asked) == ATTEMPTS
    assert "m1 had compacted to 510 and m2 to 100" in found.message


def test_a_compaction_overtaking_the_revision_asks_again_at_a_newer_one() -> None:
    ours = ScriptedMember("m1", 520, [compacted_meanwhile, hashed(7)])
    theirs = ScriptedMember("m2", 520, [hashed(7)])

    assert check(ours, theirs).check(STEP, SNAPSHOT).result is ConsistencyResult.MATCH


def test_different_hashes_over_one_compaction_are_a_mismatch_naming_both_and_the_revision() -> None:
    ours, theirs = ScriptedMember("m1", 600, [hashed(7)]), ScriptedMember("m2", 600, [hashed(8)])

    found = check(ours, theirs).check(STEP, SNAPSHOT)

    assert found.result is ConsistencyResult.MISMATCH
    assert (found.hash, found.peer_hash, found.revision) == (7, 8, 600)
    assert "m1 has 7, m2 has 8 at revision 600 (compacted revision 100)" in found.message
    assert "etcdctl endpoint hashkv --rev=600" in found.message


def test_a_404_is_unavailable_whatever_the_version_said() -> None:
    ours, theirs = ScriptedMember("m1", 600, [not_found]), ScriptedMember("m2", 600, [hashed(8)])

    found = check(ours, theirs).check(STEP, SNAPSHOT)

    assert found.result is ConsistencyResult.UNAVAILABLE
    assert "/v3/maintenance/hashkv not found" in found.message


def test_a_planned_peer_that_left_is_replaced_by_the_leader() -> None:
    ours, theirs = ScriptedMember("m1", 600, [hashed(8)]), ScriptedMember("m2", 600, [hashed(8)])
    gone = STEP.model_copy(update={"check_peer_id": 0x999, "check_peer_name": "m9"})

    found = check(ours, theirs).check(gone, SNAPSHOT)

    assert (found.result, found.peer_name) == (ConsistencyResult.MATCH, "m2")


def test_a_member_older_than_3_5_10_is_not_asked() -> None:
    old = cluster(*(snap(n, version="3.5.1") for n in ("m1", "m2", "m3")))
    ours, theirs = ScriptedMember("m1", 600, []), ScriptedMember("m2", 600, [])

    found = check(ours, theirs).check(STEP, old)

    assert found.result is ConsistencyResult.UNAVAILABLE
    assert found.message == "etcd 3.5.1 has no HashKV on its gateway (3.5.10+)"
    assert ours.asked == theirs.asked == []
