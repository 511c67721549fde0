"""Thresholds of `etcdagent doctor` and the daemon's doctor findings.

Each threshold names where it comes from: the Kubernetes performance tuning guide (the article this
project grew from), etcd's op-guide (hardware, maintenance), or etcd-mixin's alerts
(contrib/mixin in etcd-io/etcd). They only decide a finding's severity; nothing here changes
what the agent does.
"""

from __future__ import annotations

from pydantic import Field

from etcdagent.settings.fields import Bytes, Ratio, Seconds, SettingsGroup

GIB = 1024**3


class DoctorSettings(SettingsGroup):
    """The doctor's checks: when a finding is a warning or critical."""

    quota_warning: Ratio = Field(
        default=0.8,
        description="DB size / quota at or above this is a warning (etcd-defrag's example rule "
        "dbQuotaUsage > 0.8).",
    )
    quota_critical: Ratio = Field(
        default=0.95,
        description="DB size / quota at or above this is critical (etcd-mixin "
        "etcdDatabaseQuotaLowSpace, 95%).",
    )
    time_to_quota_warning: Seconds = Field(
        default=4 * 3600.0,
        description="Predicted time to the quota below this is a warning (etcd-mixin "
        "etcdExcessiveDatabaseGrowth: predict_linear over 4h).",
    )
    time_to_quota_critical: Seconds = Field(
        default=3600.0,
        description="Predicted time to the quota below this is critical (the agent's "
        "emergency.time_to_quota default).",
    )
    max_quota: Bytes = Field(
        default=8 * GIB,
        description="A quota above this is a warning: 8 GiB is etcd's suggested maximum "
        "(op-guide, hardware and maintenance).",
    )
    default_quota_horizon: Seconds = Field(
        default=7 * 86400.0,
        description="A database on etcd's 2 GiB default quota that reaches it within this, at "
        "its growth, is a warning: set --quota-backend-bytes (the tuning guide suggests 8 GiB "
        "for large clusters).",
    )
    wal_fsync_p99_guidance: Seconds = Field(
        default=0.010,
        description="WAL fsync p99 above this is a warning: etcd's hardware guidance (< 10 ms) "
        "and the tuning guide's SLA (etcd write latency < 10 ms).",
    )
    wal_fsync_p99_critical: Seconds = Field(
        default=1.0,
        description="WAL fsync p99 above this is critical (etcd-mixin etcdHighFsyncDurations, "
        "critical level; its warning is 0.5 s).",
    )
    backend_commit_p99_guidance: Seconds = Field(
        default=0.025,
        description="Backend commit p99 above this is a warning: etcd's hardware guidance "
        "(< 25 ms).",
    )
    backend_commit_p99_critical: Seconds = Field(
        default=0.25,
        description="Backend commit p99 above this is critical (etcd-mixin "
        "etcdHighCommitDurations, 0.25 s).",
    )
    max_leader_changes: int = Field(
        default=3,
        ge=0,
        description="More leader changes than this in the lookback is a warning (etcd-mixin "
        "etcdHighNumberOfLeaderChanges: 4 or more in 15 min).",
    )
    peer_round_trip_p99_warning: Seconds = Field(
        default=0.1,
        description="Peer round-trip p99 above this is a warning: etcd's default "
        "--heartbeat-interval (100 ms), which its tuning guide sets near the round trip, with "
        "the election timeout (1000 ms) at least 10 times it.",
    )
    peer_round_trip_p99_critical: Seconds = Field(
        default=0.5,
        description="Peer round-trip p99 above this is critical: half of etcd's default "
        "--election-timeout (1000 ms), where late heartbeats start elections.",
    )
    max_apply_lag: int = Field(
        default=1000,
        ge=0,
        description="A member with more raft entries committed but not applied than this is a "
        "warning (the agent's defrag.max_apply_lag default).",
    )
    max_uncompacted_revisions: int = Field(
        default=1_000_000,
        ge=1,
        description="Revisions kept since the last compaction above this, with nothing seen "
        "compacting, is a warning even on an idle database (kube-apiserver keeps 5 min).",
    )
    events_share_warning: Ratio = Field(
        default=0.5,
        description="/registry/events/ keys at least this share of all keys is a warning: the "
        "tuning guide's advice, --etcd-servers-overrides=/events#<events etcd>.",
    )
    leases_share_warning: Ratio = Field(
        default=0.5,
        description="/registry/leases/ keys at least this share of all keys is a warning: "
        "coordination leases are one per node and per elected component, so a majority of "
        "them points at a controller creating leases it never deletes.",
    )
    min_keys_for_share: int = Field(
        default=1000,
        ge=0,
        description="The event and lease shares are judged only when the cluster holds at "
        "least this many keys (a share of a near-empty keyspace says nothing).",
    )
    blocked_windows_period: Seconds = Field(
        default=3 * 86400.0,
        description="In the daemon: a gate that blocked every maintenance window it saw over "
        "this period is a warning (the EtcdagentGateBlockingEveryWindow alert's 3 days).",
    )
    blocked_windows_min: int = Field(
        default=2,
        ge=1,
        description="...counted only once the daemon saw at least this many windows in it.",
    )
    key_count_interval: Seconds = Field(
        default=300.0,
        description="The daemon counts the keys (count-only ranges) at most this often.",
    )
