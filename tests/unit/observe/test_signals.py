"""Signals over the lookback, as an operator would check them against PromQL and the dashboards.

Hand-built histories: every sample is a MemberMetrics scraped at ``WHEN + t`` seconds, wrapped in a
ClusterSnapshot like the daemon's. The p99 expectations are computed by hand with PromQL's rules
(``histogram_quantile(0.99, rate(h[5m]))``), written out next to each figure.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from etcdagent_testing.snapshots import IDS, MIB, WHEN, member
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etcdagent.etcd.metrics_text import parse_member_metrics
from etcdagent.models import Histogram, MemberMetrics, MemberStatus
from etcdagent.observe.signals import MemberSignals, SignalHistory, histogram_quantile
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot

INF = math.inf
# etcd's disk histograms (wal fsync, backend commit): 1 ms doubling up to 8.192 s.
LES = (*(0.001 * 2**i for i in range(14)), INF)
START = 1.7e9  # process_start_time_seconds of the member's process
DATA = Path(__file__).parents[1] / "data"


def at(seconds: float) -> datetime:
    return WHEN + timedelta(seconds=seconds)


def hist(per_bucket: Mapping[float, float], les: tuple[float, ...] = LES) -> Histogram:
    """A histogram from the number of observations that fell in each bucket (not cumulative)."""
    assert set(per_bucket) <= set(les)
    running = 0.0
    buckets = []
    for le in les:
        running += per_bucket.get(le, 0)
        buckets.append((le, running))
    total = sum(n * (le if le != INF else 10.0) for le, n in per_bucket.items())
    return Histogram(buckets=tuple(buckets), count=running, sum=total)


def add(*hists: Histogram) -> Histogram:
    """Bucket-wise sum: the cumulative histogram after several periods."""
    buckets = tuple(
        (bs[0][0], sum(c for _, c in bs)) for bs in zip(*(h.buckets for h in hists), strict=True)
    )
    return Histogram(
        buckets=buckets, count=sum(h.count for h in hists), sum=sum(h.sum for h in hists)
    )


def metrics(t: float, **fields: Any) -> MemberMetrics:
    fields.setdefault("process_start_time", START)
    return MemberMetrics(scraped_at=at(t), **fields)


def cluster_at(t: float, **by_name: MemberMetrics | None) -> ClusterSnapshot:
    """The daemon's snapshot at WHEN + t: members by name, None for a failed scrape."""
    return ClusterSnapshot(
        taken_at=at(t),
        cluster_id=1,
        discovered_via="http://m1:2379",
        members=tuple(
            MemberSnapshot(member=member(name), endpoint=f"http://{name}:2379", metrics=m)
            for name, m in by_name.items()
        ),
    )


def feed(history: SignalHistory, samples: Iterable[MemberMetrics], name: str = "m1") -> None:
    for sample in samples:
        history.observe(cluster_at((sample.scraped_at - WHEN).total_seconds(), **{name: sample}))


def signals_at(history: SignalHistory, t: float, name: str = "m1") -> MemberSignals:
    return history.signals(at(t))[IDS[name]]


# -- histogram_quantile: PromQL's figures, computed by hand ----------------------------------


def test_quantile_interpolates_linearly_inside_the_bucket() -> None:
    h = hist({0.001: 10, 0.002: 40, 0.004: 50})  # 100 observations
    # rank 99 is in (0.002, 0.004], which holds ranks 51..100: 0.002 + 0.002 * 49/50
    assert histogram_quantile(0.99, None, h) == pytest.approx(0.00396)
    # rank 50 is the top of (0.001, 0.002]: its upper bound
    assert histogram_quantile(0.5, None, h) == pytest.approx(0.002)
    # rank 5 is in the first bucket, whose lower bound is 0: 0.001 * 5/10
    assert histogram_quantile(0.05, None, h) == pytest.approx(0.0005)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    h = hist({0.001: 1, INF: 99})
    assert histogram_quantile(0.99, None, h) == 8.192
    assert histogram_quantile(1.0, None, h) == 8.192


