"""A point-in-time picture of the cluster: what every member said, or why it said nothing.

Snapshots are plain immutable data so that deciding (health, plans) is a pure function of them and
can be tested without etcd.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from etcdagent.models import Alarm, Member, MemberMetrics, MemberStatus


class Role(StrEnum):
    LEADER = "leader"
    FOLLOWER = "follower"
    LEARNER = "learner"
    UNKNOWN = "unknown"


class DefragAttempt(BaseModel):
    """A defragmentation the agent started: the sizes it began with and when."""

    model_config = ConfigDict(frozen=True)

    size: int = 0
    in_use: int = 0
    started_at: datetime
    by: str = ""


class DefragRecord(BaseModel):
    """What the agents recorded of one member's defragmentations (``/etcdagent/defrag/<id>``).

    ``size``, ``in_use``, ``duration``, ``started_at`` and ``finished_at`` describe the last
    defrag that finished (None before any did): the rate it rewrote the live data at estimates
    the next one. ``in_flight`` is a defrag started and not (yet) recorded as finished: with a
    member whose process started after it, etcd was restarted mid-defrag.
    """

    model_config = ConfigDict(frozen=True)

    size: int | None = None
    in_use: int | None = None
    duration: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    in_flight: DefragAttempt | None = None


class MemberSnapshot(BaseModel):
    model_config = ConfigDict(frozen=True)

    member: Member
    endpoint: str | None
    status: MemberStatus | None = None
    metrics: MemberMetrics | None = None
    error: str | None = None
    metrics_error: str | None = None
    hashkv_missing: str | None = None
    """Why this member cannot be asked for its HashKV (its etcd predates it on the gateway), or
    None when it can or it did not answer: a version fact of ``etcd.versions`` that ``gather``
    records here, because ``decide`` names the consistency check and may not import that layer."""
    defrag_record: DefragRecord | None = None
    """The agents' record of this member's defragmentations, read from etcd by ``gather`` (None
    when there is none or it could not be read: see ``ClusterSnapshot.defrag_records_error``)."""

    @property
    def reachable(self) -> bool:
        return self.status is not None

    @property
    def is_learner(self) -> bool:
        return self.member.is_learner or (self.status is not None and self.status.is_learner)

    @property
    def db_size(self) -> int | None:
        return self.status.db_size if self.status else None

    @property
    def db_size_in_use(self) -> int | None:
        return self.status.db_size_in_use if self.status else None

    @property
    def free(self) -> int | None:
        if self.status is None:
            return None
        return max(0, self.status.db_size - self.status.db_size_in_use)

    @property
    def fragmentation(self) -> float | None:
        """Share of the file that is free pages (0..1): what a defrag would give back."""
        if self.status is None or self.status.db_size == 0:
            return None
        return (self.free or 0) / self.status.db_size

    @property
    def quota(self) -> int | None:
        """The backend quota, discovered from the server, never configured.

        From 3.6.6 the status says it; before, the /metrics gauge is the one that is right with
        the default quota too (see ``models.RELIABLE_STATUS_QUOTA``), and an older 3.6 status is
        the last resort when /metrics is not reachable (it is right whenever it is non-zero).
        """
        if self.status is not None and self.status.reliable_quota:
            return self.status.reliable_quota
        if self.metrics is not None and self.metrics.quota:
            return self.metrics.quota
        if self.status is not None and self.status.db_size_quota:
            return self.status.db_size_quota
        return None

    @property
    def quota_use(self) -> float | None:
        quota = self.quota
        if quota is None or self.status is None:
            return None
        return self.status.db_size / quota


def names_member(member: Member, local: str) -> bool:
    """Whether ``--local-member`` names this member plainly: by its name or a client URL it
    advertises (a URL it only answers on is resolved by ``gather``)."""
    wanted = local.rstrip("/")
    return member.name == wanted or wanted in (u.rstrip("/") for u in member.client_urls)


class ClusterSnapshot(BaseModel):
    model_config = ConfigDict(frozen=True)

    taken_at: datetime
    cluster_id: int
    discovered_via: str
    members: tuple[MemberSnapshot, ...]
    alarms: tuple[Alarm, ...] = ()
    alarms_error: str | None = None
    defrag_records_error: str | None = None  # why the defrag records could not be read
    local_member_id: int | None = None
    """The member ``daemon.local_member`` names, as ``gather`` resolved it: by name, by an
    advertised client URL, or the member answering on a URL none advertises (kubeadm's
    https://127.0.0.1:2379). None when none is configured or it names no member."""
    local_member_unresolved: str | None = None
    """Why a configured ``daemon.local_member`` names no member *for now*: a URL no member
    advertises did not answer, and no earlier answer there is remembered. None when it names a
    member, or plainly none (a name or an answer that is no member's)."""

    @property
    def voting(self) -> tuple[MemberSnapshot, ...]:
        return tuple(m for m in self.members if not m.is_learner)

    @property
    def quorum(self) -> int:
        return len(self.voting) // 2 + 1

    @property
    def leader_id(self) -> int | None:
        """The leader most reachable voting members agree on (a lone stale view loses)."""
        votes = Counter(
            m.status.leader for m in self.voting if m.status is not None and m.status.leader
        )
        if not votes:
            return None
        leader, _ = votes.most_common(1)[0]
        return leader

    def role(self, snap: MemberSnapshot) -> Role:
        if snap.is_learner:
            return Role.LEARNER
        leader = self.leader_id
        if leader is not None and snap.member.id == leader:
            return Role.LEADER
        if snap.status is None:
            return Role.UNKNOWN
        return Role.FOLLOWER

    @property
    def downgrade_target(self) -> str | None:
        """The version a downgrade in progress goes to (etcd 3.6 `downgrade enable`), if any.

        Any member saying so is enough: the flag is cluster state, replicated through raft.
        """
        for snap in self.members:
            if snap.status is not None and snap.status.downgrade.enabled:
                return snap.status.downgrade.target_version or "an older version"
        return None

    def alarms_of(self, snap: MemberSnapshot) -> tuple[Alarm, ...]:
        return tuple(a for a in self.alarms if a.member_id == snap.member.id)

    def by_id(self, member_id: int) -> MemberSnapshot | None:
        return next((m for m in self.members if m.member.id == member_id), None)

    def answering_voter(self) -> MemberSnapshot | None:
        """The first voting member that answered and has an endpoint: where a cluster-wide
        read or raft request goes when any member will do."""
        return next((m for m in self.voting if m.reachable and m.endpoint), None)

    def local(self, local: str) -> MemberSnapshot | None:
        """The member ``--local-member`` names: the one ``gather`` resolved, else (a snapshot
        made without it) by name or advertised client URL."""
        if self.local_member_id is not None:
            return self.by_id(self.local_member_id)
        return next((m for m in self.members if names_member(m.member, local)), None)
