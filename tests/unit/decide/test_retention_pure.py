"""Retention-aware compaction: which revision is old enough to drop, from revision counts and the
agent's timestamped markers (no etcd, no clock: ``now`` is passed in)."""

from __future__ import annotations

from datetime import datetime, timedelta

from etcdagent_testing.snapshots import WHEN, cluster, snap, three
from hypothesis import given
from hypothesis import strategies as st

from etcdagent.act.markers import prune_markers
from etcdagent.decide.compaction import Marker, compaction_target, newest_marker_before
from etcdagent.etcd.client import MemberClient
from etcdagent.settings import CompactionSettings


def ago(minutes: float) -> datetime:
    return WHEN - timedelta(minutes=minutes)


MARKERS = [
    Marker(time=ago(20), revision=1000, key="a"),
    Marker(time=ago(10), revision=2000, key="b"),
    Marker(time=ago(6), revision=3000, key="c"),
    Marker(time=ago(4), revision=4000, key="d"),
    Marker(time=ago(1), revision=4800, key="e"),
]


def test_revision_retention_keeps_the_last_n_revisions() -> None:
    target, why = compaction_target(
        three(revision=5000), CompactionSettings(retain_revisions=1000), [], WHEN
    )
    assert target == 4000
    assert why == "keeps the last 1000 revisions"


def test_current_revision_is_the_highest_any_member_reports() -> None:
    snapshot = cluster(snap("m1", revision=4990), snap("m2", revision=5000), snap("m3", up=False))
    target, _ = compaction_target(snapshot, CompactionSettings(retain_revisions=100), [], WHEN)
    assert target == 4900


def test_time_retention_uses_the_newest_marker_at_least_that_old() -> None:
    target, why = compaction_target(three(), CompactionSettings(retain=300), MARKERS, WHEN)
    assert target == 3000
    assert "keeps 5m of history" in why
    assert "revision 3000 was current 6m ago" in why


def test_a_marker_exactly_as_old_as_the_retention_counts() -> None:
    markers = [Marker(time=ago(5), revision=3500)]
    target, _ = compaction_target(three(), CompactionSettings(retain=300), markers, WHEN)
    assert target == 3500


def test_no_marker_old_enough_compacts_nothing_and_says_why() -> None:
    young = [m for m in MARKERS if m.time > ago(5)]
    target, why = compaction_target(three(), CompactionSettings(retain=300), young, WHEN)
    assert target is None
    assert "no revision is known to be older than 5m" in why


def test_no_markers_at_all_compacts_nothing() -> None:
    target, why = compaction_target(three(), CompactionSettings(retain=3600), [], WHEN)
    assert target is None
    assert "no revision is known to be older than 1h" in why


def test_both_retentions_keep_the_longer_history() -> None:
    by_time = CompactionSettings(retain=300, retain_revisions=500)  # 4500 by count, 3000 by time
    target, why = compaction_target(three(revision=5000), by_time, MARKERS, WHEN)
    assert target == 3000
    assert "5m" in why
    by_count = CompactionSettings(retain=300, retain_revisions=2500)  # 2500 by count
    target, why = compaction_target(three(revision=5000), by_count, MARKERS, WHEN)
    assert target == 2500
    assert "keeps the last 2500 revisions" in why


def test_both_retentions_without_an_old_marker_compact_nothing() -> None:
    both = CompactionSettings(retain=300, retain_revisions=10)
    target, why = compaction_target(three(revision=5000), both, [], WHEN)
    assert target is None
    assert "no revision is known to be older than 5m" in why


def test_already_compacted_past_the_target_is_nothing_to_do() -> None:
    snapshot = three(revision=5000, compact_revision=4200)
    target, why = compaction_target(snapshot, CompactionSettings(retain_revisions=1000), [], WHEN)
    assert target is None
    assert why.startswith("already compacted to revision 4200")


def test_already_compacted_exactly_to_the_target_is_nothing_to_do() -> None:
    snapshot = three(revision=5000, compact_revision=4000)
    target, why = compaction_target(snapshot, CompactionSettings(retain_revisions=1000), [], WHEN)
    assert target is None
    assert "already compacted to revision 4000" in why


