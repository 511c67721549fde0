"""What the daemon derives from each member's metrics over a lookback window.

A single scrape only says what happened since the member started: its latency histograms are
cumulative, so a fsync spike in the last five minutes drowns in days of fast fsyncs, and its
counters (leader changes, gRPC requests) give no rate. The gates and the emergency trigger need
recent behaviour, so the daemon keeps a short history of every member's ``MemberMetrics`` and
derives, over the lookback (default 5 min, the window of etcd-mixin's alerts):

- WAL fsync and backend commit p99, from the bucket deltas between the window's ends, exactly as
  PromQL's ``histogram_quantile(0.99, rate(...[5m]))`` does;
- the increase of leader changes and the unary gRPC request rate;
- the growth rate of the DB file (least-squares slope) and the time until it reaches the quota.

Window and baseline (the choice to document): the values use the samples taken within
``[now - lookback, now]``, plus one *baseline*: the newest sample taken before the window starts.
Counter increases and histogram deltas are taken from the baseline to the newest sample, so an
increase that happened between the last scrape before the window and the first scrape inside it
is not lost (PromQL's ``increase`` would extrapolate instead; the baseline needs no
extrapolation, and the result is always a real difference of two scrapes). A baseline taken more
than one lookback before the window starts (the member could not be scraped for that long) is not
used: the values would then describe a much longer period than the operator asked for. The DB
growth slope, like PromQL's ``deriv``, uses the samples inside the window only.

Nothing is reported until the window holds two samples: one scrape has no rate, and reporting the
cumulative figures instead would be exactly the "since start" view this module exists to avoid.
A member restart (a new ``process_start_time``, or a counter or histogram going down) starts its
history afresh, so a restart never yields a negative rate or a p99 made of pre-restart buckets.

Every function takes the time as an argument: nothing here reads a clock, so the whole module is
testable with hand-built snapshots.

About 420 lines, a little over the project's ~400, and kept whole on purpose: the history, the
restart rules and the derivations share one sample layout and one window rule, and splitting them
would spread this docstring's single definition of "the lookback" over several modules.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise

from pydantic import BaseModel, ConfigDict

from etcdagent.models import Histogram, MemberMetrics, undercounts_grpc
from etcdagent.observe.snapshot import ClusterSnapshot

# Counters of MemberMetrics: any of them going down means the member restarted.
_COUNTERS = (
    "leader_changes",
    "grpc_unary_handled",
    "mvcc_operations",
    "proposals_failed",
    "slow_apply",
)
# Histograms of MemberMetrics: a count or a bucket going down, or a new bucket layout (a new
# binary), means the member restarted.
_HISTOGRAMS = ("wal_fsync", "backend_commit", "defrag_duration", "compaction_duration")

# process_start_time_seconds is boot time (whole seconds, read from /proc/stat on every scrape, and
# moved by NTP) plus the process's ticks since boot, so it can shift by a second without any
# restart (prometheus/client_golang#289). Only a larger move is a restart; a restart within that
# tolerance of the previous start still shows as counters going down.
_START_TIME_TOLERANCE = 2.0

_RESTARTED = "the member restarted"
_CLOCK_WENT_BACK = "the agent's clock went back"


def histogram_quantile(q: float, older: Histogram | None, newer: Histogram) -> float | None:
    """The q-quantile of the observations made between two scrapes of one histogram.

    Same result as PromQL's ``histogram_quantile(q, rate(h[w]))`` when ``older`` and ``newer`` are
    the window's ends (``rate`` scales every bucket by the same factor, which the quantile
    ignores): the rank ``q * observations`` is located in the bucket deltas and interpolated
    linearly inside its bucket, the first bucket starting at 0 (or at its own bound if that is
    not positive). A rank in the +Inf bucket returns the highest finite bound, since nothing
    bounds it from above. Buckets that are not monotonic (scrapes are not atomic) are evened out
    with a running maximum, as PromQL does.

    ``older`` None means since the process started (the cumulative view). None when the window
    saw no observation, when a delta is negative (a counter reset: the two scrapes belong to
    different processes), when the bucket layouts differ, or when a histogram is malformed (no
    finite bucket, no +Inf bucket last, bounds not ascending, values not finite). PromQL answers
    NaN in those cases; None forces the caller to say "not enough data" instead of comparing NaN.

    Raises ValueError for q outside [0, 1]: that is a programming error, not a data problem.
    """
    if not 0.0 <= q <= 1.0:  # also rejects NaN
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    bounds = [le for le, _ in newer.buckets]
    if len(bounds) < 2 or bounds[-1] != math.inf or any(not lo < hi for lo, hi in pairwise(bounds)):
        return None
    counts = [c for _, c in newer.buckets]
    if older is not None:
        if [le for le, _ in older.buckets] != bounds or older.count > newer.count:
            return None
        counts = [c - o for c, (_, o) in zip(counts, older.buckets, strict=True)]
    running = 0.0
    cumulative: list[float] = []
    for count in counts:
        if not math.isfinite(count) or count < 0:
            return None
        running = max(running, count)
        cumulative.append(running)
    observations = cumulative[-1]
    if observations <= 0:
        return None
    rank = q * observations
    b = next(i for i, c in enumerate(cumulative) if c >= rank)
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        # Negative observations are not etcd's; PromQL's rule, kept for fidelity, floored at 0.
        return max(0.0, bounds[0])
    start = 0.0 if b == 0 else bounds[b - 1]
    in_bucket = cumulative[b] - (0.0 if b == 0 else cumulative[b - 1])
    rank -= 0.0 if b == 0 else cumulative[b - 1]
    if in_bucket <= 0:  # q == 0 on an empty first bucket: PromQL's 0/0
        return start
    return start + (bounds[b] - start) * (rank / in_bucket)


class MemberSignals(BaseModel):
    """One member's recent behaviour, as the gates and the quota trigger read it.

    Every value is None when it cannot be computed honestly; ``not_enough_data`` then says why
    when the cause is the history itself (too few samples), so a gate can report "unknown"
    instead of passing or blocking silently. A value is None without a reason when the member
    does not expose the metric family.
    """

    model_config = ConfigDict(frozen=True)

    member_id: int
    samples: int  # samples of this member within the lookback (since its last restart)
    wal_fsync_p99: float | None = None  # seconds
    backend_commit_p99: float | None = None  # seconds
    # Observations behind each p99 in the lookback. 0 means the disk was idle (a quiet cluster
    # may not fsync for minutes): the p99 is None because there is nothing to measure, which a
    # latency gate can treat as open, unlike an unknown (None) count.
    wal_fsyncs: int | None = None
    backend_commits: int | None = None
    leader_changes: int | None = None  # increase of the leader changes counter in the lookback
    request_rate: float | None = None  # unary gRPC requests per second over the lookback
    # What request_rate counts: "grpc" requests, or "mvcc" store operations on etcd 3.6.0-3.6.5
    request_rate_source: str = "grpc"
    db_growth_rate: float | None = None  # bytes/s, least-squares slope of db_size in the lookback
    # Seconds until db_size reaches the quota at that rate; only from a growth measured over
    # MIN_PREDICTION_SPAN (a minute) or the whole lookback, whichever is shorter.
    time_to_quota: float | None = None
    not_enough_data: str | None = None  # why the values are None, e.g. "1 sample ...; need 2"


@dataclass(slots=True)
class _Sample:
    t: float  # epoch seconds of metrics.scraped_at
    metrics: MemberMetrics


@dataclass(slots=True)
class _History:
    samples: deque[_Sample]
    # The newest non-None value of every counter and histogram, and the process start time, to
    # detect a restart even when the previous scrape lacked a family.
    last_known: dict[str, float | Histogram] = field(default_factory=dict)
    reset_reason: str | None = None
    quota: int | None = None
    # Which counter measures this member's traffic: grpc_unary_handled, or mvcc_operations where
    # the member's release under-counts gRPC requests (models.UNDERCOUNTED_GRPC).
    traffic_counter: str = "grpc_unary_handled"


def _restarted(last_known: dict[str, float | Histogram], metrics: MemberMetrics) -> bool:
    """Whether ``metrics`` comes from another process than the samples already kept."""
    start = metrics.process_start_time
    known_start = last_known.get("process_start_time")
    if (
        start is not None
        and isinstance(known_start, float)
        and not abs(start - known_start) <= _START_TIME_TOLERANCE  # NaN counts as a change
    ):
        return True
    for name in _COUNTERS:
        value = getattr(metrics, name)
        known = last_known.get(name)
        if value is not None and isinstance(known, float) and value < known:
            return True
    for name in _HISTOGRAMS:
        hist = getattr(metrics, name)
        known = last_known.get(name)
        if hist is None or not isinstance(known, Histogram):
            continue
        if hist.count < known.count or len(hist.buckets) != len(known.buckets):
            return True
        for (le, count), (known_le, known_count) in zip(hist.buckets, known.buckets, strict=True):
            if le != known_le or count < known_count:
                return True
    return False


def _remember(last_known: dict[str, float | Histogram], metrics: MemberMetrics) -> None:
    if metrics.process_start_time is not None:
        last_known["process_start_time"] = float(metrics.process_start_time)
    for name in _COUNTERS:
        value = getattr(metrics, name)
        if value is not None:
            last_known[name] = float(value)
    for name in _HISTOGRAMS:
        hist = getattr(metrics, name)
        if hist is not None:
            last_known[name] = hist


def _finite_non_negative(value: float | None) -> float | None:
    """The guard every reported figure passes: never NaN, infinite or negative."""
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return value


def _counter_delta(points: list[_Sample], name: str) -> tuple[float, float] | None:
    """(increase, seconds) of a counter between the oldest and newest points that have it."""
    have = [(p.t, getattr(p.metrics, name)) for p in points if getattr(p.metrics, name) is not None]
    if len(have) < 2:
        return None
    (t0, v0), (t1, v1) = have[0], have[-1]
    delta = float(v1) - float(v0)
    if not math.isfinite(delta) or delta < 0 or t1 <= t0:
        return None
    return delta, t1 - t0


def _p99(points: list[_Sample], name: str) -> tuple[float | None, int | None]:
    """(p99, observations) of a histogram between the oldest and newest points that have it."""
    have = [h for p in points if (h := getattr(p.metrics, name)) is not None]
    if len(have) < 2:
        return None, None
    older, newer = have[0], have[-1]
    p99 = _finite_non_negative(histogram_quantile(0.99, older, newer))
    if not newer.buckets or not older.buckets:
        return p99, None
    observed = _finite_non_negative(newer.buckets[-1][1] - older.buckets[-1][1])
    return p99, None if observed is None else round(observed)


def _growth(window: list[_Sample]) -> tuple[float, int, float] | None:
    """(bytes/s, newest db size, seconds spanned) over the window's samples since the last
    shrink of the file.

    etcd's DB file only shrinks when it is defragmented: a defrag inside the window would tilt the
    fit down and hide the growth after it, so the fit starts at the newest shrink. The slope of a
    non-decreasing series is never negative (floored at 0 against rounding).
    """
    points: list[tuple[float, int]] = []
    for sample in window:
        size = sample.metrics.db_size
        if size is None:
            continue
        if points and size < points[-1][1]:
            points = []
        points.append((sample.t, size))
    if len(points) < 2:
        return None
    t0, y0 = points[0]
    xs = [t - t0 for t, _ in points]
    ys = [float(y - y0) for _, y in points]
    mean_x = sum(xs) / len(xs)
    mean_y = sum(ys) / len(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx <= 0:
        return None
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = _finite_non_negative(max(0.0, sxy / sxx))
    if slope is None:
        return None
    return slope, points[-1][1], points[-1][0] - points[0][0]


# The shortest growth a time to quota is predicted from (or the whole lookback, if shorter): a
# burst of writes seen by two samples one interval apart is no trend, and the prediction starts
# an emergency that ignores the windows.
MIN_PREDICTION_SPAN = 60.0


class SignalHistory:
    """A short history of every member's metrics, and the signals derived from it.

    Feed it every snapshot with ``observe``; ask ``signals(now)`` when deciding. Memory is bounded
    by the lookback (older samples are dropped, but for the baseline) and by ``max_samples`` per
    member, which only matters if the agent scrapes far more often than the lookback needs.
    """

    def __init__(self, lookback: float = 300.0, max_samples: int = 1000) -> None:
        if not (math.isfinite(lookback) and lookback > 0):
            raise ValueError(f"lookback must be a positive number of seconds, got {lookback}")
        if max_samples < 2:
            raise ValueError(
                f"max_samples must be at least 2 (a rate needs two), got {max_samples}"
            )
        self.lookback = lookback
        self.max_samples = max_samples
        self._members: dict[int, _History] = {}

    def observe(self, snapshot: ClusterSnapshot) -> None:
        """Record every member's scrape of this snapshot.

        A member without metrics (its scrape failed) keeps the samples it has: one failed scrape
        must not blind the gates for a whole lookback. Members no longer in the member list are
        forgotten. A sample taken at the same time as the newest one replaces it (the same scrape
        seen twice; a rate needs distinct times); one taken earlier than the newest means the
        agent's clock stepped back, and the history restarts from it rather than mixing the two
        timelines into negative durations.
        """
        present = {m.member.id for m in snapshot.members}
        for gone in self._members.keys() - present:
            del self._members[gone]
        for snap in snapshot.members:
            history = self._members.get(snap.member.id)
            if history is None:
                history = _History(samples=deque(maxlen=self.max_samples))
                self._members[snap.member.id] = history
            quota = snap.quota
            if quota:
                history.quota = quota
            if snap.status is not None:
                history.traffic_counter = (
                    "mvcc_operations"
                    if undercounts_grpc(snap.status.version)
                    else "grpc_unary_handled"
                )
            if snap.metrics is not None:
                self._append(history, snap.metrics)
            self._prune(history, snapshot.taken_at.timestamp())

    def _append(self, history: _History, metrics: MemberMetrics) -> None:
        sample = _Sample(t=metrics.scraped_at.timestamp(), metrics=metrics)
        samples = history.samples
        reset: str | None = None
        if samples and sample.t < samples[-1].t:
            reset = _CLOCK_WENT_BACK
        elif _restarted(history.last_known, metrics):
            reset = _RESTARTED
        if reset is not None:
            samples.clear()
            history.last_known.clear()
            history.reset_reason = reset
        elif samples and sample.t == samples[-1].t:
            samples.pop()
        samples.append(sample)
        _remember(history.last_known, metrics)

    def _prune(self, history: _History, now: float) -> None:
        """Drop samples older than the lookback, but for the newest of them (the baseline)."""
        start = now - self.lookback
        samples = history.samples
        while len(samples) >= 2 and samples[1].t < start:
            samples.popleft()

    def signals(self, now: datetime) -> dict[int, MemberSignals]:
        """Every current member's signals over ``[now - lookback, now]`` (plus the baseline)."""
        at = now.timestamp()
        return {
            member_id: self._member_signals(member_id, history, at)
            for member_id, history in self._members.items()
        }

    def cluster_request_rate(self, now: datetime) -> float | None:
        """Unary gRPC requests/s the whole cluster serves: the traffic gate of a window.

        The sum over the members that have a rate (a member with too little history counts for
        nothing rather than voiding the figure); None if no member has one.
        """
        rates = [s.request_rate for s in self.signals(now).values() if s.request_rate is not None]
        return sum(rates) if rates else None

    def _member_signals(self, member_id: int, history: _History, now: float) -> MemberSignals:
        start = now - self.lookback
        window: list[_Sample] = []
        baseline: _Sample | None = None
        for sample in history.samples:
            if sample.t < start:
                baseline = sample
            elif sample.t <= now:
                window.append(sample)
        if baseline is not None and baseline.t < start - self.lookback:
            baseline = None
        if len(window) < 2:
            return MemberSignals(
                member_id=member_id,
                samples=len(window),
                not_enough_data=self._reason(history, window, now),
            )
        points = window if baseline is None else [baseline, *window]
        leader = _counter_delta(points, "leader_changes")
        requests = _counter_delta(points, history.traffic_counter)
        growth = _growth(window)
        wal_fsync_p99, wal_fsyncs = _p99(points, "wal_fsync")
        backend_commit_p99, backend_commits = _p99(points, "backend_commit")
        time_to_quota: float | None = None
        if (
            growth is not None
            and growth[0] > 0
            and history.quota
            and growth[2] >= min(MIN_PREDICTION_SPAN, self.lookback)
        ):
            rate, size, _ = growth
            time_to_quota = _finite_non_negative(max(0, history.quota - size) / rate)
        return MemberSignals(
            member_id=member_id,
            samples=len(window),
            wal_fsync_p99=wal_fsync_p99,
            wal_fsyncs=wal_fsyncs,
            backend_commit_p99=backend_commit_p99,
            backend_commits=backend_commits,
            leader_changes=None if leader is None else round(leader[0]),
            request_rate=None
            if requests is None
            else _finite_non_negative(requests[0] / requests[1]),
            request_rate_source="mvcc" if history.traffic_counter == "mvcc_operations" else "grpc",
            db_growth_rate=None if growth is None else growth[0],
            time_to_quota=time_to_quota,
        )

    def _reason(self, history: _History, window: list[_Sample], now: float) -> str:
        """Why a member has no signals yet, in the words an operator needs."""
        lookback = f"{self.lookback:g} s"
        if not history.samples:
            return "no metrics scraped from this member yet"
        if not window:
            newest = history.samples[-1].t
            if newest > now:
                return f"no sample in the last {lookback}"
            return f"no sample in the last {lookback} (the newest is {now - newest:.0f} s old)"
        if history.reset_reason is not None and window[0] is history.samples[0]:
            return f"1 sample since {history.reset_reason}; need 2"
        return f"1 sample in the last {lookback}; need 2"
