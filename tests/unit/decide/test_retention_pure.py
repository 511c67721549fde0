"""Retention-aware compaction: which revision is old enough to drop, from revision counts, the
markers' ages by etcd's lease clock and the daemon's own observations (no etcd, no clock: ages
are passed in, and no wall-clock ``now`` takes part)."""

from __future__ import annotations

from etcdagent_testing.snapshots import cluster, snap, three
from hypothesis import given
from hypothesis import strategies as st

from etcdagent.decide.compaction import (
    Marker,
    compaction_target,
    in_revision_order,
    newest_marker_older_than,
    observed_bounds,
)
from etcdagent.settings import CompactionSettings

MIN = 60.0

MARKERS = [
    Marker(revision=1000, age=20 * MIN, key="a", lease=1),
    Marker(revision=2000, age=10 * MIN, key="b", lease=2),
    Marker(revision=3000, age=6 * MIN, key="c", lease=3),
    Marker(revision=4000, age=4 * MIN, key="d", lease=4),
    Marker(revision=4800, age=1 * MIN, key="e", lease=5),
]
FIVE_MINUTES = CompactionSettings(retain=300)


def test_revision_retention_keeps_the_last_n_revisions() -> None:
    target, why = compaction_target(
        three(revision=5000), CompactionSettings(retain_revisions=1000), []
    )
    assert target == 4000
    assert why == "keeps the last 1000 revisions"


def test_current_revision_is_the_highest_any_member_reports() -> None:
    snapshot = cluster(snap("m1", revision=4990), snap("m2", revision=5000), snap("m3", up=False))
    target, _ = compaction_target(snapshot, CompactionSettings(retain_revisions=100), [])
    assert target == 4900


def test_time_retention_uses_the_newest_marker_at_least_that_old() -> None:
    target, why = compaction_target(three(), FIVE_MINUTES, MARKERS)
    assert target == 3000
    assert "keeps 5m of history" in why
    assert "revision 3000 was current at least 6m ago by etcd's lease clock" in why


def test_a_marker_exactly_as_old_as_the_retention_counts() -> None:
    target, _ = compaction_target(three(), FIVE_MINUTES, [Marker(revision=3500, age=300)])
    assert target == 3500


def test_no_marker_old_enough_compacts_nothing_and_says_why() -> None:
    young = [m for m in MARKERS if m.age < 300]
    target, why = compaction_target(three(), FIVE_MINUTES, young)
    assert target is None
    assert "no revision is known to be older than 5m" in why


def test_no_markers_at_all_compacts_nothing() -> None:
    target, why = compaction_target(three(), CompactionSettings(retain=3600), [])
    assert target is None
    assert "no revision is known to be older than 1h" in why


def test_both_retentions_keep_the_longer_history() -> None:
    by_time = CompactionSettings(retain=300, retain_revisions=500)  # 4500 by count, 3000 by time
    target, why = compaction_target(three(revision=5000), by_time, MARKERS)
    assert target == 3000
    assert "5m" in why
    by_count = CompactionSettings(retain=300, retain_revisions=2500)  # 2500 by count
    target, why = compaction_target(three(revision=5000), by_count, MARKERS)
    assert target == 2500
    assert "keeps the last 2500 revisions" in why


def test_both_retentions_without_an_old_marker_compact_nothing() -> None:
    both = CompactionSettings(retain=300, retain_revisions=10)
    target, why = compaction_target(three(revision=5000), both, [])
    assert target is None
    assert "no revision is known to be older than 5m" in why


def test_already_compacted_past_the_target_is_nothing_to_do() -> None:
    snapshot = three(revision=5000, compact_revision=4200)
    target, why = compaction_target(snapshot, CompactionSettings(retain_revisions=1000), [])
    assert target is None
    assert why.startswith("already compacted to revision 4200")


def test_compacted_below_the_target_still_compacts() -> None:
    snapshot = three(revision=5000, compact_revision=3999)
    target, _ = compaction_target(snapshot, CompactionSettings(retain_revisions=1000), [])
    assert target == 4000


def test_history_shorter_than_the_retention_compacts_nothing() -> None:
    target, why = compaction_target(
        three(revision=800), CompactionSettings(retain_revisions=1000), []
    )
    assert target is None
    assert "shorter than the retention" in why


def test_no_member_answering_compacts_nothing() -> None:
    snapshot = cluster(snap("m1", up=False), snap("m2", up=False))
    target, why = compaction_target(snapshot, CompactionSettings(retain_revisions=1), [])
    assert target is None
    assert why == "no member reports a revision"


def test_retain_zero_compacts_to_the_current_revision_without_markers() -> None:
    target, why = compaction_target(three(revision=20_000), CompactionSettings(retain=0), [])
    assert target == 20_000
    assert "retain 0" in why


# -- revision order ----------------------------------------------------------------------------


def test_a_marker_looking_older_than_one_written_before_it_is_aged_like_that_one() -> None:
    """Revision 3000 claims 30 min, but revision 2000 (written before it) is only 4 min old: 3000
    is at most 4 min old, too young to compact to."""
    markers = [
        Marker(revision=1000, age=20 * MIN),
        Marker(revision=2000, age=4 * MIN),
        Marker(revision=3000, age=30 * MIN),
    ]
    assert [m.age for m in in_revision_order(markers)] == [20 * MIN, 4 * MIN, 4 * MIN]
    target, _ = compaction_target(three(), FIVE_MINUTES, markers)
    assert target == 1000


