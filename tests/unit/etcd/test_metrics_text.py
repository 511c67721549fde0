"""Parsing real /metrics pages of etcd 3.5.1 and 3.4.23, and pages that are not."""

from __future__ import annotations

import contextlib
import gzip
import math
import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etcdagent.errors import EtcdProtocolError
from etcdagent.etcd.metrics_text import parse_member_metrics
from etcdagent.models import MemberMetrics

DATA = Path(__file__).parents[1] / "data"
VERSIONS = ["3.5.1", "3.4.23"]
WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
ENDPOINT = "http://10.0.0.1:2379"


@cache
def page(version: str) -> str:
    with gzip.open(DATA / f"metrics-{version}.txt.gz", "rt") as f:
        return f.read()


def parse(text: str) -> MemberMetrics:
    return parse_member_metrics(text, scraped_at=WHEN, endpoint=ENDPOINT)


def sample(text: str, series: str) -> float:
    """The value of one exact series, read straight from the text (an independent check)."""
    found = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(series + " ") or line == series
    ]
    assert len(found) == 1, f"{series}: {len(found)} lines"
    return found[0]


@pytest.fixture(params=VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_real_page_sizes_match_the_text(version: str) -> None:
    text = page(version)
    metrics = parse(text)
    assert metrics.scraped_at == WHEN
    assert metrics.db_size == int(sample(text, "etcd_mvcc_db_total_size_in_bytes")) == 20480
    assert (
        metrics.db_size_in_use
        == int(sample(text, "etcd_mvcc_db_total_size_in_use_in_bytes"))
        == 16384
    )
    assert metrics.quota == 2 * 1024**3 == int(sample(text, "etcd_server_quota_backend_bytes"))


def test_real_page_leadership(version: str) -> None:
    metrics = parse(page(version))
    assert metrics.has_leader is True
    assert metrics.is_leader is True
    assert metrics.is_learner is False
    assert metrics.defrag_inflight is False
    assert metrics.leader_changes == sample(page(version), "etcd_server_leader_changes_seen_total")
    assert metrics.leader_changes == 1


def test_real_page_counters_and_revisions(version: str) -> None:
    text = page(version)
    metrics = parse(text)
    assert metrics.proposals_failed == 0
    assert metrics.slow_apply == 0
    assert metrics.current_revision == int(sample(text, "etcd_debugging_mvcc_current_revision"))
    assert metrics.current_revision == 3
    # -1 on the page means "never compacted"; it must not be shown as a negative revision
    assert (metrics.compact_revision or 0) == 0
    assert metrics.process_start_time == pytest.approx(sample(text, "process_start_time_seconds"))


def test_real_page_grpc_unary_handled_is_the_sum_of_unary_series(version: str) -> None:
    text = page(version)
    expected = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("grpc_server_handled_total{") and 'grpc_type="unary"' in line
    )
    assert expected > 0
    assert parse(text).grpc_unary_handled == expected


@pytest.mark.parametrize(
    ("family", "field"),
    [
        ("etcd_disk_wal_fsync_duration_seconds", "wal_fsync"),
        ("etcd_disk_backend_commit_duration_seconds", "backend_commit"),
        ("etcd_disk_backend_defrag_duration_seconds", "defrag_duration"),
    ],
)
def test_real_page_histograms(version: str, family: str, field: str) -> None:
    text = page(version)
    hist = getattr(parse(text), field)
    assert hist is not None
    bounds = [le for le, _ in hist.buckets]
    assert bounds == sorted(bounds)
    assert bounds[-1] == math.inf
    counts = [c for _, c in hist.buckets]
    assert counts == sorted(counts), "cumulative counts never decrease"
    assert hist.count == sample(text, f"{family}_count")
    assert hist.sum == pytest.approx(sample(text, f"{family}_sum"))
    assert hist.buckets[-1][1] == sample(text, f'{family}_bucket{{le="+Inf"}}')
    lines = re.findall(rf"^{family}_bucket\{{le=\"([^\"]+)\"\}}", text, flags=re.M)
    assert len(hist.buckets) == len(lines)


def test_wal_fsync_buckets_are_the_documented_ones() -> None:
    hist = parse(page("3.5.1")).wal_fsync
    assert hist is not None
    assert [le for le, _ in hist.buckets[:-1]] == [0.001 * 2**i for i in range(14)]
    assert hist.count == 7


def test_page_without_the_families_gives_none() -> None:
    text = (
        "# HELP go_goroutines Number of goroutines that currently exist.\n"
        "# TYPE go_goroutines gauge\n"
        "go_goroutines 42\n"
    )
    metrics = parse(text)
    assert metrics.scraped_at == WHEN
    for name in MemberMetrics.model_fields:
        if name != "scraped_at":
            assert getattr(metrics, name) is None, name


def test_page_with_some_families_fills_only_those() -> None:
    text = "etcd_server_has_leader 0\netcd_mvcc_db_total_size_in_bytes 4096\n"
    metrics = parse(text)
    assert metrics.has_leader is False
    assert metrics.db_size == 4096
    assert metrics.quota is None
    assert metrics.wal_fsync is None
    assert metrics.leader_changes is None


def test_34_old_db_size_name_is_enough() -> None:
    metrics = parse("etcd_debugging_mvcc_db_total_size_in_bytes 8192\n")
    assert metrics.db_size == 8192


def test_empty_page() -> None:
    assert parse("").db_size is None


def test_histogram_without_inf_bucket_is_dropped() -> None:
    text = (
        "# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n"
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 1\n'
        "etcd_disk_wal_fsync_duration_seconds_sum 0.0005\n"
        "etcd_disk_wal_fsync_duration_seconds_count 1\n"
    )
    assert parse(text).wal_fsync is None


