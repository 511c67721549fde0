"""Builders of hand-made cluster snapshots for the pure decision tests (no etcd needed).

Every member has a name from ``IDS``; sizes default to a file worth defragmenting (400 MiB with
100 MiB in use). Pass ``up=False`` for a member that does not answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from etcdagent.etcd.versions import hashkv_missing
from etcdagent.models import (
    Alarm,
    AlarmType,
    Downgrade,
    Member,
    MemberMetrics,
    MemberStatus,
)
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot
from etcdagent.settings import Settings, load_settings

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
MIB = 1024**2
GIB = 1024**3
IDS = {
    "m1": 0xA1,
    "m2": 0xB2,
    "m3": 0xC3,
    "m4": 0xD4,
    "m5": 0xE5,
    "l1": 0xF6,
    "l2": 0x1F7,
}


def member(name: str, *, learner: bool = False) -> Member:
    return Member(
        id=IDS[name],
        name=name,
        peer_urls=(f"http://{name}:2380",),
        client_urls=(f"http://{name}:2379",),
        is_learner=learner,
    )


def snap(
    name: str,
    *,
    leader: str | None = "m1",
    up: bool = True,
    learner: bool = False,
    db_size: int = 400 * MIB,
    in_use: int = 100 * MIB,
    quota: int = 0,
    metrics_quota: int | None = None,
    compact_revision: int | None = None,
    revision: int = 5000,
    raft_index: int = 700,
    applied: int | None = None,
    version: str = "3.5.1",
    downgrade_to: str | None = None,
    defrag_inflight: bool | None = False,
    metrics_up: bool = True,
) -> MemberSnapshot:
    """One member; ``quota`` is the 3.6 status field, ``metrics_quota`` the 3.4/3.5 metric.

    Its /metrics answer by default, saying it is not defragmenting (``defrag_inflight``; None:
    its etcd lacks the gauge); ``metrics_up=False`` for a member whose /metrics do not answer.
    """
    m = member(name, learner=learner)
    endpoint = f"http://{name}:2379"
    if not up:
        return MemberSnapshot(
            member=m,
            endpoint=endpoint,
            error=f"{endpoint}: status failed: connection refused",
            metrics_error="not scraped: the member does not answer",  # as observe.gather says
        )
    metrics = None
    metrics_error = None
    if metrics_up:
        metrics = MemberMetrics(
            scraped_at=WHEN,
            quota=metrics_quota,
            compact_revision=compact_revision,
            defrag_inflight=defrag_inflight,
        )
    else:
        metrics_error = f"{endpoint}/metrics: connection refused"
    status = MemberStatus(
        member_id=m.id,
        cluster_id=1,
        revision=revision,
        version=version,
        db_size=db_size,
        db_size_in_use=in_use,
        db_size_quota=quota,
        leader=IDS[leader] if leader else 0,
        raft_index=raft_index,
        raft_term=2,
        raft_applied_index=raft_index if applied is None else applied,
        is_learner=learner,
        downgrade=Downgrade(enabled=True, target_version=downgrade_to)
        if downgrade_to
        else Downgrade(),
    )
    return MemberSnapshot(
        member=m,
        endpoint=endpoint,
        status=status,
        metrics=metrics,
        metrics_error=metrics_error,
        hashkv_missing=hashkv_missing(version),  # as observe.gather records it
    )


def cluster(*members: MemberSnapshot, alarms: tuple[Alarm, ...] = ()) -> ClusterSnapshot:
    return ClusterSnapshot(
        taken_at=WHEN,
        cluster_id=1,
        discovered_via="http://m1:2379",
        members=members,
        alarms=alarms,
    )


def three(**kwargs: Any) -> ClusterSnapshot:
    """m1 (leader), m2, m3, all answering, with the same sizes."""
    return cluster(snap("m1", **kwargs), snap("m2", **kwargs), snap("m3", **kwargs))


def alarm(name: str, kind: AlarmType = AlarmType.NOSPACE) -> Alarm:
    return Alarm(member_id=IDS[name], alarm=kind)


def settings(
    *,
    defrag: dict[str, Any] | None = None,
    compaction: dict[str, Any] | None = None,
    lock: dict[str, Any] | None = None,
) -> Settings:
    overrides: dict[str, Any] = {}
    if defrag is not None:
        overrides["defrag"] = defrag
    if compaction is not None:
        overrides["compaction"] = compaction
    if lock is not None:
        overrides["lock"] = lock
    return load_settings(overrides)
