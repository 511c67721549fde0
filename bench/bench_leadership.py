"""Lease keep-alives during the leader's defragmentation, with and without ``--move-leader``.

Leases live on the leader: its lessor renews them and revokes the expired ones. While the leader
defragments, it holds its backend for the whole defrag; this benchmark measures what that costs
clients that keep leases alive (Kubernetes' leader elections, etcd locks), on a real 3-member
cluster whose database is big and fragmented enough for the leader's defrag to take a while:

* ``baseline``        - no maintenance, the same keep-alive loop for the same time;
* ``no_move_leader``  - ``etcdagent defrag --force --no-compact --no-move-leader``: the leader is
  defragmented last, as the leader;
* ``move_leader``     - the same with ``--move-leader``: leadership moves to a defragmented
  follower first, so the old leader is a follower during its own defrag.

Each scenario grants ``--leases`` fresh leases with a short TTL (default 2 s) and keeps them alive
from ``--threads`` threads, each sending ``/v3/lease/keepalive`` for each of its leases every
TTL/3 to the endpoint of the member that was the leader when the scenario started (a client
pinned to it; ``--target all`` spreads them round-robin over every member instead). Recorded:
every keep-alive's latency, the answers without a TTL (the lease was already gone), and at the
end each lease's ``/v3/lease/timetolive`` (TTL -1: expired). The same fragmentation is made
before each scenario (overwritten garbage, compacted). Ratios are against the baseline measured
in the same run. Prints a table and writes bench/results/leadership.json.

    .venv/bin/python bench/bench_leadership.py [--leases 50] [--ttl 2] [--target leader|all]

``ETCDAGENT_TEST_ETCD`` selects the etcd version (default 3.5.1). bench/README.md has the latest
figures.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from bench_defrag_impact import fragment
from etcdagent_testing import EtcdCluster, etcd_binary, etcd_version
from etcdagent_testing.etcdlog import defrag_intervals
from loadgen import percentile

SCENARIOS = ("baseline", "no_move_leader", "move_leader")
VENV_BIN = Path(sys.executable).parent
RESULTS = Path(__file__).with_name("results") / "leadership.json"


@dataclass(slots=True)
class KeepAlive:
    start: float
    latency: float
    alive: bool  # the answer carried a TTL > 0
    error: str | None = None


@dataclass(slots=True)
class ScenarioResult:
    name: str
    leader_before: str
    leader_after: str
    maintenance_s: float | None
    maintenance_exit: int | None
    leader_defrag_s: float | None
    defrag_order: list[str]
    keepalives: list[KeepAlive] = field(default_factory=list)
    expired_at_end: int = 0
    leases: int = 0

    @property
    def latencies_ms(self) -> list[float]:
        return [k.latency * 1000 for k in self.keepalives if k.error is None]

    @property
    def lost_answers(self) -> int:
        return sum(1 for k in self.keepalives if k.error is None and not k.alive)

    @property
    def errors(self) -> int:
        return sum(1 for k in self.keepalives if k.error is not None)

    def figures(self) -> dict[str, float | int | None]:
        lat = self.latencies_ms
        return {
            "keepalives": len(self.keepalives),
            "p50_ms": percentile(lat, 50) if lat else None,
            "p99_ms": percentile(lat, 99) if lat else None,
            "max_ms": max(lat) if lat else None,
            "over_ttl_third": sum(1 for v in lat if v > 1000 * TTL_THIRD[0]),
            "answers_without_ttl": self.lost_answers,
            "errors": self.errors,
            "leases_expired_at_end": self.expired_at_end,
        }


TTL_THIRD = [2.0 / 3]  # set from --ttl


def _post(
    session: requests.Session, url: str, path: str, body: dict[str, Any], timeout: float = 10
) -> dict[str, Any]:
    resp = session.post(f"{url}/v3/{path}", json=body, timeout=timeout)
    resp.raise_for_status()
    answer: Any = resp.json()
    if isinstance(answer, dict) and isinstance(answer.get("result"), dict):
        answer = answer["result"]  # a streaming RPC's one message
    return answer if isinstance(answer, dict) else {}


def grant(url: str, count: int, ttl: int) -> list[str]:
    with requests.Session() as session:
        return [str(_post(session, url, "lease/grant", {"TTL": ttl})["ID"]) for _ in range(count)]


def expired(url: str, leases: Sequence[str]) -> int:
    with requests.Session() as session:
        return sum(
            1
            for lease in leases
            if int(_post(session, url, "lease/timetolive", {"ID": lease}).get("TTL", -1)) <= 0
        )


def revoke(url: str, leases: Sequence[str]) -> None:
    with requests.Session() as session:
        for lease in leases:
            with contextlib.suppress(requests.RequestException):  # already expired
                _post(session, url, "lease/revoke", {"ID": lease})


class KeepAliveLoop:
    """Threads that keep their share of the leases alive every TTL/3, recording each call."""

    def __init__(self, urls: Sequence[str], leases: Sequence[str], threads: int, every: float):
        self.urls = list(urls)
        self.leases = list(leases)
        self.every = every
        self.stop_event = threading.Event()
        self.records: list[KeepAlive] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(self.leases[i::threads], i), daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> KeepAliveLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, leases: list[str], index: int) -> None:
        targets = itertools.cycle(self.urls[index % len(self.urls) :] + self.urls)
        sessions = {url: requests.Session() for url in self.urls}
        next_round = time.monotonic()
        while not self.stop_event.is_set():
            for lease in leases:
                url = next(targets) if len(self.urls) > 1 else self.urls[0]
                started = time.monotonic()
                try:
                    answer = _post(sessions[url], url, "lease/keepalive", {"ID": lease})
                    record = KeepAlive(
                        started, time.monotonic() - started, int(answer.get("TTL", 0)) > 0
                    )
                except (requests.RequestException, ValueError) as exc:
                    record = KeepAlive(
                        started, time.monotonic() - started, False, type(exc).__name__
                    )
                with self._lock:
                    self.records.append(record)
            next_round += self.every
            self.stop_event.wait(max(0.0, next_round - time.monotonic()))
        for session in sessions.values():
            session.close()


def run_defrag(cluster: EtcdCluster, move_leader: bool) -> tuple[int, float, str]:
    argv = [
        str(VENV_BIN / "etcdagent"),
        "defrag",
        "--endpoints", cluster.members[0].client_url,
        "--force",
        "--no-compact",
        "--move-leader" if move_leader else "--no-move-leader",
        "--wait-between", "1s",
        "--output", "json",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDAGENT_", "ETCDCTL_"))}
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    return proc.returncode, time.monotonic() - started, proc.stderr[-2000:]


def run_scenario(cluster: EtcdCluster, name: str, args: argparse.Namespace) -> ScenarioResult:
    print(f"- {name}: fragmenting ...", flush=True)
    fragment(cluster, args.garbage_keys, args.garbage_value_kb * 1024, args.rounds)
    leader = cluster.leader()
    urls = cluster.endpoints if args.target == "all" else [leader.client_url]
    leases = grant(leader.client_url, args.leases, args.ttl)
    seen = len(defrag_intervals(cluster))
    result = ScenarioResult(name, leader.name, "", None, None, None, [], leases=len(leases))
    with KeepAliveLoop(urls, leases, args.threads, args.ttl / 3) as loop:
        time.sleep(args.lead_in)
        if name == "baseline":
            time.sleep(args.baseline_duration)
        else:
            code, took, err = run_defrag(cluster, move_leader=name == "move_leader")
            result.maintenance_exit, result.maintenance_s = code, took
            if code != 0:
                print(f"  etcdagent defrag exited {code}: {err}")
        time.sleep(args.tail)
    result.keepalives = loop.records
    result.leader_after = cluster.leader().name
    result.expired_at_end = expired(cluster.leader().client_url, leases)
    revoke(cluster.leader().client_url, leases)
    intervals = defrag_intervals(cluster)[seen:]
    result.defrag_order = [i.member for i in intervals]
    for interval in intervals:
        if interval.member == leader.name and interval.end is not None:
            result.leader_defrag_s = (interval.end - interval.start).total_seconds()
    return result


def _ratio(a: float | int | None, b: float | int | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b)


def print_table(results: Sequence[ScenarioResult]) -> dict[str, dict[str, float | None]]:
    base = results[0].figures()
    ratios: dict[str, dict[str, float | None]] = {}
    print(
        f"\n{'scenario':16} {'leader':>9} {'defrag s':>8} {'ldr s':>6} {'n':>5} "
        f"{'p50 ms':>7} {'p99 ms':>8} {'max ms':>8} {'>T/3':>5} {'noTTL':>5} {'err':>4} "
        f"{'expired':>7}"
    )
    for res in results:
        fig = res.figures()
        moved = f"{res.leader_before}>{res.leader_after}"
        print(
            f"{res.name:16} {moved:>9} {res.maintenance_s or 0:8.2f} "
            f"{res.leader_defrag_s or 0:6.2f} {fig['keepalives']:>5} {fig['p50_ms'] or 0:7.1f} "
            f"{fig['p99_ms'] or 0:8.1f} {fig['max_ms'] or 0:8.1f} {fig['over_ttl_third']:>5} "
            f"{fig['answers_without_ttl']:>5} {fig['errors']:>4} "
            f"{fig['leases_expired_at_end']:>4}/{res.leases}"
        )
        ratios[res.name] = {
            "p99_vs_baseline": _ratio(fig["p99_ms"], base["p99_ms"]),
            "max_vs_baseline": _ratio(fig["max_ms"], base["max_ms"]),
        }
    for name, values in ratios.items():
        text = ", ".join(f"{k} {v:.2f}" for k, v in values.items() if v is not None)
        print(f"  ratio {name:16} {text}")
    return ratios


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--leases", type=int, default=50)
    parser.add_argument("--ttl", type=int, default=2, help="lease TTL, seconds")
    parser.add_argument("--threads", type=int, default=5)
    parser.add_argument("--target", choices=["leader", "all"], default="leader")
    parser.add_argument("--lead-in", type=float, default=2.0)
    parser.add_argument("--tail", type=float, default=4.0, help="keep-alives after maintenance")
    parser.add_argument("--baseline-duration", type=float, default=8.0)
    parser.add_argument("--garbage-keys", type=int, default=700)
    parser.add_argument("--garbage-value-kb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if set(args.scenario_list) - set(SCENARIOS) or args.scenario_list[:1] != ["baseline"]:
        parser.error(f"scenarios: baseline first, then any of {', '.join(SCENARIOS[1:])}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    TTL_THIRD[0] = args.ttl / 3
    version = etcd_version(etcd_binary())
    print(
        f"etcd {version}, 3 members, {args.leases} leases TTL {args.ttl}s, keep-alive every "
        f"{args.ttl / 3:.2f}s to {args.target}"
    )
    results: list[ScenarioResult] = []
    with EtcdCluster(3) as cluster:
        for name in args.scenario_list:
            results.append(run_scenario(cluster, name, args))
    ratios = print_table(results)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": len(os.sched_getaffinity(0)),
                "etcd": version,
                "leases": args.leases,
                "ttl_s": args.ttl,
                "target": args.target,
                "garbage": {
                    "keys": args.garbage_keys,
                    "value_kb": args.garbage_value_kb,
                    "rounds": args.rounds,
                },
                "scenarios": {
                    r.name: {
                        "leader_before": r.leader_before,
                        "leader_after": r.leader_after,
                        "maintenance_s": r.maintenance_s,
                        "maintenance_exit": r.maintenance_exit,
                        "leader_defrag_s": r.leader_defrag_s,
                        "defrag_order": r.defrag_order,
                        **r.figures(),
                    }
                    for r in results
                },
                "ratios": ratios,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