def test_quantile_of_a_single_bucket() -> None:
    # every observation in (0.008, 0.016]: 0.008 + 0.008 * 198/200
    assert histogram_quantile(0.99, None, hist({0.016: 200})) == pytest.approx(0.01592)
    # a histogram with a single finite bucket starts it at 0
    only = Histogram(buckets=((0.5, 10.0), (INF, 10.0)), count=10, sum=1)
    assert histogram_quantile(0.99, None, only) == pytest.approx(0.495)


def test_quantile_uses_the_bucket_deltas_between_two_scrapes() -> None:
    before = hist({0.001: 100_000})
    window = hist({0.001: 10, 0.002: 40, 0.004: 50})
    assert histogram_quantile(0.99, before, add(before, window)) == pytest.approx(0.00396)
    # the cumulative view sees 100,100 observations, 99 % of them under 1 ms
    cumulative = histogram_quantile(0.99, None, add(before, window))
    assert cumulative is not None
    assert cumulative < 0.001


def test_quantile_is_none_without_observations_or_across_a_reset() -> None:
    h = hist({0.001: 10, 0.002: 40})
    assert histogram_quantile(0.99, h, h) is None  # nothing happened in the window
    assert histogram_quantile(0.99, None, hist({})) is None
    # the newer scrape has fewer observations: another process, no meaningful delta
    assert histogram_quantile(0.99, h, hist({0.001: 5})) is None
    # one bucket went down while the count grew: still a reset
    assert histogram_quantile(0.99, h, hist({0.001: 5, 0.002: 100})) is None
    # another bucket layout (another binary)
    other = hist({0.5: 10}, les=(0.5, INF))
    assert histogram_quantile(0.99, h, other) is None


def test_quantile_refuses_malformed_histograms_and_quantiles() -> None:
    no_inf = Histogram(buckets=((0.1, 1.0), (0.2, 2.0)), count=2, sum=0.3)
    only_inf = Histogram(buckets=((INF, 5.0),), count=5, sum=1)
    unsorted = Histogram(buckets=((0.2, 1.0), (0.1, 2.0), (INF, 2.0)), count=2, sum=0.3)
    nan = Histogram(buckets=((0.1, math.nan), (INF, 2.0)), count=2, sum=0.3)
    for bad in (no_inf, only_inf, unsorted, nan):
        assert histogram_quantile(0.99, None, bad) is None
    for q in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="quantile"):
            histogram_quantile(q, None, hist({0.001: 1}))


def test_quantile_evens_out_non_monotonic_buckets_like_promql() -> None:
    # a scrape is not atomic: a bucket may read one less than the one below it
    h = Histogram(buckets=((0.1, 10.0), (0.2, 9.0), (0.4, 20.0), (INF, 20.0)), count=20, sum=2)
    # treated as 10, 10, 20: rank 19.8 in (0.2, 0.4] holding ranks 11..20: 0.2 + 0.2 * 9.8/10
    assert histogram_quantile(0.99, None, h) == pytest.approx(0.396)


def test_quantile_zero_is_zero_not_nan() -> None:
    assert histogram_quantile(0.0, None, hist({0.004: 3})) == 0.0


# -- p99 over the lookback ----------------------------------------------------------------


def test_a_recent_fsync_spike_shows_in_the_window_p99_not_in_the_cumulative_one() -> None:
    """Days of 1 ms fsyncs, then 5 minutes in which 2 % of them took about a second."""
    history = SignalHistory(lookback=300)
    past = hist({0.001: 1_000_000})
    samples = []
    total = past
    for i in range(21):  # t = 0, 15, ..., 300
        if i:
            total = add(total, hist({0.001: 49, 1.024: 1}))
        samples.append(metrics(15 * i, wal_fsync=total, backend_commit=past))
    feed(history, samples)
    sig = signals_at(history, 300)
    # 1,000 fsyncs in the window, 20 of them in (0.512, 1.024]: rank 990 is the 10th of those 20
    assert sig.wal_fsync_p99 == pytest.approx(0.512 + 0.512 * 10 / 20)
    assert histogram_quantile(0.99, None, total) == pytest.approx(0.00099, rel=0.01)
    assert sig.wal_fsyncs == 1000
    assert sig.backend_commit_p99 is None  # no commit at all in the window
    assert sig.backend_commits == 0  # idle, not unknown
    assert sig.samples == 21
    assert sig.not_enough_data is None


