"""Typed, immutable views of what etcd reports.

The gateway's JSON has traps (int64 as strings, zero values omitted, member IDs decimal in JSON but
hex everywhere an operator looks); these models absorb them once, so no other module has to know.
Construct from gateway JSON with ``Model.from_gateway(payload)``; construct by field name in tests.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Self

from pydantic import (
    AliasPath,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from etcdagent.errors import EtcdProtocolError


def member_id_hex(member_id: int) -> str:
    """Hex without leading zeros, exactly as etcdctl and etcd's metric labels print IDs."""
    return f"{member_id:x}"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    @classmethod
    def from_gateway(cls, payload: Any, *, endpoint: str | None = None) -> Self:
        """Validate one gateway answer; a malformed one becomes the project's own error."""
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise EtcdProtocolError(
                f"{endpoint or 'etcd'}: unexpected {cls.__name__} answer: {where}: {first['msg']}",
                endpoint=endpoint,
            ) from None


class Member(_Model):
    """One entry of the member list."""

    id: int = Field(validation_alias="ID", ge=0)
    name: str = ""
    peer_urls: tuple[str, ...] = Field(default=(), validation_alias="peerURLs")
    client_urls: tuple[str, ...] = Field(default=(), validation_alias="clientURLs")
    is_learner: bool = Field(default=False, validation_alias="isLearner")

    @property
    def id_hex(self) -> str:
        return member_id_hex(self.id)

    @property
    def started(self) -> bool:
        """A member added with `member add` but never started has no name and no client URLs."""
        return bool(self.client_urls)

    @property
    def display_name(self) -> str:
        return self.name or f"(unstarted {self.id_hex})"


class MemberList(_Model):
    cluster_id: int = Field(default=0, validation_alias=AliasPath("header", "cluster_id"), ge=0)
    member_id: int = Field(default=0, validation_alias=AliasPath("header", "member_id"), ge=0)
    members: tuple[Member, ...] = ()


_ALARM_ERROR = re.compile(r"memberID:(\d+) alarm:(\w+)")


_RELEASE = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def release(version: str) -> tuple[int, int, int] | None:
    """``"3.6.14"`` as ``(3, 6, 14)``, for comparing releases; None when it is not a release."""
    match = _RELEASE.match(version)
    if match is None:
        return None
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


RELIABLE_STATUS_QUOTA = (3, 6, 6)
"""From this release on, a status answer's ``dbSizeQuota`` is the quota etcd enforces.

3.6.0-3.6.5 report the configured flag, which is 0 (so omitted) with the default quota; the
``etcd_server_quota_backend_bytes`` gauge is right on every version, so it is preferred there.
"""


UNDERCOUNTED_GRPC = ((3, 6, 0), (3, 6, 5))
"""Releases whose ``grpc_server_handled_total`` counts the requests of one client listener only.

With kubeadm's two client URLs (127.0.0.1 and the node's address) a busy member could look
quiet; on these the traffic measure is the store's operation counters instead (writes count on
every member, so it reads high rather than low: the safe side for a gate that keeps
maintenance out of busy times).
"""


def undercounts_grpc(version: str) -> bool:
    ours = release(version)
    low, high = UNDERCOUNTED_GRPC
    return ours is not None and low <= ours <= high


class Downgrade(_Model):
    """``downgradeInfo`` of a 3.6 status: a downgrade of the cluster is in progress while enabled.

    Measured on 3.6.14: ``{"enabled": true, "targetVersion": "3.5.0"}`` from `downgrade enable`
    until `downgrade cancel` (or the downgrade completes); ``{}`` otherwise.
    """

    enabled: bool = False
    target_version: str = Field(default="", validation_alias="targetVersion")


