"""Which members are still compacting: the compact revision is set when a compaction is
scheduled, the duration count grows when it ends; a request that timed out changes neither."""

from __future__ import annotations

from etcdagent_testing.snapshots import cluster, snap

from etcdagent.act.compaction_step import CompactionStep, _Before, _may_still_run
from etcdagent.errors import EtcdError, EtcdUnreachableError
from etcdagent.models import Histogram
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot


def compacting(name: str, revision: int, finished: int, *, learner: bool = False) -> MemberSnapshot:
    base = snap(name, learner=learner, compact_revision=revision)
    assert base.metrics is not None
    metrics = base.metrics.model_copy(
        update={"compaction_duration": Histogram(buckets=((float("inf"), finished),),
                                                 count=finished, sum=1.0)}
    )  # fmt: skip
    return base.model_copy(update={"metrics": metrics})


def state(*members: MemberSnapshot) -> ClusterSnapshot:
    return cluster(*members)


BEFORE = state(compacting("m1", 100, 3), compacting("m2", 100, 3), compacting("m3", 100, 3))
_before = _Before(
    finished={m.member.id: 3.0 for m in BEFORE.members},
    compacted={m.member.id: 100 for m in BEFORE.members},
)


def test_scheduled_but_not_finished_is_still_compacting() -> None:
    # Every member scheduled revision 500 (the gauge says so) but m2 has not finished it.
    now = state(compacting("m1", 500, 4), compacting("m2", 500, 3), compacting("m3", 500, 4))
    assert CompactionStep._pending(now, 500, _before) == ["m2 (still compacting)"]


def test_every_member_finished() -> None:
    now = state(compacting("m1", 500, 4), compacting("m2", 500, 4), compacting("m3", 500, 4))
    assert CompactionStep._pending(now, 500, _before) == []


def test_a_member_not_yet_scheduled_and_a_learner_still_compacting_are_pending() -> None:
    before = _Before(
        finished={**_before.finished, 0xF6: 1.0}, compacted={**_before.compacted, 0xF6: 100}
    )
    now = state(
        compacting("m1", 500, 4),
        compacting("m2", 100, 3),
        compacting("m3", 500, 4),
        compacting("l1", 500, 1, learner=True),
    )
    assert CompactionStep._pending(now, 500, before) == ["m2", "l1 (still compacting)"]


def test_a_member_already_past_the_target_before_the_request_needs_no_new_compaction() -> None:
    before = _Before(finished={0xA1: 3.0}, compacted={0xA1: 600})
    assert before.must_finish(0xA1, 500) is False
    assert _Before(finished={0xA1: 3.0}, compacted={0xA1: 100}).must_finish(0xA1, 500) is True


def test_only_a_timeout_may_leave_a_compaction_running() -> None:
    timed_out = EtcdUnreachableError(
        "http://m1:2379: compact failed: read timed out", endpoint="m1", transient=True
    )
    refused = EtcdUnreachableError(
        "http://m1:2379: compact failed: connection refused", endpoint="m1", transient=True
    )
    assert _may_still_run(timed_out) is True
    assert _may_still_run(refused) is False
    assert _may_still_run(EtcdError("bad request", endpoint="m1")) is False


def test_a_member_down_is_not_waited_for_one_without_metrics_is_named() -> None:
    now = state(
        compacting("m1", 500, 4),
        snap("m2", up=False),
        snap("m3", metrics_up=False),
    )
    assert CompactionStep._pending(now, 500, _before) == ["m3 (no metrics)"]