def test_a_spike_older_than_the_lookback_is_forgotten() -> None:
    history = SignalHistory(lookback=300)
    total = hist({0.001: 1000})
    samples = []
    for i in range(61):  # t = 0 .. 900
        total = add(total, hist({4.096: 100} if i < 10 else {0.002: 100}))
        samples.append(metrics(15 * i, wal_fsync=total))
    feed(history, samples)
    sig = signals_at(history, 900)
    assert sig.wal_fsync_p99 == pytest.approx(0.001 + 0.001 * 0.99)
    assert sig.samples == 21  # t = 600 .. 900


# -- restarts --------------------------------------------------------------------------------


def _busy(t: float, n: float, start: float = START) -> MemberMetrics:
    """A member that has served n requests, seen n/100 leader changes and n fsyncs."""
    return metrics(
        t,
        process_start_time=start,
        grpc_unary_handled=n,
        leader_changes=n // 100,
        wal_fsync=hist({0.002: n}),
        db_size=int(100 * MIB + n),
    )


def test_a_restart_means_not_enough_data_then_values_from_new_samples_only() -> None:
    history = SignalHistory(lookback=300)
    feed(history, [_busy(0, 100_000), _busy(15, 101_500), _busy(30, 103_000)])
    assert signals_at(history, 30).request_rate == pytest.approx(100.0)

    feed(history, [_busy(45, 50, start=START + 40)])  # restarted: counters back near 0
    sig = signals_at(history, 45)
    assert sig.samples == 1
    assert sig.not_enough_data == "1 sample since the member restarted; need 2"
    assert sig.request_rate is None
    assert sig.leader_changes is None
    assert sig.wal_fsync_p99 is None
    assert sig.db_growth_rate is None

    feed(history, [_busy(60, 350, start=START + 40)])
    sig = signals_at(history, 60)
    assert sig.not_enough_data is None
    assert sig.samples == 2
    assert sig.request_rate == pytest.approx(300 / 15)
    assert sig.leader_changes == 3
    assert sig.wal_fsync_p99 == pytest.approx(0.001 + 0.001 * 0.99)


def test_a_restart_is_detected_from_counters_when_the_start_time_is_missing() -> None:
    history = SignalHistory(lookback=300)
    feed(
        history,
        [
            metrics(0, process_start_time=None, grpc_unary_handled=1000),
            metrics(15, process_start_time=None, grpc_unary_handled=1150),
            metrics(30, process_start_time=None, grpc_unary_handled=20),
        ],
    )
    sig = signals_at(history, 30)
    assert sig.request_rate is None
    assert sig.not_enough_data == "1 sample since the member restarted; need 2"


def test_a_start_time_wobbling_by_a_second_is_not_a_restart() -> None:
    """The start time is boot time (whole seconds, moved by NTP) plus ticks since boot."""
    history = SignalHistory(lookback=300)
    starts = [START, START + 1, START, START - 1, START]
    feed(
        history,
        [
            metrics(15 * i, process_start_time=s, grpc_unary_handled=150.0 * i)
            for i, s in enumerate(starts)
        ],
    )
    sig = signals_at(history, 60)
    assert sig.samples == 5
    assert sig.request_rate == pytest.approx(10.0)


def test_a_restart_is_detected_from_a_histogram_going_down() -> None:
    history = SignalHistory(lookback=300)
    big, small = hist({0.002: 5000}), hist({0.002: 10})
    feed(history, [metrics(0, wal_fsync=big), metrics(15, wal_fsync=big)])
    feed(history, [metrics(30, process_start_time=None, wal_fsync=small)])
    assert signals_at(history, 30).samples == 1


