"""How close maintenance brings each member's file to the bytes it actually uses.

For every member, ``db_size / db_size_in_use`` (file size over the bytes in use; the physical limit
is 1.0: the file cannot be smaller than its live pages) is taken before and after one
``etcdagent defrag`` (with its compaction) on a real 3-member cluster filled with overwritten
garbage. The baseline is the same ratio before maintenance, measured in the same run. Before
maintenance the in-use figure still counts the uncompacted history (only bbolt's own
copy-on-write leftovers are free pages), so the file shrinking (``file_after_vs_before``) is
reported beside the ratios: a compaction frees the history's pages, the defrag gives them back.

    .venv/bin/python bench/bench_reclaim.py [--garbage-keys 500 --garbage-value-kb 100 --rounds 3]

``ETCDAGENT_TEST_ETCD`` selects the etcd version (default 3.5.1). Prints a table and writes
bench/results/reclaim.json; bench/README.md has the latest figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from etcdagent_testing import EtcdCluster, etcd_binary, etcd_version

VENV_BIN = Path(sys.executable).parent
RESULTS = Path(__file__).with_name("results") / "reclaim.json"

Sizes = dict[str, dict[str, int]]


def sizes(cluster: EtcdCluster) -> Sizes:
    out: Sizes = {}
    for member in cluster.members:
        status = member.status()
        out[member.name] = {
            "db_size": int(status.get("dbSize", 0)),
            "db_size_in_use": int(status.get("dbSizeInUse", 0)),
        }
    return out


def settled_sizes(cluster: EtcdCluster, timeout: float = 10) -> Sizes:
    """Sizes once every member has applied the last write (in-use is refreshed on commit)."""
    cluster.put("/bench/refresh", str(time.time()))
    deadline = time.monotonic() + timeout
    while True:
        statuses = [m.status() for m in cluster.members]
        applied = [int(s.get("raftAppliedIndex", s.get("raftIndex", 0))) for s in statuses]
        if max(applied) == min(applied) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    time.sleep(0.3)  # the backend commits every 100 ms: let the in-use figure follow
    return sizes(cluster)


def ratio(entry: dict[str, int]) -> float:
    return entry["db_size"] / entry["db_size_in_use"] if entry["db_size_in_use"] else float("nan")


def run_defrag(cluster: EtcdCluster, retain_revisions: int) -> tuple[int, float, Any]:
    argv = [
        str(VENV_BIN / "etcdagent"),
        "defrag",
        "--endpoints", cluster.members[0].client_url,
        "--force",
        "--compact",
        "--retain-revisions", str(retain_revisions),
        "--wait-between", "500ms",
        "--output", "json",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDAGENT_", "ETCDCTL_"))}
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    took = time.monotonic() - started
    if proc.returncode != 0:
        print(f"  etcdagent defrag exited {proc.returncode}: {proc.stderr[-2000:]}")
    try:
        report: Any = json.loads(proc.stdout)
    except ValueError:
        report = proc.stdout[-2000:]
    return proc.returncode, took, report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--garbage-keys", type=int, default=500)
    parser.add_argument("--garbage-value-kb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--retain-revisions", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    version = etcd_version(etcd_binary())
    with EtcdCluster(3) as cluster:
        cluster.write_garbage(args.garbage_keys, args.garbage_value_kb * 1024, args.rounds)
        before = settled_sizes(cluster)
        code, took, report = run_defrag(cluster, args.retain_revisions)
        after = settled_sizes(cluster)
        leader = cluster.leader().name
    print(
        f"etcd {version}, 3 members, {args.garbage_keys} keys x {args.garbage_value_kb} KiB "
        f"written {args.rounds} times; `etcdagent defrag` exit {code} in {took:.1f} s"
    )
    print(
        f"\n{'member':8} {'file before':>12} {'in use before':>14} {'ratio before':>12} "
        f"{'file after':>11} {'in use after':>13} {'ratio after':>11} {'vs before':>9} "
        f"{'file shrank to':>14}"
    )
    members: dict[str, dict[str, Any]] = {}
    for name in before:
        b, a = before[name], after[name]
        rb, ra = ratio(b), ratio(a)
        members[name] = {
            "leader": name == leader,
            "before": b,
            "after": a,
            "ratio_before": rb,
            "ratio_after": ra,
            "ratio_after_vs_before": ra / rb,
            "file_after_vs_before": a["db_size"] / b["db_size"],
        }
        print(
            f"{name:8} {b['db_size'] / 2**20:10.1f}Mi {b['db_size_in_use'] / 2**20:12.1f}Mi "
            f"{rb:12.4f} {a['db_size'] / 2**20:9.1f}Mi {a['db_size_in_use'] / 2**20:11.1f}Mi "
            f"{ra:11.4f} {ra / rb:9.3f} {a['db_size'] / b['db_size']:14.3f}"
        )
    worst = max(m["ratio_after"] for m in members.values())
    print(f"  worst ratio after: {worst:.3f} (physical limit 1.000)")
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": len(os.sched_getaffinity(0)),
                "etcd": version,
                "garbage": {
                    "keys": args.garbage_keys,
                    "value_kb": args.garbage_value_kb,
                    "rounds": args.rounds,
                },
                "retain_revisions": args.retain_revisions,
                "defrag_exit": code,
                "defrag_s": took,
                "members": members,
                "worst_ratio_after": worst,
                "report": report,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
