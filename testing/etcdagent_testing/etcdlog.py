"""Read what etcd itself logged, so tests check maintenance against etcd's account of it.

etcd (3.4 and 3.5, zap JSON logger) logs "starting defragment" and "finished defragment" with
millisecond timestamps, and raft's "became leader/follower" lines: enough to prove the order of
defragmentations, that no two overlapped, and when leadership moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from etcdagent_testing.cluster import EtcdCluster
from etcdagent_testing.member import EtcdMember


@dataclass(frozen=True)
class DefragInterval:
    member: str
    start: datetime
    end: datetime | None  # None: started, never finished (killed, still running)


def _ts(line: dict[str, object]) -> datetime | None:
    raw = line.get("ts")
    if not isinstance(raw, str):
        return None
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))


def member_defrags(member: EtcdMember) -> list[DefragInterval]:
    intervals: list[DefragInterval] = []
    start: datetime | None = None
    for line in member.log_lines():
        msg = line.get("msg")
        when = _ts(line)
        if when is None:
            continue
        if msg == "starting defragment":
            if start is not None:
                intervals.append(DefragInterval(member.name, start, None))
            start = when
        elif msg == "finished defragment" and start is not None:
            intervals.append(DefragInterval(member.name, start, when))
            start = None
    if start is not None:
        intervals.append(DefragInterval(member.name, start, None))
    return intervals


def defrag_intervals(cluster: EtcdCluster) -> list[DefragInterval]:
    """Every defragmentation of every member, in start order."""
    found = [i for m in cluster.members for i in member_defrags(m)]
    return sorted(found, key=lambda i: i.start)


def max_concurrent_defrags(intervals: list[DefragInterval]) -> int:
    """The most defragmentations running at one moment (an unfinished one runs forever)."""
    events: list[tuple[datetime, int]] = []
    for interval in intervals:
        events.append((interval.start, 1))
        if interval.end is not None:
            events.append((interval.end, -1))
    # At equal timestamps (millisecond logs) count the end first: end == start is not overlap.
    events.sort(key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def role_changes(member: EtcdMember) -> list[tuple[datetime, str]]:
    """(time, "leader" | "follower" | ...) from raft's "became ..." lines of this member."""
    changes: list[tuple[datetime, str]] = []
    for line in member.log_lines():
        msg = line.get("msg")
        when = _ts(line)
        if isinstance(msg, str) and " became " in msg and when is not None:
            role = msg.split(" became ", 1)[1].split(" ", 1)[0]
            changes.append((when, role))
    return changes


def compactions(member: EtcdMember) -> list[int]:
    """The revisions this member finished compacting to, in order, from its own log (every
    member compacts each revision once: a list per member, not per cluster)."""
    found: list[int] = []
    for line in member.log_lines():
        revision = line.get("compact-revision")
        if line.get("msg") == "finished scheduled compaction" and isinstance(revision, int):
            found.append(revision)
    return found