def test_a_restart_seen_after_a_scrape_without_the_family_is_still_a_restart() -> None:
    history = SignalHistory(lookback=300)
    feed(
        history,
        [
            metrics(0, process_start_time=None, leader_changes=9),
            metrics(15, process_start_time=None),  # family missing this time
            metrics(30, process_start_time=None, leader_changes=1),
        ],
    )
    assert signals_at(history, 30).samples == 1


# -- DB growth and time to quota ---------------------------------------------------------------


def test_growth_rate_and_time_to_quota_on_a_linear_series() -> None:
    """1 MiB/s with 100 MiB left under the quota: 100 s to go."""
    history = SignalHistory(lookback=300)
    quota = 500 * MIB + 100 * MIB
    feed(history, [metrics(t, db_size=200 * MIB + t * MIB, quota=quota) for t in range(0, 301, 15)])
    sig = signals_at(history, 300)
    assert sig.db_growth_rate == pytest.approx(MIB)
    assert sig.time_to_quota == pytest.approx(100.0)


def test_time_to_quota_uses_the_status_quota_of_etcd_3_6() -> None:
    history = SignalHistory(lookback=300)
    for t in range(0, 61, 15):
        m = member("m1")
        status = MemberStatus(member_id=m.id, db_size=0, db_size_quota=200 * MIB)
        sample = metrics(t, db_size=100 * MIB + t * MIB // 2)
        history.observe(
            ClusterSnapshot(
                taken_at=at(t),
                cluster_id=1,
                discovered_via="x",
                members=(MemberSnapshot(member=m, endpoint="x", status=status, metrics=sample),),
            )
        )
    sig = signals_at(history, 60)
    assert sig.db_growth_rate == pytest.approx(MIB / 2)
    assert sig.time_to_quota == pytest.approx((200 - 130) * 2)


def test_a_burst_seen_by_two_samples_predicts_no_quota_until_a_minute_of_growth() -> None:
    """40 MiB written in the 15 s between the agent's first two samples (a burst right after it
    started) is no trend: no time to quota, so no emergency outside the windows, until the
    growth has been watched for a minute."""
    history = SignalHistory(lookback=300)
    quota = 2 * 1024 * MIB
    feed(history, [metrics(0, db_size=100 * MIB, quota=quota)])
    feed(history, [metrics(15, db_size=140 * MIB, quota=quota)])
    early = signals_at(history, 15)
    assert early.db_growth_rate == pytest.approx(40 * MIB / 15)
    assert early.time_to_quota is None
    feed(
        history, [metrics(t, db_size=140 * MIB + (t - 15) * MIB, quota=quota) for t in (30, 45, 60)]
    )
    assert signals_at(history, 60).time_to_quota is not None


def test_no_time_to_quota_when_not_growing_or_without_quota() -> None:
    history = SignalHistory(lookback=300)
    feed(history, [metrics(t, db_size=100 * MIB, quota=200 * MIB) for t in range(0, 61, 15)])
    sig = signals_at(history, 60)
    assert sig.db_growth_rate == 0.0
    assert sig.time_to_quota is None
    assert sig.not_enough_data is None

    history = SignalHistory(lookback=300)
    feed(history, [metrics(t, db_size=100 * MIB + t) for t in range(0, 61, 15)])
    sig = signals_at(history, 60)
    assert sig.db_growth_rate == pytest.approx(1.0)
    assert sig.time_to_quota is None


def test_a_file_already_over_the_quota_has_no_time_left() -> None:
    history = SignalHistory(lookback=300)
    feed(history, [metrics(t, db_size=300 * MIB + t, quota=200 * MIB) for t in range(0, 61, 15)])
    assert signals_at(history, 60).time_to_quota == 0.0


def test_growth_after_a_defrag_in_the_window_is_not_hidden_by_it() -> None:
    """The file shrinks only when defragmented: the fit restarts there, never negative."""
    history = SignalHistory(lookback=300)
    sizes = [400 * MIB + t * MIB for t in range(0, 151, 15)]
    sizes += [100 * MIB + t * 2 * MIB for t in range(15, 151, 15)]  # defrag, then 2 MiB/s
    feed(history, [metrics(15 * i, db_size=s, quota=1000 * MIB) for i, s in enumerate(sizes)])
    sig = signals_at(history, 15 * (len(sizes) - 1))
    assert sig.db_growth_rate == pytest.approx(2 * MIB)
    assert sig.time_to_quota == pytest.approx((1000 - 400) / 2)


def test_growth_long_ago_is_ignored() -> None:
    history = SignalHistory(lookback=300)
    samples = [metrics(t, db_size=100 * MIB + t * MIB, quota=1000 * MIB) for t in range(0, 301, 15)]
    samples += [metrics(t, db_size=400 * MIB, quota=1000 * MIB) for t in range(315, 901, 15)]
    feed(history, samples)
    sig = signals_at(history, 900)
    assert sig.db_growth_rate == 0.0
    assert sig.time_to_quota is None


# -- leader changes and request rate -----------------------------------------------------------


def test_leader_changes_are_counted_within_the_lookback_only() -> None:
    history = SignalHistory(lookback=300)

    def changes(t: int) -> int:
        return 5 + (t >= 100) + (t >= 200)  # changes at t = 100 and 200, 5 before the window

    feed(history, [metrics(t, leader_changes=changes(t)) for t in range(0, 401, 15)])
    # window [100, 400]: the baseline (t = 90) still saw 5; the newest sample 7
    assert signals_at(history, 400).leader_changes == 2

    feed(history, [metrics(t, leader_changes=changes(t)) for t in range(405, 541, 15)])
    # window [240, 540]: both changes are before it
    assert signals_at(history, 540).leader_changes == 0


def test_request_rate_per_member_and_for_the_cluster() -> None:
    history = SignalHistory(lookback=300)
    for t in range(0, 301, 15):
        history.observe(
            cluster_at(
                t,
                m1=metrics(t, grpc_unary_handled=1000 + 10 * t),
                m2=metrics(t, grpc_unary_handled=20.0 * t),
                m3=None,  # scrape failing all along
            )
        )
    sigs = history.signals(at(300))
    assert sigs[IDS["m1"]].request_rate == pytest.approx(10.0)
    assert sigs[IDS["m2"]].request_rate == pytest.approx(20.0)
    assert sigs[IDS["m3"]].request_rate is None
    assert sigs[IDS["m3"]].not_enough_data == "no metrics scraped from this member yet"
    assert history.cluster_request_rate(at(300)) == pytest.approx(30.0)


def test_cluster_request_rate_is_none_when_no_member_has_one() -> None:
    history = SignalHistory()
    history.observe(cluster_at(0, m1=metrics(0, grpc_unary_handled=5), m2=None))
    assert history.cluster_request_rate(at(0)) is None


def test_the_baseline_before_the_window_counts_requests_made_at_its_start() -> None:
    """Scrapes every 60 s, lookback 300 s: the scrape at t = 0 anchors the window [10, 310].

    600 requests were served between t = 0 and t = 60, none after: without the baseline the
    window would see none of them.
    """
    history = SignalHistory(lookback=300)
    feed(history, [metrics(t, grpc_unary_handled=600.0 * (t > 0)) for t in range(0, 301, 60)])
    sig = signals_at(history, 310)
    assert sig.samples == 5  # t = 60 .. 300; the baseline is not counted
    assert sig.request_rate == pytest.approx(600 / 300)


def test_a_baseline_older_than_two_lookbacks_is_not_used() -> None:
    history = SignalHistory(lookback=300)
    feed(history, [metrics(0, grpc_unary_handled=0.0)])
    feed(history, [metrics(t, grpc_unary_handled=9000 + t) for t in (700, 715)])
    sig = signals_at(history, 715)
    assert sig.request_rate == pytest.approx(1.0)


# -- history keeping -----------------------------------------------------------------------------


def test_one_sample_is_not_enough() -> None:
    history = SignalHistory(lookback=300)
    feed(history, [metrics(0, grpc_unary_handled=10)])
    sig = signals_at(history, 0)
    assert sig == MemberSignals(
        member_id=IDS["m1"], samples=1, not_enough_data="1 sample in the last 300 s; need 2"
    )


def test_samples_older_than_the_lookback_are_ignored() -> None:
    history = SignalHistory(lookback=300)
    feed(history, [metrics(t, grpc_unary_handled=float(t)) for t in (0, 15, 30)])
    sig = signals_at(history, 1000)
    assert sig.samples == 0
    assert sig.request_rate is None
    assert sig.not_enough_data == "no sample in the last 300 s (the newest is 970 s old)"


def test_a_failed_scrape_keeps_the_older_samples() -> None:
    history = SignalHistory(lookback=300)
    feed(history, [metrics(t, grpc_unary_handled=5.0 * t) for t in (0, 15)])
    history.observe(cluster_at(30, m1=None))
    sig = signals_at(history, 30)
    assert sig.samples == 2
    assert sig.request_rate == pytest.approx(5.0)


def test_members_that_left_are_forgotten() -> None:
    history = SignalHistory()
    history.observe(cluster_at(0, m1=metrics(0), m2=metrics(0)))
    history.observe(cluster_at(15, m1=metrics(15)))
    assert set(history.signals(at(15))) == {IDS["m1"]}
    history.observe(cluster_at(30, m1=metrics(30), m2=metrics(30)))
    assert signals_at(history, 30, "m2").samples == 1  # back, but from scratch


def test_the_same_scrape_seen_twice_replaces_the_sample() -> None:
    history = SignalHistory()
    feed(history, [metrics(0, grpc_unary_handled=0.0), metrics(15, grpc_unary_handled=150.0)])
    feed(history, [metrics(15, grpc_unary_handled=300.0)])
    sig = signals_at(history, 15)
    assert sig.samples == 2
    assert sig.request_rate == pytest.approx(20.0)


def test_a_clock_stepping_back_restarts_the_history() -> None:
    history = SignalHistory()
    feed(history, [metrics(t, grpc_unary_handled=float(t)) for t in (100, 115)])
    feed(history, [metrics(50, grpc_unary_handled=200.0)])
    sig = signals_at(history, 50)
    assert sig.samples == 1
    assert sig.not_enough_data == "1 sample since the agent's clock went back; need 2"


def test_memory_is_bounded() -> None:
    history = SignalHistory(lookback=300, max_samples=10)
    feed(history, [metrics(t, grpc_unary_handled=float(t)) for t in range(0, 3001)])
    sig = signals_at(history, 3000)
    assert sig.samples == 10
    assert sig.request_rate == pytest.approx(1.0)
    sparse = SignalHistory(lookback=300)
    feed(sparse, [metrics(t, grpc_unary_handled=float(t)) for t in range(0, 3001, 15)])
    assert signals_at(sparse, 3000).samples == 21


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="lookback"):
        SignalHistory(lookback=0)
    with pytest.raises(ValueError, match="max_samples"):
        SignalHistory(max_samples=1)