def test_compacted_below_the_target_still_compacts() -> None:
    snapshot = three(revision=5000, compact_revision=3999)
    target, _ = compaction_target(snapshot, CompactionSettings(retain_revisions=1000), [], WHEN)
    assert target == 4000


def test_history_shorter_than_the_retention_compacts_nothing() -> None:
    target, why = compaction_target(
        three(revision=800), CompactionSettings(retain_revisions=1000), [], WHEN
    )
    assert target is None
    assert "shorter than the retention" in why


def test_no_member_answering_compacts_nothing() -> None:
    snapshot = cluster(snap("m1", up=False), snap("m2", up=False))
    target, why = compaction_target(snapshot, CompactionSettings(retain_revisions=1), [], WHEN)
    assert target is None
    assert why == "no member reports a revision"


def test_newest_marker_before_picks_the_newest_old_enough() -> None:
    found = newest_marker_before(MARKERS, ago(5))
    assert found is not None
    assert found.revision == 3000
    assert newest_marker_before(MARKERS, ago(30)) is None
    assert newest_marker_before([], WHEN) is None


def test_retain_zero_compacts_to_the_current_revision_without_markers() -> None:
    target, why = compaction_target(three(revision=20_000), CompactionSettings(retain=0), [], WHEN)
    assert target == 20_000
    assert "retain 0" in why


@given(
    offsets=st.lists(st.integers(min_value=0, max_value=100_000), max_size=20),
    revisions=st.lists(st.integers(min_value=0, max_value=10_000), min_size=20, max_size=20),
    retain=st.integers(min_value=1, max_value=50_000),
)
def test_never_a_target_younger_than_the_retention(
    offsets: list[int], revisions: list[int], retain: int
) -> None:
    markers = [
        Marker(time=WHEN - timedelta(seconds=offset), revision=revision)
        for offset, revision in zip(offsets, revisions, strict=False)
    ]
    target, _ = compaction_target(
        three(revision=20_000), CompactionSettings(retain=retain), markers, WHEN
    )
    if target is None:
        return
    old_enough = [m.revision for m in markers if WHEN - m.time >= timedelta(seconds=retain)]
    assert target in old_enough
    # Ordered markers: nothing written at or after the cutoff is dropped.
    assert (
        target
        == max(
            (m for m in markers if WHEN - m.time >= timedelta(seconds=retain)),
            key=lambda m: (m.time, m.revision),
        ).revision
    )


@given(
    steps=st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=20),
    retain=st.integers(min_value=1, max_value=3600),
)
def test_every_revision_written_within_the_retention_is_kept(steps: list[int], retain: int) -> None:
    """Markers written at increasing times with increasing revisions, as a real store has them:
    every marker younger than ``retain`` has a revision >= the target (so it survives)."""
    markers: list[Marker] = []
    when = WHEN - timedelta(seconds=sum(steps))
    for index, step in enumerate(steps):
        markers.append(Marker(time=when, revision=100 * (index + 2)))
        when += timedelta(seconds=step)
    target, _ = compaction_target(
        three(revision=100 * (len(steps) + 2)), CompactionSettings(retain=retain), markers, WHEN
    )
    young = [m for m in markers if WHEN - m.time < timedelta(seconds=retain)]
    if target is not None:
        assert all(m.revision >= target for m in young)


class FakeMember(MemberClient):
    """Records deletes; nothing else of the client is used by prune_markers."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete(self, key: str | bytes) -> int:
        self.deleted.append(key if isinstance(key, str) else key.decode())
        return 1


def test_prune_keeps_young_markers_and_the_newest_old_one() -> None:
    member = FakeMember()
    count = prune_markers(member, MARKERS, WHEN, 300)
    assert member.deleted == ["a", "b"]
    assert count == 2


def test_prune_without_time_retention_keeps_only_the_newest() -> None:
    member = FakeMember()
    assert prune_markers(member, MARKERS, WHEN, None) == 4
    assert member.deleted == ["a", "b", "c", "d"]


def test_prune_never_deletes_todays_compaction_target() -> None:
    member = FakeMember()
    prune_markers(member, MARKERS, WHEN, 300)
    target, _ = compaction_target(three(), CompactionSettings(retain=300), MARKERS, WHEN)
    kept = [m for m in MARKERS if m.key not in member.deleted]
    assert target in [m.revision for m in kept]
