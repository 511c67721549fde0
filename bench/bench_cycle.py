"""CPU the agent spends per member per monitoring cycle, against a full parse of /metrics.

One monitoring cycle, per member: parse its status answer and its /metrics page (only the
families the agent needs reach prometheus_client's parser), build the snapshot, feed it to the
signal history and derive the signals over the lookback, then assess the cluster's health. The
baseline, measured in the same run on the same pages, is what a naive agent would pay for the
page alone: prometheus_client's full ``text_string_to_metric_families`` parse. The project's
target is under 10 ms CPU per member per cycle.

The pages are the real captured ones (tests/unit/data), their counters and histograms grown
every cycle so that the signals have real deltas to compute; 20 cycles fill the 5-minute
lookback at the 15 s interval before the 20 measured ones. No etcd is needed. CPU is
``time.process_time()``; prints the figures and writes bench/results/cycle.json.

    .venv/bin/python bench/bench_cycle.py [--cycles 20] [--rounds 30]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from importlib.metadata import version
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from etcdagent.etcd.metrics_text import parse_member_metrics
from etcdagent.models import Member, MemberStatus
from etcdagent.observe.health import assess
from etcdagent.observe.signals import SignalHistory
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot

DATA = Path(__file__).parent.parent / "tests" / "unit" / "data"
VERSIONS = ("3.5.1", "3.4.23")
START = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
INTERVAL = 15.0  # the daemon's default cycle
LOOKBACK = 300.0
# Lines whose value grows every cycle: the latency histograms, the traffic and leader-change
# counters, and the DB size (a cluster under write load).
_GROWING = re.compile(
    r"^((?:etcd_disk_wal_fsync_duration_seconds|etcd_disk_backend_commit_duration_seconds)"
    r"_(?:bucket|count|sum)|grpc_server_handled_total|etcd_server_leader_changes_seen_total"
    r"|etcd_mvcc_db_total_size_in_bytes)(\{[^}]*\})? (\S+)$",
    re.MULTILINE,
)


def page(version_: str) -> str:
    with gzip.open(DATA / f"metrics-{version_}.txt.gz", "rt") as f:
        return f.read()


def grown(text: str, cycle: int) -> str:
    """The page as it would read ``cycle`` intervals later: growing values times (1 + cycle)."""
    return _GROWING.sub(
        lambda m: f"{m.group(1)}{m.group(2) or ''} {float(m.group(3)) * (1 + cycle):g}", text
    )


def full_parse(text: str) -> list[Metric]:
    """The baseline: every family of the page, as a naive agent would parse it."""
    return list(text_string_to_metric_families(text))


def cpu_ms(work: Callable[[], object], rounds: int) -> float:
    """Median CPU milliseconds of one call."""
    work()  # warm caches (regexes, imports)
    samples = []
    for _ in range(rounds):
        started = time.process_time()
        work()
        samples.append(time.process_time() - started)
    return statistics.median(samples) * 1000


def status_payload(member_id: int) -> dict[str, object]:
    """A status answer as the gateway sends it (3.5.1), ints as strings."""
    return {
        "header": {"cluster_id": "1", "member_id": str(member_id), "revision": "5000"},
        "version": "3.5.1",
        "dbSize": "419430400",
        "dbSizeInUse": "104857600",
        "leader": "1",
        "raftIndex": "700",
        "raftTerm": "2",
        "raftAppliedIndex": "700",
    }


def cycles(text: str, size: int, warmup: int, measured: int) -> tuple[float, float]:
    """Median CPU ms per member of (a whole cycle, the signals part alone) over ``measured``."""
    members = [
        Member(id=i + 1, name=f"m{i + 1}", client_urls=(f"http://m{i + 1}:2379",))
        for i in range(size)
    ]
    pages = [grown(text, k) for k in range(warmup + measured)]
    history = SignalHistory(lookback=LOOKBACK)
    whole: list[float] = []
    signals_part: list[float] = []
    for k, body in enumerate(pages):
        now = START + timedelta(seconds=k * INTERVAL)
        started = time.process_time()
        snaps = tuple(
            MemberSnapshot(
                member=m,
                endpoint=m.client_urls[0],
                status=MemberStatus.from_gateway(status_payload(m.id)),
                metrics=parse_member_metrics(body, scraped_at=now, endpoint=m.client_urls[0]),
            )
            for m in members
        )
        snapshot = ClusterSnapshot(
            taken_at=now, cluster_id=1, discovered_via="http://m1:2379", members=snaps
        )
        parsed = time.process_time()
        history.observe(snapshot)
        signals = history.signals(now)
        history.cluster_request_rate(now)
        assess(snapshot)
        ended = time.process_time()
        if k >= warmup:
            whole.append((ended - started) * 1000 / size)
            signals_part.append((ended - parsed) * 1000 / size)
            assert all(s.not_enough_data is None for s in signals.values()), signals
            assert all(s.wal_fsync_p99 is not None for s in signals.values()), signals
            assert all(s.request_rate for s in signals.values()), signals
    return statistics.median(whole), statistics.median(signals_part)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    warmup = int(LOOKBACK / INTERVAL)
    figures: dict[str, float] = {}
    for v in VERSIONS:
        text = page(v)
        figures[f"full_parse_{v}_ms"] = cpu_ms(partial(full_parse, text), args.rounds)
        figures[f"agent_parse_{v}_ms"] = cpu_ms(
            partial(parse_member_metrics, text, scraped_at=START), args.rounds
        )
    text = page(VERSIONS[0])
    for size in (1, 3, 5):
        whole, signals_part = cycles(text, size, warmup, args.cycles)
        figures[f"cycle_{size}_members_per_member_ms"] = whole
        figures[f"signals_{size}_members_per_member_ms"] = signals_part
    base = figures[f"full_parse_{VERSIONS[0]}_ms"]
    ratios = {
        name.removesuffix("_ms") + "_vs_full_parse": value / base
        for name, value in figures.items()
        if not name.startswith(f"full_parse_{VERSIONS[0]}")
    }
    print(
        f"CPU per member per cycle (ms), medians; cycles measured: {args.cycles} after "
        f"{warmup} filling the {LOOKBACK:g} s lookback; parses: median of {args.rounds}"
    )
    for name, value in figures.items():
        ratio = value / base
        print(f"  {name:40} {value:8.3f}   x{ratio:6.3f} of the full {VERSIONS[0]} parse")
    worst = max(v for k, v in figures.items() if k.startswith("cycle_"))
    print(f"  target < 10 ms per member per cycle: {'met' if worst < 10 else 'MISSED'}")
    out = Path(__file__).with_name("results") / "cycle.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": len(os.sched_getaffinity(0)),
                "python": platform.python_version(),
                "prometheus_client": version("prometheus_client"),
                "pages": [f"tests/unit/data/metrics-{v}.txt.gz" for v in VERSIONS],
                "cycles": args.cycles,
                "warmup_cycles": warmup,
                "rounds": args.rounds,
                "figures_ms": figures,
                "ratios": ratios,
                "target_ms": 10.0,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