class MemberStatus(_Model):
    """What one member says of itself (/v3/maintenance/status)."""

    member_id: int = Field(validation_alias=AliasPath("header", "member_id"), ge=0)
    cluster_id: int = Field(default=0, validation_alias=AliasPath("header", "cluster_id"), ge=0)
    revision: int = Field(default=0, validation_alias=AliasPath("header", "revision"), ge=0)
    version: str = ""
    db_size: int = Field(default=0, validation_alias="dbSize", ge=0)
    db_size_in_use: int = Field(default=0, validation_alias="dbSizeInUse", ge=0)
    db_size_quota: int = Field(default=0, validation_alias="dbSizeQuota", ge=0)  # etcd 3.6+
    leader: int = Field(default=0, ge=0)
    raft_index: int = Field(default=0, validation_alias="raftIndex", ge=0)
    raft_term: int = Field(default=0, validation_alias="raftTerm", ge=0)
    raft_applied_index: int = Field(default=0, validation_alias="raftAppliedIndex", ge=0)
    errors: tuple[str, ...] = ()
    is_learner: bool = Field(default=False, validation_alias="isLearner")
    storage_version: str = Field(default="", validation_alias="storageVersion")  # etcd 3.6+
    downgrade: Downgrade = Field(default_factory=Downgrade, validation_alias="downgradeInfo")

    @property
    def release(self) -> tuple[int, int, int] | None:
        return release(self.version)

    @property
    def reliable_quota(self) -> int | None:
        """``dbSizeQuota`` where it is the enforced quota (see ``RELIABLE_STATUS_QUOTA``)."""
        ours = self.release
        if self.db_size_quota and ours is not None and ours >= RELIABLE_STATUS_QUOTA:
            return self.db_size_quota
        return None

    @field_validator("errors", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        # etcd appends a trailing space to "memberID:... alarm:NOSPACE ".
        if isinstance(value, list | tuple):
            return tuple(v.strip() if isinstance(v, str) else v for v in value)
        return value

    @property
    def is_leader(self) -> bool:
        return self.leader != 0 and self.leader == self.member_id

    @property
    def alarms(self) -> tuple[Alarm, ...]:
        """Alarms this member knows of, from ``errors`` ("memberID:<dec> alarm:<KIND>").

        Unlike the alarm list call, which goes through raft and fails without a leader, the status
        answers locally, so alarms stay visible while the cluster has no quorum.
        """
        found = []
        for text in self.errors:
            match = _ALARM_ERROR.fullmatch(text)
            if match and match.group(2) in AlarmType.__members__:
                found.append(Alarm(member_id=int(match.group(1)), alarm=AlarmType(match.group(2))))
        return tuple(found)

    @property
    def apply_lag(self) -> int:
        return max(0, self.raft_index - self.raft_applied_index)


class AlarmType(StrEnum):
    NONE = "NONE"
    NOSPACE = "NOSPACE"
    CORRUPT = "CORRUPT"


class Alarm(_Model):
    member_id: int = Field(default=0, validation_alias="memberID", ge=0)
    alarm: AlarmType = AlarmType.NONE

    @property
    def member_id_hex(self) -> str:
        return member_id_hex(self.member_id)

    @field_serializer("member_id")
    def _hex(self, value: int) -> str:
        """Hex in reports, like every other ID; the gateway calls use the int field itself."""
        return member_id_hex(value)

    def __str__(self) -> str:
        return f"{self.alarm.value}@{self.member_id_hex}"


class AlarmList(_Model):
    alarms: tuple[Alarm, ...] = ()


class KeyValue(_Model):
    """One key of a range answer (keys and values are base64 in the gateway's JSON)."""

    key: bytes
    value: bytes = b""
    create_revision: int = Field(default=0, ge=0)
    mod_revision: int = Field(default=0, ge=0)
    version: int = Field(default=0, ge=0)
    lease: int = Field(default=0, ge=0)

    @field_validator("key", "value", mode="before")
    @classmethod
    def _b64(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except ValueError:
                raise ValueError("not base64") from None
        return value


class RangeAnswer(_Model):
    revision: int = Field(default=0, validation_alias=AliasPath("header", "revision"), ge=0)
    kvs: tuple[KeyValue, ...] = ()
    count: int = Field(default=0, ge=0)


class HashKV(_Model):
    """A member's hash of its keyspace up to one revision (/v3/maintenance/hashkv, 3.5.10+).

    ``compact_revision`` is the compaction the member had applied when it hashed (-1: none);
    two members' hashes are comparable only when it and the revision are the same. 3.6 also
    says which revision it hashed (``hash_revision``; 0 when absent, as before 3.6).
    """

    revision: int = Field(default=0, validation_alias=AliasPath("header", "revision"), ge=0)
    member_id: int = Field(default=0, validation_alias=AliasPath("header", "member_id"), ge=0)
    hash: int = Field(default=0, ge=0)
    compact_revision: int = Field(default=-1, ge=-1)
    hash_revision: int = Field(default=0, ge=0)


class Histogram(BaseModel):
    """A Prometheus histogram at one scrape: cumulative bucket counts by upper bound."""

    model_config = ConfigDict(frozen=True)

    buckets: tuple[tuple[float, float], ...]  # (le, cumulative count), ascending le, +Inf last
    count: float
    sum: float


class MemberMetrics(BaseModel):
    """The families of one member's /metrics the agent needs; None where the member lacks one."""

    model_config = ConfigDict(frozen=True)

    scraped_at: datetime
    db_size: int | None = None
    db_size_in_use: int | None = None
    quota: int | None = None
    wal_fsync: Histogram | None = None
    backend_commit: Histogram | None = None
    defrag_duration: Histogram | None = None
    compaction_duration: Histogram | None = None  # its count grows when a compaction finishes
    leader_changes: float | None = None
    has_leader: bool | None = None
    is_leader: bool | None = None
    is_learner: bool | None = None
    defrag_inflight: bool | None = None
    proposals_failed: float | None = None
    slow_apply: float | None = None
    current_revision: int | None = None
    compact_revision: int | None = None
    grpc_unary_handled: float | None = None
    mvcc_operations: float | None = None  # range + put + delete + txn counters of the store
    process_start_time: float | None = None
    # etcd_network_peer_round_trip_time_seconds, per peer (its member ID in hex, the "To" label)
    peer_round_trip: tuple[tuple[str, Histogram], ...] | None = None
