"""Time retention from marker keys: which revision was current how long ago.

etcd keeps no timestamp per revision. So on each run the agent writes a small marker key under
``/etcdagent/markers/``; the revision of that write is the store's revision at that moment. A
later run, by any agent replica or a CronJob, reads the markers back and compacts no further than
the newest marker older than the retention: everything written since then stays. Markers live in
etcd itself, so they survive the agent's restarts and are shared by every replica; a new cluster
simply has no old marker yet, and nothing is compacted by time until one is old enough.

Marker times are the writing agent's wall clock: keep the nodes' clocks in sync (NTP), as etcd
and Kubernetes already require.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from etcdagent.decide.compaction import Marker, newest_marker_before
from etcdagent.etcd.client import MemberClient

MARKER_PREFIX = "/etcdagent/markers/"
MAX_MARKERS = 500  # a runaway writer must not grow the keyspace


def _marker_key(now: datetime) -> str:
    return f"{MARKER_PREFIX}{int(now.timestamp() * 1000):015d}"


def read_markers(member: MemberClient) -> list[Marker]:
    """Every readable marker; unreadable ones (foreign writes) are ignored, not trusted."""
    answer = member.range_prefix(MARKER_PREFIX)
    markers: list[Marker] = []
    for kv in answer.kvs:
        suffix = kv.key.decode(errors="replace").removeprefix(MARKER_PREFIX)
        if not suffix.isdigit():
            continue
        when = datetime.fromtimestamp(int(suffix) / 1000, tz=UTC)
        markers.append(
            Marker(time=when, revision=kv.create_revision, key=kv.key.decode(errors="replace"))
        )
    return sorted(markers, key=lambda m: m.time)


def write_marker(member: MemberClient, now: datetime, holder: str) -> Marker:
    """Record "the store was at this revision at ``now``"."""
    value = json.dumps({"time": now.isoformat(), "by": holder})
    key = _marker_key(now)
    revision = member.put(key, value)
    return Marker(time=now, revision=revision, key=key)


def prune_markers(
    member: MemberClient, markers: list[Marker], now: datetime, retain: float | None
) -> int:
    """Delete markers no retention decision can need again; returns how many were deleted.

    Kept: every marker younger than the retention, and the newest older one (today's compaction
    target). With no time retention, only the newest marker is kept.
    """
    if not markers:
        return 0
    keep: set[datetime] = set()
    if retain is None:
        keep.add(markers[-1].time)
    else:
        cutoff = now - timedelta(seconds=retain)
        keep.update(m.time for m in markers if m.time > cutoff)
        newest_old = newest_marker_before(markers, cutoff)
        if newest_old is not None:
            keep.add(newest_old.time)
    doomed = [m for m in markers if m.time not in keep]
    kept = [m for m in markers if m.time in keep]
    if len(kept) > MAX_MARKERS:
        doomed += kept[: len(kept) - MAX_MARKERS]
    for marker in doomed:
        member.delete(marker.key or _marker_key(marker.time))
    return len(doomed)
