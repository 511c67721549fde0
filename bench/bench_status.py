"""How long one observation of the cluster takes, by cluster size, concurrent vs sequential.

Two baselines measured in the same run: a 1-member cluster (the size scaling), and the same
5-member cluster observed one member after another (what concurrency buys). On loopback the work
is CPU-bound (etcd renders ~150 KB of /metrics per member, all members share this machine's
cores), so the gain here is a floor: across a real network each member adds round trips, which
concurrent observation overlaps. Prints the figures and writes bench/results/status.json.

    .venv/bin/python bench/bench_status.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from etcdagent_testing import EtcdCluster, etcd_binary, etcd_version

from etcdagent.etcd.client import ClusterClient
from etcdagent.observe.gather import take_snapshot
from etcdagent.settings import load_settings


def measure(cluster: EtcdCluster, rounds: int, workers: int) -> float:
    """Median seconds of one snapshot."""
    settings = load_settings({"connection": {"endpoints": cluster.endpoints[0]}})
    with ClusterClient(settings) as client:
        take_snapshot(client, workers=workers)  # warm the connection pools
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            snapshot = take_snapshot(client, workers=workers)
            samples.append(time.perf_counter() - started)
            assert all(m.reachable and m.metrics for m in snapshot.members)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    figures: dict[str, float] = {}
    for size in (1, 3, 5):
        with EtcdCluster(size) as cluster:
            figures[f"{size}_members_concurrent_ms"] = measure(cluster, args.rounds, 16) * 1000
            if size == 5:
                figures["5_members_sequential_ms"] = measure(cluster, args.rounds, 1) * 1000
    base = figures["1_members_concurrent_ms"]
    ratios = {
        "3_members_vs_1": figures["3_members_concurrent_ms"] / base,
        "5_members_vs_1": figures["5_members_concurrent_ms"] / base,
        "5_members_concurrent_vs_sequential": figures["5_members_concurrent_ms"]
        / figures["5_members_sequential_ms"],
    }
    print(f"snapshot (status + /metrics of every member), median of {args.rounds} rounds")
    for name, value in figures.items():
        print(f"  {name:32} {value:7.1f}")
    for name, value in ratios.items():
        print(f"  ratio {name:26} {value:7.2f}")
    out = Path(__file__).with_name("results") / "status.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": len(os.sched_getaffinity(0)),
                "etcd": etcd_version(etcd_binary()),
                "rounds": args.rounds,
                "figures_ms": figures,
                "ratios": ratios,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
