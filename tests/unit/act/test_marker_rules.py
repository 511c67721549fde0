"""Which marker keys count, which are pruned, when a new one is written (no etcd: the keys are
built as a range answer carries them; tests/integration/test_retention_markers.py has etcd's)."""

from __future__ import annotations

import json

from etcdagent.act.markers import (
    MAX_LEASE_TTL,
    MarkerRead,
    doomed_invalid,
    doomed_markers,
    due,
    is_valid,
    marker_spacing,
    marker_ttl,
)
from etcdagent.decide.compaction import Marker
from etcdagent.models import KeyValue


def kv(
    key: str, *, version: int = 2, lease: int = 7, value: object = None, created: int = 10
) -> KeyValue:
    body = {"lease": str(lease), "by": "test"} if value is None else value
    return KeyValue(
        key=key.encode(),
        value=json.dumps(body).encode() if not isinstance(body, bytes) else body,
        create_revision=created,
        mod_revision=created + 1,
        version=version,
        lease=lease,
    )


def test_only_the_two_puts_under_the_lease_the_value_names_count() -> None:
    assert is_valid(kv("/etcdagent/markers/ab"))
    assert not is_valid(kv("/etcdagent/markers/ab", version=3))  # rewritten since
    assert not is_valid(kv("/etcdagent/markers/ab", version=1))  # cut short after the first put
    assert not is_valid(kv("/etcdagent/markers/ab", lease=0, value={"lease": "0"}))
    assert not is_valid(kv("/etcdagent/markers/ab", value={"lease": "8"}))  # another lease
    assert not is_valid(kv("/etcdagent/markers/ab", value=b"not json"))
    legacy = kv("/etcdagent/markers/001764590000000", version=1, lease=0, value={"time": "x"})
    assert not is_valid(legacy)


MARKERS = [
    Marker(revision=1000, age=1200, key="a", lease=1),
    Marker(revision=2000, age=600, key="b", lease=2),
    Marker(revision=3000, age=360, key="c", lease=3),
    Marker(revision=4000, age=240, key="d", lease=4),
    Marker(revision=4800, age=60, key="e", lease=5),
]


def test_prune_keeps_young_markers_and_the_newest_old_one() -> None:
    assert [m.key for m in doomed_markers(MARKERS, 300)] == ["a", "b"]


def test_prune_also_keeps_the_newest_marker_older_than_each_horizon() -> None:
    """One that can prove compact_rev_key quiet for two apiserver intervals (10m)."""
    assert [m.key for m in doomed_markers(MARKERS, 300, horizons=(600,))] == ["a"]
    assert [m.key for m in doomed_markers(MARKERS, 300, horizons=(360,))] == ["a", "b"]
    assert [m.key for m in doomed_markers(MARKERS, None, horizons=(600,))] == ["a", "c", "d"]


def test_prune_without_time_retention_keeps_only_the_newest() -> None:
    assert [m.key for m in doomed_markers(MARKERS, None)] == ["a", "b", "c", "d"]


def test_prune_ages_in_revision_order() -> None:
    """A marker claiming more age than an earlier one does not push that one out."""
    markers = [*MARKERS[:4], Marker(revision=4800, age=5000, key="e", lease=5)]
    assert [m.key for m in doomed_markers(markers, 300)] == ["a", "b"]


def test_invalid_keys_are_deleted_but_not_a_marker_another_writer_is_completing() -> None:
    pending = kv("/etcdagent/markers/p", version=1, lease=0, value={"pending": True}, created=5000)
    stale = kv("/etcdagent/markers/s", version=1, lease=0, value={"pending": True}, created=900)
    legacy = kv("/etcdagent/markers/0017", version=1, lease=0, value={"time": "x"}, created=6000)
    rewritten = kv("/etcdagent/markers/r", version=3, created=4500)
    read = MarkerRead(markers=MARKERS, invalid=[pending, stale, legacy, rewritten])
    assert [k.key for k in doomed_invalid(read)] == [
        b"/etcdagent/markers/s",
        b"/etcdagent/markers/0017",
        b"/etcdagent/markers/r",
    ]


def test_a_marker_is_written_only_when_the_newest_is_the_spacing_old() -> None:
    assert marker_spacing(300) == 12.5
    assert marker_spacing(60) == 10.0
    assert due([], 300)
    assert not due(MARKERS, 3600)  # newest is 60 s old, spacing 150 s
    assert due(MARKERS, 300)  # spacing 12.5 s


def test_the_lease_outlives_twice_the_retention_and_a_weekly_run_within_etcds_limit() -> None:
    assert marker_ttl(300) == 8 * 86_400
    assert marker_ttl(30 * 86_400) == 60 * 86_400 + 3600
    assert marker_ttl(None) == 86_400
    assert marker_ttl(0) == 86_400
    assert marker_ttl(10**12) == MAX_LEASE_TTL