def test_real_pages_of_an_idle_member() -> None:
    """Two scrapes of the captured pages: nothing happened in between, and it says so."""
    for version in ("3.5.1", "3.4.23"):
        with gzip.open(DATA / f"metrics-{version}.txt.gz", "rt") as f:
            text = f.read()
        history = SignalHistory()
        for t in (0, 15):
            history.observe(cluster_at(t, m1=parse_member_metrics(text, scraped_at=at(t))))
        sig = signals_at(history, 15)
        assert sig.samples == 2
        assert sig.wal_fsync_p99 is None  # no fsync between the scrapes
        assert sig.wal_fsyncs == 0
        assert sig.leader_changes == 0
        assert sig.request_rate == 0.0
        assert sig.db_growth_rate == 0.0
        assert sig.time_to_quota is None


def test_a_member_upgraded_from_3_4_to_3_5_restarts_its_history() -> None:
    pages = {}
    for version in ("3.4.23", "3.5.1"):
        with gzip.open(DATA / f"metrics-{version}.txt.gz", "rt") as f:
            pages[version] = f.read()
    history = SignalHistory()
    history.observe(cluster_at(0, m1=parse_member_metrics(pages["3.4.23"], scraped_at=at(0))))
    history.observe(cluster_at(15, m1=parse_member_metrics(pages["3.5.1"], scraped_at=at(15))))
    assert signals_at(history, 15).samples == 1


