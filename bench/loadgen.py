"""A steady put/get load on every member of an etcd cluster, and what it saw.

Used by ``bench_defrag_impact.py`` to measure what maintenance does to clients. Each member gets
a few threads; each thread talks only to that member's client URL through the gRPC-JSON gateway
(``/v3/kv/put``, ``/v3/kv/range``) with its own ``requests.Session``, alternating a put and a
get of its own key at a fixed rate. A member that blocks (a defragment holds all of its requests)
therefore shows up as a gap in that member's completions, and a cluster-wide stall as a gap in
everybody's. The schedule does not catch up after a blocked request (no burst that would hide or
inflate the next gap), and every thread is bounded both in time and in request count.

Every request is recorded: member, op, start, end (``time.monotonic``), ok or the error.
"""

from __future__ import annotations

import base64
import csv
import itertools
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import requests

__all__ = [
    "SLOW",
    "LoadGenerator",
    "LoadSummary",
    "RequestRecord",
    "longest_gap",
    "percentile",
    "summarize",
    "write_csv",
]

SLOW = 0.1  # seconds: a request this slow was blocked, not merely queued behind others
_VALUE = base64.b64encode(b"v" * 64).decode("ascii")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request of the load: which member, what, when (monotonic seconds), how it ended."""

    member: str
    op: str  # "put" or "get"
    start: float
    end: float
    ok: bool
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.end - self.start


def write_csv(records: Iterable[RequestRecord], path: Path, origin: float, scenario: str) -> None:
    """Append records as CSV rows (times in seconds after ``origin``), header on a new file."""
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["scenario", "member", "op", "start", "end", "ok", "error"])
        for rec in records:
            writer.writerow(
                [
                    scenario,
                    rec.member,
                    rec.op,
                    f"{rec.start - origin:.6f}",
                    f"{rec.end - origin:.6f}",
                    int(rec.ok),
                    rec.error or "",
                ]
            )


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _gaps(times: Iterable[float], start: float, stop: float) -> list[tuple[float, float]]:
    """(length, beginning) of every interval between events within ``[start, stop]``."""
    points = sorted(t for t in times if start <= t <= stop)
    return [(b - a, a) for a, b in itertools.pairwise([start, *points, stop])]


def longest_gap(times: Iterable[float], start: float, stop: float) -> float:
    """Longest interval within ``[start, stop]`` that contains none of ``times``.

    The window edges count as events: a member that never answers after ``start`` has a gap of
    the whole window, and one that stops answering before ``stop`` is not let off.
    """
    return max(_gaps(times, start, stop))[0]


@dataclass(slots=True)
class LoadSummary:
    """What the clients saw during one window (all durations in seconds)."""

    window: float
    requests: int
    ok: int
    errors: int
    error_samples: list[str]
    achieved_rate: float  # completed ok requests per second
    cluster_stall: float  # longest gap with no ok completion on any member
    cluster_stall_at: float  # when that gap began, relative to the window start
    member_stall: dict[str, float]  # longest gap between ok completions, per member
    p50: float
    p99: float
    max_latency: float
    slow: int  # ok requests that took at least SLOW seconds (blocked ones: p99 can hide them)
    per_member_requests: dict[str, int] = field(default_factory=dict)


def summarize(
    records: Sequence[RequestRecord], members: Sequence[str], start: float, stop: float
) -> LoadSummary:
    """Stalls and latencies of the requests that ended within ``[start, stop]``."""
    inside = [r for r in records if start <= r.end <= stop]
    ok = [r for r in inside if r.ok]
    ends = [r.end for r in ok]
    latencies = [r.latency for r in ok]
    errors = [r for r in inside if not r.ok]
    samples: list[str] = []
    for rec in errors:
        text = f"{rec.member} {rec.op}: {rec.error}"
        if text not in samples and len(samples) < 5:
            samples.append(text)
    window = stop - start
    return LoadSummary(
        window=window,
        requests=len(inside),
        ok=len(ok),
        errors=len(errors),
        error_samples=samples,
        achieved_rate=len(ok) / window if window > 0 else math.nan,
        cluster_stall=longest_gap(ends, start, stop),
        cluster_stall_at=max(_gaps(ends, start, stop))[1] - start,
        member_stall={
            name: longest_gap((r.end for r in ok if r.member == name), start, stop)
            for name in members
        },
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        max_latency=max(latencies, default=math.nan),
        slow=sum(lat >= SLOW for lat in latencies),
        per_member_requests={name: sum(r.member == name for r in inside) for name in members},
    )


class LoadGenerator:
    """``threads_per_member`` threads per member, each at ``rate`` requests per second.

    Use as a context manager: the threads start on entry and are stopped and joined on exit
    (also on Ctrl-C). :meth:`stop` returns every record. A thread stops at the stop signal, after
    ``max_seconds``, or after ``max_seconds * rate`` requests, whichever comes first.
    """

    def __init__(
        self,
        targets: Mapping[str, str],
        *,
        threads_per_member: int = 3,
        rate: float = 40.0,
        request_timeout: float = 30.0,
        max_seconds: float = 120.0,
    ) -> None:
        if threads_per_member < 1 or rate <= 0 or max_seconds <= 0:
            raise ValueError("threads_per_member, rate and max_seconds must be positive")
        self.targets = dict(targets)
        self.threads_per_member = threads_per_member
        self.rate = rate
        self.request_timeout = request_timeout
        self.max_seconds = max_seconds
        self.started_at = math.nan
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._results: list[list[RequestRecord]] = []

    @property
    def thread_count(self) -> int:
        return len(self.targets) * self.threads_per_member

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On an error or Ctrl-C, do not wait out a long request timeout: the threads are daemons.
        self.stop(join_timeout=None if exc is None else 2.0)

    def start(self) -> None:
        """Start every thread; their schedules are spread evenly over one period."""
        if self._threads:
            raise RuntimeError("load already started")
        self.started_at = time.monotonic()
        total = self.thread_count
        index = 0
        for name, url in self.targets.items():
            for slot in range(self.threads_per_member):
                out: list[RequestRecord] = []
                self._results.append(out)
                phase = index / total / self.rate
                thread = threading.Thread(
                    target=self._run,
                    args=(name, url, slot, phase, out),
                    name=f"load-{name}-{slot}",
                    daemon=True,  # never keeps the process alive after Ctrl-C
                )
                self._threads.append(thread)
                index += 1
        for thread in self._threads:
            thread.start()

    def stop(self, join_timeout: float | None = None) -> list[RequestRecord]:
        """Signal every thread, wait for in-flight requests (bounded), return all records."""
        self._stop.set()
        limit = self.request_timeout + 5 if join_timeout is None else join_timeout
        deadline = time.monotonic() + limit
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        records = [rec for out in self._results for rec in list(out)]
        records.sort(key=lambda r: r.start)
        return records

    def _run(
        self, member: str, url: str, slot: int, phase: float, out: list[RequestRecord]
    ) -> None:
        interval = 1.0 / self.rate
        max_requests = max(1, math.ceil(self.max_seconds * self.rate))
        deadline = self.started_at + self.max_seconds
        key = base64.b64encode(f"/bench/load/{member}/{slot}".encode()).decode("ascii")
        put_body = {"key": key, "value": _VALUE}
        get_body = {"key": key}
        next_at = self.started_at + phase
        with requests.Session() as session:
            session.trust_env = False  # loopback only: no proxies, no netrc
            for i in range(max_requests):
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                if self._stop.is_set() or time.monotonic() >= deadline:
                    return
                op, path, body = (
                    ("put", "kv/put", put_body) if (i + slot) % 2 == 0 else
                    ("get", "kv/range", get_body)
                )  # fmt: skip
                started = time.monotonic()
                error: str | None = None
                try:
                    resp = session.post(f"{url}/v3/{path}", json=body, timeout=self.request_timeout)
                    if resp.status_code != 200:
                        error = f"HTTP {resp.status_code}: {resp.text.strip()[:120]}"
                except requests.RequestException as exc:
                    error = f"{type(exc).__name__}: {str(exc)[:120]}"
                ended = time.monotonic()
                out.append(RequestRecord(member, op, started, ended, error is None, error))
                # Keep the cadence, but never burst to catch up after a blocked request.
                next_at = max(next_at + interval, ended)