def test_a_future_marker_cannot_move_the_target_past_a_younger_earlier_one() -> None:
    """A marker written last (highest revision) claiming a huge age changes nothing."""
    markers = [*MARKERS, Marker(revision=4900, age=10_000 * MIN)]
    target, _ = compaction_target(three(), FIVE_MINUTES, markers)
    assert target == 3000


def test_newest_marker_older_than_takes_the_highest_revision_old_enough() -> None:
    found = newest_marker_older_than(MARKERS, 300)
    assert found is not None
    assert found.revision == 3000
    assert newest_marker_older_than(MARKERS, 30 * MIN) is None
    assert newest_marker_older_than([], 1) is None


# -- the daemon's own observations ---------------------------------------------------------------


def test_observed_bounds_split_at_the_retention() -> None:
    observations = [(600.0, 2500), (310.0, 2900), (200.0, 3800), (5.0, 4900)]
    assert observed_bounds(observations, 300) == (2900, 3800)
    assert observed_bounds([], 300) == (None, None)


def test_markers_agreeing_with_the_observation_compact_to_the_lower_of_both() -> None:
    """Markers say 3000; the agent saw 2900 at least 5 min ago and 3800 since: keeps more."""
    observations = [(600.0, 2500), (310.0, 2900), (200.0, 3800)]
    target, why = compaction_target(three(), FIVE_MINUTES, MARKERS, observations)
    assert target == 2900
    assert "by the agent's own observation" in why


def test_an_older_observation_than_the_markers_does_not_lower_the_target_below_them() -> None:
    observations = [(900.0, 3200), (100.0, 4700)]
    target, _ = compaction_target(three(), FIVE_MINUTES, MARKERS, observations)
    assert target == 3000


def test_markers_contradicting_the_observation_fall_back_to_what_the_agent_saw() -> None:
    """The agent saw revision 2500 current 2 min ago, yet a marker claims 3000 is 6 min old: the
    markers are wrong (a clock, a forgery); compact only to what the agent saw 5 min ago."""
    observations = [(400.0, 2200), (120.0, 2500)]
    target, why = compaction_target(three(), FIVE_MINUTES, MARKERS, observations)
    assert target == 2200
    assert "contradict the agent's own observation" in why


def test_contradicted_markers_without_an_old_enough_observation_compact_nothing() -> None:
    observations = [(120.0, 2500), (10.0, 4900)]
    target, why = compaction_target(three(), FIVE_MINUTES, MARKERS, observations)
    assert target is None
    assert "nothing is compacted by time" in why
    assert "contradict the agent's own observation" in why


def test_observations_alone_compact_nothing_by_time() -> None:
    """A CronJob has no observations, the daemon has no markers yet: the etcd clock must agree."""
    target, _ = compaction_target(three(), FIVE_MINUTES, [], [(900.0, 3000)])
    assert target is None


# -- properties ----------------------------------------------------------------------------------


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[float], list[int]]:
    """Write times (seconds ago, oldest first) of revisions 100, 200, ..., as a real store has."""
    gaps = draw(st.lists(st.floats(min_value=0.0, max_value=900.0), min_size=1, max_size=25))
    total = sum(gaps)
    ages: list[float] = []
    elapsed = 0.0
    for gap in gaps:
        elapsed += gap
        ages.append(total - elapsed)
    return ages, [100 * (i + 1) for i in range(len(gaps))]


@given(
    history=histories(),
    understate=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=25, max_size=25),
    bogus=st.lists(st.floats(min_value=0.0, max_value=100_000.0), max_size=3),
    retain=st.integers(min_value=1, max_value=3600),
)
def test_nothing_younger_than_the_retention_is_ever_compacted(
    history: tuple[list[float], list[int]],
    understate: list[float],
    bogus: list[float],
    retain: int,
) -> None:
    """Every marker's age at most its true age (etcd's lease clock), plus a few markers at the
    top claiming any age at all (a broken lease): every revision written less than ``retain``
    ago survives."""
    true_ages, revisions = history
    markers = [
        Marker(revision=rev, age=age * factor)
        for rev, age, factor in zip(revisions, true_ages, understate, strict=False)
    ]
    top = revisions[-1]
    markers += [Marker(revision=top + 10 * (i + 1), age=age) for i, age in enumerate(bogus)]
    target, _ = compaction_target(
        three(revision=top + 100), CompactionSettings(retain=retain), markers
    )
    if target is None:
        return
    young = [rev for rev, age in zip(revisions, true_ages, strict=True) if age < retain]
    assert all(rev >= target for rev in young)


@given(
    history=histories(),
    marker_ages=st.lists(st.floats(min_value=0.0, max_value=100_000.0), min_size=25, max_size=25),
    retain=st.integers(min_value=1, max_value=3600),
)
def test_the_agents_own_observation_bounds_any_markers(
    history: tuple[list[float], list[int]], marker_ages: list[float], retain: int
) -> None:
    """Markers with arbitrary (even wrong) ages, checked against a true observation of every
    revision: nothing the agent saw current less than ``retain`` ago is compacted."""
    true_ages, revisions = history
    markers = [
        Marker(revision=rev, age=age) for rev, age in zip(revisions, marker_ages, strict=False)
    ]
    observations = list(zip(true_ages, revisions, strict=True))
    target, _ = compaction_target(
        three(revision=revisions[-1] + 100),
        CompactionSettings(retain=retain),
        markers,
        observations,
    )
    if target is None:
        return
    seen_recently = [rev for age, rev in observations if age < retain]
    assert all(rev >= target for rev in seen_recently)