# -- never negative, NaN or infinite ---------------------------------------------------------------

SMALL_LES = (0.01, 0.1, INF)
FIELDS = ("leader_changes", "grpc_unary_handled", "wal_fsync", "backend_commit", "db_size")
counters = st.none() | st.integers(0, 10**6).map(float) | st.sampled_from([0.0, 1e300, math.nan])


def _cumulative(counts: list[int], les: tuple[float, ...] = SMALL_LES) -> Histogram:
    buckets = tuple((le, float(sum(counts[: i + 1]))) for i, le in enumerate(les))
    return Histogram(buckets=buckets, count=buckets[-1][1], sum=0.0)


histograms = st.none() | st.builds(
    _cumulative,
    st.lists(st.integers(0, 1000), min_size=3, max_size=3),
    st.sampled_from([SMALL_LES, (0.02, 0.1, INF), (*LES[:2], INF)]),
)
# A scrape with arbitrary values: counters may go anywhere, even NaN or 1e300.
raw = st.fixed_dictionaries(
    {
        "kind": st.just("raw"),
        "process_start_time": st.sampled_from([None, START, START + 1]),
        "leader_changes": counters,
        "grpc_unary_handled": counters,
        "wal_fsync": histograms,
        "backend_commit": histograms,
        "db_size": st.none() | st.integers(0, 2**40),
        "quota": st.none() | st.integers(0, 2**34),
    }
)
# A plausible next scrape: every counter grows, the file grows (or shrinks: a defrag), some
# families may be missing from this page.
grow = st.fixed_dictionaries(
    {
        "kind": st.just("grow"),
        "requests": st.integers(0, 10_000),
        "leader_changes": st.integers(0, 2),
        "fsyncs": st.lists(st.integers(0, 100), min_size=3, max_size=3),
        "db": st.integers(-(10**7), 10**7),
        "missing": st.sets(st.sampled_from(FIELDS), max_size=2),
    }
)
# The member restarted: counters start over, with or without a visible start time.
restart = st.fixed_dictionaries({"kind": st.just("restart"), "start_time_known": st.booleans()})
member_step = st.one_of(st.none(), grow, grow, grow, grow, grow, restart, raw)
steps = st.lists(
    st.tuples(
        st.sampled_from([-20.0, 0.0, 0.001, 1.0, 15.0, 15.0, 15.0, 299.0, 700.0]),
        st.dictionaries(st.sampled_from(["m1", "m2", "m3"]), member_step),
    ),
    max_size=40,
)


