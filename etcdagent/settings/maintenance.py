"""What maintenance does and when it may: compaction, defragmentation, the lock, the gates that
must be open before it starts, and the emergencies that do not wait for a window."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator

from etcdagent.settings.fields import (
    Bytes,
    Nullable,
    Ratio,
    Seconds,
    SecondsOrZero,
    SettingsGroup,
)


class CompactionMode(StrEnum):
    """Who compacts: the agent, or kube-apiserver (which compacts every 5m by itself)."""

    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


class CompactionSettings(SettingsGroup):
    """Compaction by revision, keeping a retention so watchers (kube-apiserver) keep history."""

    mode: CompactionMode = Field(
        default=CompactionMode.AUTO,
        description="auto: leave compaction to kube-apiserver while it compacts (its key "
        "compact_rev_key moved within two of its intervals), compact with the retention when "
        "none does, taking part in the same compact_rev_key transaction where the key exists. "
        "always: compact on the agent's cadence whatever kube-apiserver does (still through "
        "the transaction). never: the agent does not compact (NOSPACE recovery still may, and "
        "says so).",
    )
    apiserver_interval: Seconds = Field(
        default=300.0,
        description="kube-apiserver's --etcd-compaction-interval (default 5m). The daemon "
        "measures the interval from the key's moves and uses the longer of the two; "
        "compact_rev_key quiet for twice this long means no apiserver compacts.",
    )

    retain: Annotated[SecondsOrZero | None, Nullable] = Field(
        default=300.0,
        description="Keep at least this much history by time (default 5m, what kube-apiserver's "
        "watchers need). Measured by etcd's clock, not the agent's: marker keys under /etcdagent/ "
        "carry a lease whose remaining TTL tells their age; until one is older than this, "
        "nothing is compacted by time.",
    )
    retain_revisions: int | None = Field(
        default=None,
        ge=0,
        description="Keep at least this many revisions. With both set, the larger history wins.",
    )
    applied_timeout: Seconds = Field(
        default=30.0,
        description="How long to wait for every member to finish a compaction (also one whose "
        "request timed out: it still runs on the server). No defrag starts before: the run "
        "stops with a reason when it is not finished by then.",
    )
    request_timeout: Seconds = Field(
        default=60.0,
        description="Timeout of the compaction request itself (the member that serves it "
        "answers once it has compacted, which takes longer than an ordinary request on a large "
        "history). A request that times out is not an error: the compaction is watched until "
        "every member has finished it (compaction.applied_timeout).",
    )

    @model_validator(mode="after")
    def _some_retention(self) -> CompactionSettings:
        if self.retain_revisions is not None and "retain" not in self.model_fields_set:
            # Asking for a revision count alone means that count, not count-or-5-minutes.
            object.__setattr__(self, "retain", None)
        if self.retain is None and self.retain_revisions is None:
            raise ValueError("set retain (a duration) or retain_revisions (a count), or both")
        return self


class DefragSettings(SettingsGroup):
    """When a member's defragmentation is worth it, and how carefully it is done."""

    min_free_ratio: Ratio = Field(
        default=0.45, description="Defragment when at least this share of the file is free..."
    )
    min_db_size: Bytes = Field(default=100 * 1024**2, description="...and the file is this big.")
    quota_pressure: Ratio = Field(
        default=0.80, description="Or when the file uses at least this share of the quota..."
    )
    min_reclaimable_under_pressure: Bytes = Field(
        default=64 * 1024**2, description="...and at least this much can be reclaimed."
    )
    compact_first: bool = Field(
        default=True, description="Compact (with the retention) before defragmenting."
    )
    move_leader: bool = Field(
        default=True,
        description="Move leadership to an already defragmented member (voting, answering, "
        "caught up) before the leader's turn: lease keep-alives, the maintenance lock's "
        "included, are served by the leader only and fail while it defragments.",
    )
    wait_between: SecondsOrZero = Field(
        default=5.0, description="Pause between two members, after the first has caught up."
    )
    timeout_min: Seconds = Field(default=60.0, description="Defrag timeout floor.")
    timeout_per_gib: Seconds = Field(
        default=120.0,
        description="Defrag timeout added per GiB of file (large files take minutes).",
    )
    timeout_max: Seconds = Field(default=1800.0, description="Defrag timeout cap.")
    max_apply_lag: int = Field(
        default=1000,
        ge=0,
        description="Gate: raft entries a member may have committed but not applied.",
    )
    estimated_rate: Bytes = Field(
        default=50 * 1024**2,
        description="Bytes per second a defrag is assumed to rewrite, to estimate its duration: "
        "a defrag that would overrun the maintenance window's end is not started.",
    )
    budget: Annotated[Seconds | None, Nullable] = Field(
        default=60.0,
        description="Longest defrag to start, estimated per member (its own past defrags, else "
        "estimated_rate): a member whose estimate is longer is skipped and named, to be "
        "defragmented offline. kubeadm's etcd liveness probe (/health?serializable=true, "
        "every 10s, 8 failures, 15s timeout) fails while a defrag holds the backend and gets "
        "etcd restarted after about 80s, mid-defrag. `run` and `run --once` cap it at "
        "daemon.grace_period. null (or off) disables it; NOSPACE recovery only notes it.",
    )
    recover_max_quota_use: Ratio = Field(
        default=0.9,
        description="NOSPACE recovery disarms only when the data in use is below this share of "
        "the quota; above it, the next writes would raise the alarm again.",
    )
    recover_retry_unrecoverable: Seconds = Field(
        default=600.0,
        description="After a NOSPACE recovery was refused because the data in use fills the "
        "quota, the daemon tries again only when a member's in-use size or quota changed, or "
        "after this long anyway.",
    )
    recovery_timeout: Seconds = Field(
        default=60.0,
        description="How long a member may take to answer and catch up after its defrag.",
    )

    @model_validator(mode="after")
    def _timeouts(self) -> DefragSettings:
        if self.timeout_min > self.timeout_max:
            raise ValueError("timeout_min must not exceed timeout_max")
        return self


