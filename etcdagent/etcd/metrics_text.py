"""Extract the families the agent needs from one member's Prometheus text.

etcd's /metrics page is ~150 KB and ~1,400 samples, of which the agent needs a few dozen. Lines of
other families are dropped before prometheus_client's parser sees them, which keeps a scrape of a
5-member cluster cheap enough to run every few seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from etcdagent.errors import EtcdProtocolError
from etcdagent.etcd import versions
from etcdagent.models import Histogram, MemberMetrics

# family name (as prometheus_client reports it: counters lose "_total") -> MemberMetrics field
_GAUGES = {
    "etcd_mvcc_db_total_size_in_bytes": "db_size",
    "etcd_mvcc_db_total_size_in_use_in_bytes": "db_size_in_use",
    "etcd_server_quota_backend_bytes": "quota",
    "etcd_server_has_leader": "has_leader",
    "etcd_server_is_leader": "is_leader",
    "etcd_server_is_learner": "is_learner",
    "etcd_disk_defrag_inflight": "defrag_inflight",
    "etcd_debugging_mvcc_current_revision": "current_revision",
    "etcd_debugging_mvcc_compact_revision": "compact_revision",
    "process_start_time_seconds": "process_start_time",
}
# Older versions' names for the same families (``versions.RENAMED_METRICS``) fill the same field:
# the first one on the page wins.
_GAUGES.update({old: _GAUGES[new] for old, new in versions.RENAMED_METRICS.items()})
_RENAMED_FIELDS = {_GAUGES[new] for new in versions.RENAMED_METRICS.values()}
_COUNTERS = {
    "etcd_server_leader_changes_seen": "leader_changes",
    "etcd_server_proposals_failed": "proposals_failed",
    "etcd_server_slow_apply": "slow_apply",
}
_HISTOGRAMS = {
    "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds": "compaction_duration",
    "etcd_disk_wal_fsync_duration_seconds": "wal_fsync",
    "etcd_disk_backend_commit_duration_seconds": "backend_commit",
    "etcd_disk_backend_defrag_duration_seconds": "defrag_duration",
}
_PEER_ROUND_TRIP = "etcd_network_peer_round_trip_time_seconds"  # one histogram per peer ("To")
_GRPC = "grpc_server_handled"
# Every key-value operation the member's store served, whichever listener it came through: the
# traffic measure where grpc_server_handled_total under-counts (``models.UNDERCOUNTED_GRPC``).
_MVCC_OPERATIONS = ("etcd_mvcc_range", "etcd_mvcc_put", "etcd_mvcc_delete", "etcd_mvcc_txn")

_INT_FIELDS = {"db_size", "db_size_in_use", "quota", "current_revision", "compact_revision"}
_BOOL_FIELDS = {"has_leader", "is_leader", "is_learner", "defrag_inflight"}

_WANTED_PREFIXES = tuple(
    sorted({*_GAUGES, *_COUNTERS, *_HISTOGRAMS, *_MVCC_OPERATIONS, _GRPC, _PEER_ROUND_TRIP})
)
_COMMENT_PREFIXES = tuple(
    f"# {kind} {name}" for kind in ("HELP", "TYPE") for name in _WANTED_PREFIXES
)


def _relevant_lines(text: str) -> str:
    """Only the wanted families; of grpc_server_handled_total (one series per method and code,
    ~700 lines, nearly all zero) only the non-zero series, which are all a sum needs."""
    keep = []
    for line in text.splitlines():
        if line.startswith(_GRPC):
            if not line.endswith(" 0"):
                keep.append(line)
        elif line.startswith(_WANTED_PREFIXES) or line.startswith(_COMMENT_PREFIXES):
            keep.append(line)
    return "\n".join(keep) + "\n"


def _histogram(family: Metric) -> Histogram | None:
    buckets: dict[float, float] = {}
    count = total = 0.0
    for sample in family.samples:
        if sample.name.endswith("_bucket"):
            le = float(sample.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + sample.value
        elif sample.name.endswith("_count"):
            count += sample.value
        elif sample.name.endswith("_sum"):
            total += sample.value
    if not buckets or math.inf not in buckets:
        return None
    ordered = tuple(sorted(buckets.items()))
    return Histogram(buckets=ordered, count=count, sum=total)


def _per_peer(family: Metric) -> tuple[tuple[str, Histogram], ...]:
    """One histogram per value of the ``To`` label (the peer's member ID in hex)."""
    peers: dict[str, list[Sample]] = {}
    for sample in family.samples:
        peer = sample.labels.get("To")
        if peer:
            peers.setdefault(peer, []).append(sample)
    found: list[tuple[str, Histogram]] = []
    for peer, samples in sorted(peers.items()):
        one = Metric(family.name, family.documentation, family.type)
        one.samples = samples
        histogram = _histogram(one)
        if histogram is not None:
            found.append((peer, histogram))
    return tuple(found)


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def parse_member_metrics(text: str, *, scraped_at: datetime, endpoint: str = "") -> MemberMetrics:
    """Parse a /metrics page; families the member lacks stay None.

    A page the parser cannot read raises EtcdProtocolError naming the endpoint, so a broken proxy
    in front of a member surfaces as that member's scrape error, not as a crash.
    """
    values: dict[str, object] = {"scraped_at": scraped_at}
    try:
        families: Iterable[Metric] = list(text_string_to_metric_families(_relevant_lines(text)))
        grpc_total: float | None = None
        mvcc_total: float | None = None
        for family in families:
            name = family.name
            if name in _HISTOGRAMS and family.type == "histogram":
                values[_HISTOGRAMS[name]] = _histogram(family)
            elif name == _PEER_ROUND_TRIP and family.type == "histogram":
                values["peer_round_trip"] = _per_peer(family)
            elif name in _GAUGES and family.samples:
                field = _GAUGES[name]
                value = family.samples[0].value
                if not _finite(value) or (field in values and field in _RENAMED_FIELDS):
                    continue
                if field in _INT_FIELDS:
                    values[field] = max(0, int(value))
                elif field in _BOOL_FIELDS:
                    values[field] = value >= 1
                else:
                    values[field] = value
            elif name in _COUNTERS:
                totals = [s.value for s in family.samples if s.name.endswith("_total")]
                if totals and all(_finite(v) for v in totals):
                    values[_COUNTERS[name]] = sum(totals)
            elif name in _MVCC_OPERATIONS:
                totals = [s.value for s in family.samples if s.name.endswith("_total")]
                if totals and all(_finite(v) for v in totals):
                    mvcc_total = (mvcc_total or 0.0) + sum(totals)
            elif name == _GRPC:
                unary = [
                    s.value
                    for s in family.samples
                    if s.name.endswith("_total") and s.labels.get("grpc_type") == "unary"
                ]
                # Zero-valued series were dropped before parsing: none left means no traffic.
                grpc_total = sum(v for v in unary if _finite(v))
        if grpc_total is not None:
            values["grpc_unary_handled"] = grpc_total
        if mvcc_total is not None:
            values["mvcc_operations"] = mvcc_total
        return MemberMetrics.model_validate(values)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        # prometheus_client's parser documents no error type; any of these means "not metrics".
        raise EtcdProtocolError(
            f"{endpoint or 'etcd'}: /metrics is not Prometheus text this agent understands: "
            f"{type(exc).__name__}: {str(exc)[:120]}",
            endpoint=endpoint or None,
        ) from None