class _Member:
    """The state of one simulated member across the steps."""

    def __init__(self) -> None:
        self.start = START
        self.requests = 0.0
        self.leaders = 0.0
        self.fsyncs = [0, 0, 0]
        self.db = 100 * MIB

    def scrape(self, t: float, step: dict[str, Any]) -> MemberMetrics:
        kind = step["kind"]
        if kind == "raw":
            return metrics(t, **{k: v for k, v in step.items() if k != "kind"})
        if kind == "restart":
            self.start += 1
            self.requests = self.leaders = 0.0
            self.fsyncs = [0, 0, 0]
            start = self.start if step["start_time_known"] else None
            return metrics(t, process_start_time=start, grpc_unary_handled=0.0, leader_changes=0)
        self.requests += step["requests"]
        self.leaders += step["leader_changes"]
        self.fsyncs = [a + b for a, b in zip(self.fsyncs, step["fsyncs"], strict=True)]
        self.db = max(0, self.db + step["db"])
        values: dict[str, Any] = {
            "leader_changes": self.leaders,
            "grpc_unary_handled": self.requests,
            "wal_fsync": _cumulative(self.fsyncs),
            "backend_commit": _cumulative(self.fsyncs[::-1]),
            "db_size": self.db,
        }
        for name in step["missing"]:
            values[name] = None
        return metrics(t, process_start_time=self.start, quota=2048 * MIB, **values)