class LockSettings(SettingsGroup):
    """The lease-based lock that keeps maintenance to one agent at a time, cluster-wide."""

    ttl: Seconds = Field(
        default=15.0, description="Lease TTL: how soon a killed agent's lock frees itself."
    )
    timeout: SecondsOrZero = Field(
        default=30.0, description="How long to wait for another agent's maintenance to end."
    )


class GateSettings(SettingsGroup):
    """Conditions checked before maintenance starts; each one blocking is reported by name.

    Defaults follow the alert thresholds of etcd-mixin (contrib/mixin in etcd-io/etcd).
    """

    wal_fsync_p99_max: SecondsOrZero = Field(
        default=0.5,
        description="Block while any member's WAL fsync p99 over the lookback exceeds "
        "this (etcdHighFsyncDurations warns at 0.5 s).",
    )
    backend_commit_p99_max: SecondsOrZero = Field(
        default=0.25,
        description="Block while any member's backend commit p99 exceeds "
        "this (etcdHighCommitDurations: 0.25 s).",
    )
    max_leader_changes: int = Field(
        default=3, ge=0, description="Block after more leader changes than this in the lookback."
    )
    max_request_rate: Annotated[Annotated[float, Field(ge=0)] | None, Nullable] = Field(
        default=1000.0,
        description="Traffic gate for windows: block while the cluster serves more unary gRPC "
        "requests per second than this (a window that is not actually quiet is skipped). "
        "null (or off) disables it.",
    )


class EmergencySettings(SettingsGroup):
    """Triggers that act outside maintenance windows, each switchable."""

    nospace: bool = Field(default=True, description="A NOSPACE alarm starts recovery at once.")
    quota: bool = Field(
        default=True,
        description="Quota pressure starts compaction and defragmentation outside windows, "
        "still behind the safety gates.",
    )
    quota_use: Ratio = Field(default=0.9, description="Quota pressure: file / quota at least this.")
    time_to_quota: Annotated[Seconds | None, Nullable] = Field(
        default=3600.0,
        description="Quota pressure: the predicted time until the quota is reached (from the "
        "growth over the lookback, once it has been watched for a minute or the whole lookback) "
        "is shorter than this. Null disables it.",
    )