def test_non_finite_gauges_are_ignored() -> None:
    metrics = parse("etcd_mvcc_db_total_size_in_bytes NaN\netcd_server_quota_backend_bytes +Inf\n")
    assert metrics.db_size is None
    assert metrics.quota is None


def test_idle_member_reports_zero_grpc_traffic_not_unknown() -> None:
    # Regression: zero-valued gRPC series are dropped before parsing; a member that has served no
    # unary request yet must report 0, not None ("family missing").
    text = (
        "# HELP grpc_server_handled_total Total number of RPCs completed on the server.\n"
        "# TYPE grpc_server_handled_total counter\n"
        'grpc_server_handled_total{grpc_code="OK",grpc_method="Range",'
        'grpc_service="etcdserverpb.KV",grpc_type="unary"} 0\n'
    )
    assert parse(text).grpc_unary_handled == 0


@pytest.mark.parametrize(
    "text",
    [
        "etcd_server_has_leader\n",
        "etcd_server_has_leader yes\n",
        'etcd_server_quota_backend_bytes{a="b" 1\n',
        "# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n"
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="x"} 1\n',
        "# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n"
        "etcd_disk_wal_fsync_duration_seconds_bucket 1\n",
    ],
)
def test_broken_page_is_a_protocol_error_naming_the_endpoint(text: str) -> None:
    with pytest.raises(EtcdProtocolError) as info:
        parse(text)
    assert str(info.value).startswith(ENDPOINT + ":")
    assert "/metrics" in str(info.value)
    assert info.value.endpoint == ENDPOINT


PAGE_35 = page("3.5.1")
PAGE_34 = page("3.4.23")


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([PAGE_35, PAGE_34]), st.data())
def test_truncated_real_pages_parse_or_raise_protocol_error(text: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(text)))
    try:
        metrics = parse(text[:cut])
    except EtcdProtocolError as exc:
        assert str(exc).startswith(ENDPOINT)
        return
    assert metrics.scraped_at == WHEN


@settings(deadline=None)
@given(st.sampled_from([PAGE_35, PAGE_34]), st.data())
def test_real_pages_with_garbage_spliced_in(text: str, data: st.DataObject) -> None:
    lines = text.splitlines()
    at = data.draw(st.integers(min_value=0, max_value=len(lines)))
    junk = data.draw(st.text(max_size=40))
    prefix = data.draw(
        st.sampled_from(["", "etcd_server_has_leader", "etcd_mvcc_db_total_size_in_bytes", "# "])
    )
    with contextlib.suppress(EtcdProtocolError):
        parse("\n".join([*lines[:at], prefix + junk, *lines[at:]]))


@settings(deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_parses_or_raises_protocol_error(text: str) -> None:
    with contextlib.suppress(EtcdProtocolError):
        parse(text)


wanted = st.sampled_from(
    [
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_server_has_leader",
        "etcd_server_leader_changes_seen_total",
        "etcd_disk_wal_fsync_duration_seconds_bucket",
        "etcd_disk_wal_fsync_duration_seconds_count",
        "grpc_server_handled_total",
        "# TYPE etcd_disk_wal_fsync_duration_seconds",
        "# TYPE etcd_server_has_leader",
    ]
)


@settings(deadline=None)
@given(st.lists(st.tuples(wanted, st.text(max_size=30)), max_size=8))
def test_lines_of_wanted_families_with_arbitrary_tails(parts: list[tuple[str, str]]) -> None:
    text = "\n".join(name + tail for name, tail in parts)
    with contextlib.suppress(EtcdProtocolError):
        parse(text)


PEER_ROUND_TRIPS = """\
# HELP etcd_network_peer_round_trip_time_seconds Round-Trip-Time histogram between peers
# TYPE etcd_network_peer_round_trip_time_seconds histogram
etcd_network_peer_round_trip_time_seconds_bucket{To="118089dec9eef41",le="0.0001"} 1
etcd_network_peer_round_trip_time_seconds_bucket{To="118089dec9eef41",le="0.0002"} 2
etcd_network_peer_round_trip_time_seconds_bucket{To="118089dec9eef41",le="+Inf"} 2
etcd_network_peer_round_trip_time_seconds_sum{To="118089dec9eef41"} 0.0002
etcd_network_peer_round_trip_time_seconds_count{To="118089dec9eef41"} 2
etcd_network_peer_round_trip_time_seconds_bucket{To="652879c7a5f06890",le="0.0001"} 0
etcd_network_peer_round_trip_time_seconds_bucket{To="652879c7a5f06890",le="0.0002"} 0
etcd_network_peer_round_trip_time_seconds_bucket{To="652879c7a5f06890",le="+Inf"} 3
etcd_network_peer_round_trip_time_seconds_sum{To="652879c7a5f06890"} 1.5
etcd_network_peer_round_trip_time_seconds_count{To="652879c7a5f06890"} 3
"""


def test_peer_round_trips_are_one_histogram_per_peer() -> None:
    """As etcd 3.4.23 and 3.6.14 print them on a 3-member cluster (the "To" label is the peer's
    member ID in hex)."""
    metrics = parse_member_metrics(PEER_ROUND_TRIPS, scraped_at=datetime(2026, 12, 1, tzinfo=UTC))
    peers = dict(metrics.peer_round_trip or ())
    assert set(peers) == {"118089dec9eef41", "652879c7a5f06890"}
    assert peers["118089dec9eef41"].count == 2
    assert peers["652879c7a5f06890"].buckets[-1] == (math.inf, 3.0)


def test_a_single_member_has_no_peer_round_trips() -> None:
    metrics = parse_member_metrics("", scraped_at=datetime(2026, 12, 1, tzinfo=UTC))
    assert metrics.peer_round_trip is None