def _check(sig: MemberSignals) -> None:
    for value in (
        sig.wal_fsync_p99,
        sig.backend_commit_p99,
        sig.request_rate,
        sig.db_growth_rate,
        sig.time_to_quota,
    ):
        assert value is None or (math.isfinite(value) and value >= 0), sig
    for p99 in (sig.wal_fsync_p99, sig.backend_commit_p99):
        assert p99 is None or p99 <= 0.1, sig  # never above the highest finite bound
    assert sig.leader_changes is None or sig.leader_changes >= 0
    for count in (sig.wal_fsyncs, sig.backend_commits):
        assert count is None or count >= 0
    assert sig.samples >= 0
    assert (sig.not_enough_data is not None) == (sig.samples < 2), sig


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.sampled_from([0.0, 5.0, 300.0, 1000.0]))
def test_arbitrary_histories_never_give_negative_or_absurd_values(
    sequence: list[tuple[float, dict[str, dict[str, Any] | None]]], later: float
) -> None:
    history = SignalHistory(lookback=300, max_samples=50)
    members = {name: _Member() for name in ("m1", "m2", "m3")}
    t = 0.0
    for dt, by_name in sequence:
        t += dt
        scrapes = {
            name: None if step is None else members[name].scrape(t, step)
            for name, step in by_name.items()
        }
        history.observe(cluster_at(t, **scrapes))
        for now in (t, t + later):
            for sig in history.signals(at(now)).values():
                _check(sig)
            rate = history.cluster_request_rate(at(now))
            assert rate is None or (math.isfinite(rate) and rate >= 0)


def _at_version(t: float, version: str, grpc: float, mvcc: float) -> ClusterSnapshot:
    status = MemberStatus(member_id=IDS["m1"], version=version, leader=IDS["m1"])
    m = metrics(t, grpc_unary_handled=grpc, mvcc_operations=mvcc)
    return ClusterSnapshot(
        taken_at=at(t),
        cluster_id=1,
        discovered_via="http://m1:2379",
        members=(
            MemberSnapshot(
                member=member("m1"), endpoint="http://m1:2379", status=status, metrics=m
            ),
        ),
    )


@pytest.mark.parametrize(
    ("version", "rate", "source"),
    [("3.6.4", 50.0, "mvcc"), ("3.6.6", 5.0, "grpc"), ("3.5.30", 5.0, "grpc")],
)
def test_traffic_is_counted_from_the_store_where_grpc_sees_one_listener(
    version: str, rate: float, source: str
) -> None:
    # etcd 3.6.0-3.6.5 count one client listener's requests: 5/s seen of a busier member.
    history = SignalHistory(lookback=300)
    for t, grpc, mvcc in ((0, 1000, 10_000), (15, 1075, 10_750), (30, 1150, 11_500)):
        history.observe(_at_version(t, version, grpc, mvcc))
    sig = signals_at(history, 30)
    assert sig.request_rate == pytest.approx(rate)
    assert sig.request_rate_source == source


def test_the_store_operation_counters_are_read_from_metrics() -> None:
    text = (
        "# TYPE etcd_mvcc_range_total counter\netcd_mvcc_range_total 7\n"
        "# TYPE etcd_mvcc_put_total counter\netcd_mvcc_put_total 100\n"
        "# TYPE etcd_mvcc_txn_total counter\netcd_mvcc_txn_total 2\n"
        "# TYPE etcd_mvcc_delete_total counter\netcd_mvcc_delete_total 1\n"
    )
    assert parse_member_metrics(text, scraped_at=WHEN).mvcc_operations == 110
    assert parse_member_metrics("", scraped_at=WHEN).mvcc_operations is None
