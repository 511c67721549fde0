"""What defragmenting a 3-member cluster costs its clients, by maintenance policy.

A member being defragmented blocks all of its own requests, reads included, for the whole
defrag. Defragmenting one member at a time (followers first, the leader last) should therefore
cost the cluster almost nothing as a whole, while defragmenting every member at once stalls
everybody. This benchmark measures that claim on a real cluster instead of assuming it, under the
same steady put/get load on every member (``loadgen.py``), in four scenarios run one after the
other on the same cluster:

* ``baseline``  - no maintenance: the noise floor of this machine and load;
* ``etcdagent`` - ``etcdagent defrag --force --no-compact --wait-between 1s`` as a subprocess
  (until that command exists, an in-bench emulation of its policy, announced loudly);
* ``etcdctl``   - ``etcdctl defrag --cluster`` (every member in member-list order, leader-blind);
* ``parallel``  - every member defragmented at the same moment.

Before each scenario the same fragmentation is created (overwritten garbage, compacted to the
current revision) so every defrag has real work. Reported per scenario: the longest cluster-wide
stall (no request completed on any member), the longest stall of each member, p50/p99 latency,
requests and errors, the maintenance wall time, and, from etcd's own "starting/finished
defragment" log lines, the defrag order and the most defrags that ran at once. Ratios are
against the ``etcdagent`` scenario and the baseline measured in the same run. Prints a table and
writes bench/results/defrag_impact.json.

    .venv/bin/python bench/bench_defrag_impact.py [--scenarios baseline,etcdagent,etcdctl,parallel]

``ETCDAGENT_TEST_ETCD`` selects the etcd version (default 3.5.1). About 100-110 s here, with a
peak of ~2.7 GB of temporary disk (mostly WAL: a run this short never reaches etcd's default
snapshot count, so no WAL file is purged). bench/README.md has the latest figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from etcdagent_testing import EtcdCluster, EtcdMember, etcd_binary, etcd_version, etcdctl_binary
from loadgen import SLOW, LoadGenerator, LoadSummary, percentile, summarize, write_csv

SCENARIOS = ("baseline", "etcdagent", "etcdctl", "parallel")
DEFRAG_TIMEOUT = 300.0  # seconds; a defrag is never cancelled by a client timeout anyway
VENV_BIN = Path(sys.executable).parent
RESULTS = Path(__file__).with_name("results") / "defrag_impact.json"


# --------------------------------------------------------------------------------------------
# fragmentation


def _status(session: requests.Session, url: str, timeout: float = 5.0) -> dict[str, Any]:
    resp = session.post(f"{url}/v3/maintenance/status", json={}, timeout=timeout)
    resp.raise_for_status()
    answer: dict[str, Any] = resp.json()
    return answer


def _sizes(cluster: EtcdCluster) -> dict[str, dict[str, int]]:
    """dbSize / dbSizeInUse of every member."""
    out: dict[str, dict[str, int]] = {}
    for member in cluster.members:
        status = member.status()
        out[member.name] = {
            "db_size": int(status.get("dbSize", 0)),
            "db_size_in_use": int(status.get("dbSizeInUse", 0)),
        }
    return out


def fragment(cluster: EtcdCluster, keys: int, value_size: int, rounds: int) -> float:
    """Write ``keys * value_size * rounds`` bytes of overwritten data, compact it all away.

    Compacting to the current revision (fine for a benchmark, not for a cluster with watchers)
    turns every old revision into free pages: the file keeps its size, the defrag has real work.
    A small put makes dbSizeInUse refresh; the other members compact within about a second, so
    put and poll (bounded) until every member reports free space and about the same in-use size.
    Returns the seconds it took.
    """
    started = time.monotonic()
    revision = cluster.write_garbage(keys, value_size, rounds)
    cluster.request(
        cluster.members[0], "kv/compaction", {"revision": str(revision), "physical": True}
    )
    deadline = time.monotonic() + 20
    while True:
        cluster.put("/bench/refresh", str(time.time()))
        sizes = _sizes(cluster)
        in_use = [s["db_size_in_use"] for s in sizes.values()]
        freed = all(s["db_size_in_use"] < 0.9 * s["db_size"] for s in sizes.values())
        if freed and max(in_use) <= 1.1 * min(in_use) + 2**20:  # every member caught up
            break
        if time.monotonic() >= deadline:
            print(f"  warning: free space not visible on every member: {sizes}")
            break
        time.sleep(0.25)
    return time.monotonic() - started


# --------------------------------------------------------------------------------------------
# maintenance policies


@dataclass(slots=True)
class Maintenance:
    """How one maintenance run went (monotonic start/end, the tool's own account)."""

    mode: str
    started: float = math.nan
    finished: float = math.nan
    ok: bool = True
    detail: str = ""
    output: Any = None

    @property
    def wall(self) -> float:
        return self.finished - self.started


def _clean_env(drop_prefixes: Sequence[str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_prefixes))}


def _run_tool(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a maintenance tool to completion; a timeout is a failed run, not a crashed bench.

    subprocess.run kills the child on timeout and on any exception (Ctrl-C included).
    """
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=DEFRAG_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out, err = (
            data.decode(errors="replace") if isinstance(data, bytes) else data or ""
            for data in (exc.stdout, exc.stderr)
        )
        return subprocess.CompletedProcess(argv, -9, out, f"{err}\nkilled after {DEFRAG_TIMEOUT} s")


def _parse_output(text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text[-2000:]


def emulate_etcdagent(endpoint: str, wait_between: float = 1.0) -> tuple[bool, str]:
    """The ``etcdagent defrag`` policy done here over the gateway, for when the CLI is missing.

    Member list from ``endpoint``, followers first then the leader, one at a time: POST
    defragment with a long timeout, wait until the member answers status again, pause
    ``wait_between`` seconds before the next one.
    """
    order: list[str] = []
    with requests.Session() as session:
        session.trust_env = False
        resp = session.post(f"{endpoint}/v3/cluster/member/list", json={}, timeout=10)
        resp.raise_for_status()
        members = [(str(m["ID"]), str(m["clientURLs"][0])) for m in resp.json()["members"]]
        leader = str(_status(session, endpoint).get("leader", ""))
        ordered = [m for m in members if m[0] != leader] + [m for m in members if m[0] == leader]
        for index, (member_id, url) in enumerate(ordered):
            if index:
                time.sleep(wait_between)
            resp = session.post(f"{url}/v3/maintenance/defragment", json={}, timeout=DEFRAG_TIMEOUT)
            if resp.status_code != 200:
                return False, f"defragment {url}: HTTP {resp.status_code} {resp.text.strip()}"
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(requests.RequestException):
                    if _status(session, url, timeout=2).get("leader"):
                        break
                if time.monotonic() >= deadline:
                    return False, f"{url} did not answer status within 60 s after its defrag"
                time.sleep(0.1)
            order.append(member_id + (" (leader)" if member_id == leader else ""))
    return True, "emulated, defragmented " + ", ".join(order)


def run_etcdagent(cluster: EtcdCluster) -> Maintenance:
    """The project's CLI; falls back to :func:`emulate_etcdagent` while the command is missing."""
    argv = [
        str(VENV_BIN / "etcdagent"),
        "defrag",
        "--endpoints", cluster.members[0].client_url,
        "--force",
        "--no-compact",
        "--wait-between", "1s",
        "--output", "json",
    ]  # fmt: skip
    result = Maintenance("subprocess", started=time.monotonic())
    try:
        proc = _run_tool(argv, _clean_env(["ETCDAGENT_", "ETCDCTL_"]))
    except OSError as exc:  # no etcdagent entry point in this venv at all
        proc = subprocess.CompletedProcess(argv, 2, "", f"No such command: {exc}")
    if proc.returncode == 2 and "No such command" in proc.stderr:
        print("  " + "!" * 88)
        print("  !! `etcdagent defrag` is not available yet: using the IN-BENCH EMULATION of its")
        print("  !! policy (followers first, leader last, 1 s between). Rerun once it exists.")
        print("  " + "!" * 88)
        result = Maintenance("emulation", started=time.monotonic())
        try:
            result.ok, result.detail = emulate_etcdagent(cluster.members[0].client_url)
        except requests.RequestException as exc:
            result.ok, result.detail = False, f"emulation failed: {exc}"
        result.finished = time.monotonic()
        return result
    result.finished = time.monotonic()
    result.ok = proc.returncode == 0
    result.detail = f"exit {proc.returncode}"
    if not result.ok:  # its log (stderr) only matters when it failed
        result.detail += f": {proc.stderr.strip()[-1000:]}"
    result.output = _parse_output(proc.stdout)
    return result


def run_etcdctl(cluster: EtcdCluster) -> Maintenance:
    """``etcdctl defrag --cluster``: every member in member-list order, one after the other.

    ``--command-timeout`` is raised from its 5 s default so a slow defrag is not reported as a
    failure (the member would finish it anyway); it changes nothing else.
    """
    ctl = etcdctl_binary(cluster.binary)
    if ctl is None:
        return Maintenance("missing", ok=False, detail=f"no etcdctl next to {cluster.binary}")
    argv = [
        str(ctl),
        f"--endpoints={','.join(cluster.endpoints)}",
        "--command-timeout=300s",
        "defrag",
        "--cluster",
    ]
    env = _clean_env(["ETCDCTL_", "ETCD_"])
    env["ETCDCTL_API"] = "3"
    result = Maintenance("etcdctl", started=time.monotonic())
    proc = _run_tool(argv, env)
    result.finished = time.monotonic()
    result.ok = proc.returncode == 0
    result.detail = f"exit {proc.returncode}"
    result.output = (proc.stdout + proc.stderr).strip()[-2000:]
    return result


def run_parallel(cluster: EtcdCluster) -> Maintenance:
    """Every member defragmented at the same moment: one thread per member, a barrier."""
    barrier = threading.Barrier(len(cluster.members))
    errors: list[str] = []

    def defrag(member: EtcdMember) -> None:
        with requests.Session() as session:
            session.trust_env = False
            try:
                barrier.wait(timeout=10)
                resp = session.post(
                    f"{member.client_url}/v3/maintenance/defragment",
                    json={},
                    timeout=DEFRAG_TIMEOUT,
                )
                if resp.status_code != 200:
                    errors.append(f"{member.name}: HTTP {resp.status_code}")
            except (requests.RequestException, threading.BrokenBarrierError) as exc:
                errors.append(f"{member.name}: {exc}")

    threads = [
        threading.Thread(target=defrag, args=(m,), name=f"defrag-{m.name}", daemon=True)
        for m in cluster.members
    ]
    result = Maintenance("threads", started=time.monotonic())
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + DEFRAG_TIMEOUT + 15
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    result.finished = time.monotonic()
    result.ok = not errors and not any(t.is_alive() for t in threads)
    result.detail = "; ".join(errors) or "all members answered"
    return result


def run_nothing(cluster: EtcdCluster) -> Maintenance:
    now = time.monotonic()
    return Maintenance("none", started=now, finished=now)


POLICIES: dict[str, Callable[[EtcdCluster], Maintenance]] = {
    "baseline": run_nothing,
    "etcdagent": run_etcdagent,
    "etcdctl": run_etcdctl,
    "parallel": run_parallel,
}


# --------------------------------------------------------------------------------------------
# etcd's own account of the defrags


def _ts(value: Any) -> float:
    """A zap log timestamp (ISO string or epoch float) as epoch seconds."""
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value)).timestamp()


@dataclass(slots=True)
class DefragLog:
    """Defrag intervals from etcd's log lines, in seconds after the maintenance began."""

    intervals: list[tuple[str, float, float]] = field(default_factory=list)
    max_concurrent: int = 0
    unfinished: list[str] = field(default_factory=list)

    @property
    def order(self) -> list[str]:
        return [name for name, _, _ in sorted(self.intervals, key=lambda i: i[1])]


def defrag_log(
    members: Sequence[EtcdMember], offsets: dict[str, int], origin_wall: float
) -> DefragLog:
    """Pair each member's "starting defragment" / "finished defragment" lines logged after
    ``offsets`` (line counts taken before the scenario) and sweep for the most at once.

    Log timestamps have millisecond resolution: at an equal timestamp a finish is counted before
    a start, so back-to-back sequential defrags do not count as overlapping.
    """
    out = DefragLog()
    for member in members:
        opened: float | None = None
        for line in member.log_lines()[offsets[member.name] :]:
            msg = line.get("msg")
            if msg == "starting defragment":
                opened = _ts(line.get("ts")) - origin_wall
            elif msg == "finished defragment" and opened is not None:
                out.intervals.append((member.name, opened, _ts(line.get("ts")) - origin_wall))
                opened = None
        if opened is not None:
            out.unfinished.append(member.name)
    events = sorted(
        [(start, 1) for _, start, _ in out.intervals] + [(end, -1) for _, _, end in out.intervals]
    )
    running = 0
    for _, step in events:
        running += step
        out.max_concurrent = max(out.max_concurrent, running)
    out.max_concurrent += len(out.unfinished)
    return out


# --------------------------------------------------------------------------------------------
# one scenario


@dataclass(slots=True)
class ScenarioResult:
    """Everything measured in one scenario (times in seconds, sizes in bytes)."""

    name: str
    leader_before: str
    leader_after: str
    raft_term_change: int
    fragment_seconds: float
    sizes_before: dict[str, dict[str, int]]
    sizes_after: dict[str, dict[str, int]]
    maintenance: Maintenance
    maintenance_offset: float  # when the maintenance began, seconds after the load started
    load: LoadSummary
    p99_during: float  # p99 of the requests started while the maintenance ran (NaN: none)
    p99_outside: float  # p99 of all the others
    defrags: DefragLog


def _raft_term(cluster: EtcdCluster) -> int:
    return max(int(m.status().get("raftTerm", 0)) for m in cluster.members)


def run_scenario(cluster: EtcdCluster, name: str, args: argparse.Namespace) -> ScenarioResult:
    """Fragment, start the load, run the maintenance ``lead_in`` seconds later, keep the load
    ``tail`` seconds after it ends (and at least ``duration`` seconds in all), summarize.
    """
    cluster.wait_healthy(30)
    frag_s = fragment(cluster, args.garbage_keys, args.garbage_value_kb * 1024, args.rounds)
    sizes_before = _sizes(cluster)
    leader_before = cluster.leader().name
    term_before = _raft_term(cluster)
    offsets = {m.name: len(m.log_lines()) for m in cluster.members}
    time.sleep(1.0)  # let the garbage writes' fsyncs and compaction settle
    targets = {m.name: m.client_url for m in cluster.members}
    wall_offset = time.time() - time.monotonic()
    with LoadGenerator(
        targets,
        threads_per_member=args.threads_per_member,
        rate=args.rate,
        request_timeout=DEFRAG_TIMEOUT / 2,
        max_seconds=args.duration + DEFRAG_TIMEOUT,
    ) as load:
        time.sleep(args.lead_in)
        maintenance = POLICIES[name](cluster)
        end_at = max(load.started_at + args.duration, maintenance.finished + args.tail)
        time.sleep(max(0.0, end_at - time.monotonic()))
        stop_at = time.monotonic()
        records = load.stop()
    summary = summarize(records, list(targets), load.started_at, stop_at)
    if args.raw is not None:
        write_csv(records, args.raw, load.started_at, name)
    ok = [r for r in records if r.ok and r.end <= stop_at]
    during = [r.latency for r in ok if maintenance.started <= r.start <= maintenance.finished]
    outside = [r.latency for r in ok if not maintenance.started <= r.start <= maintenance.finished]
    cluster.wait_healthy(30)
    return ScenarioResult(
        name=name,
        leader_before=leader_before,
        leader_after=cluster.leader().name,
        raft_term_change=_raft_term(cluster) - term_before,
        fragment_seconds=frag_s,
        sizes_before=sizes_before,
        sizes_after=_sizes(cluster),
        maintenance=maintenance,
        maintenance_offset=maintenance.started - load.started_at,
        load=summary,
        p99_during=percentile(during, 99),
        p99_outside=percentile(outside, 99),
        defrags=defrag_log(cluster.members, offsets, maintenance.started + wall_offset),
    )


# --------------------------------------------------------------------------------------------
# report


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _ratio(a: float, b: float) -> float | None:
    if math.isnan(a) or math.isnan(b) or b <= 0:
        return None
    return round(a / b, 2)


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def print_table(results: Sequence[ScenarioResult]) -> None:
    header = (
        f"{'scenario':10} {'mode':10} {'wall s':>6} {'stall ms':>8} {'worst member':>14} "
        f"{'p50 ms':>6} {'p99 ms':>7} {'max ms':>7} {'slow':>4} {'requests':>8} {'errors':>6} "
        f"{'max conc':>8}  order"
    )
    print(header)
    print("-" * len(header))
    for res in results:
        worst = max(res.load.member_stall, key=lambda k: res.load.member_stall[k])
        wall = res.maintenance.wall
        leader = res.leader_before
        order = " ".join(n + ("*" if n == leader else "") for n in res.defrags.order) or "-"
        print(
            f"{res.name:10} {res.maintenance.mode:10} "
            f"{'-' if wall == 0 else f'{wall:.2f}':>6} "
            f"{_ms(res.load.cluster_stall):8.1f} "
            f"{f'{_ms(res.load.member_stall[worst]):.1f} {worst}':>14} "
            f"{_ms(res.load.p50):6.1f} {_ms(res.load.p99):7.1f} "
            f"{_ms(res.load.max_latency):7.1f} {res.load.slow:4d} "
            f"{res.load.requests:8d} {res.load.errors:6d} {res.defrags.max_concurrent:8d}  {order}"
        )
    print(
        "  stall: longest time with no request completed on any member / on the worst member;\n"
        f"  slow: requests that took >= {SLOW * 1000:.0f} ms;\n"
        "  max conc: most defrags running at once (etcd's log); order: defrag starts, * = leader"
    )


def ratios(results: Sequence[ScenarioResult]) -> dict[str, dict[str, float | None]]:
    """Each scenario's cluster-wide stall and p99 against ``etcdagent`` and ``baseline``."""
    by_name = {r.name: r for r in results}
    out: dict[str, dict[str, float | None]] = {}
    for res in results:
        row: dict[str, float | None] = {}
        for ref in ("etcdagent", "baseline"):
            base = by_name.get(ref)
            if base is None or base is res:
                continue
            row[f"cluster_stall_vs_{ref}"] = _ratio(res.load.cluster_stall, base.load.cluster_stall)
            row[f"p99_vs_{ref}"] = _ratio(res.load.p99, base.load.p99)
        out[res.name] = row
    return out


def to_json(res: ScenarioResult) -> dict[str, Any]:
    load = res.load
    return {
        "maintenance": {
            "mode": res.maintenance.mode,
            "ok": res.maintenance.ok,
            "wall_s": round(res.maintenance.wall, 3),
            "detail": res.maintenance.detail,
            "output": res.maintenance.output,
        },
        "window_s": round(load.window, 3),
        "maintenance_began_at_s": round(res.maintenance_offset, 3),
        "requests": load.requests,
        "ok": load.ok,
        "errors": load.errors,
        "error_samples": load.error_samples,
        "achieved_rate_per_s": round(load.achieved_rate, 1),
        "cluster_stall_ms": _ms(load.cluster_stall),
        "cluster_stall_began_at_s": round(load.cluster_stall_at, 3),
        "member_stall_ms": {k: _ms(v) for k, v in load.member_stall.items()},
        "worst_member_stall_ms": _ms(max(load.member_stall.values())),
        "p50_ms": _ms(load.p50),
        "p99_ms": _ms(load.p99),
        "p99_during_maintenance_ms": None if math.isnan(res.p99_during) else _ms(res.p99_during),
        "p99_outside_maintenance_ms": _ms(res.p99_outside),
        "max_latency_ms": _ms(load.max_latency),
        f"slow_requests_over_{SLOW * 1000:.0f}ms": load.slow,
        "requests_per_member": load.per_member_requests,
        "defrags_from_etcd_log": {
            "max_concurrent": res.defrags.max_concurrent,
            "order": res.defrags.order,
            "intervals_s": [
                {"member": n, "start": round(a, 3), "end": round(b, 3), "took": round(b - a, 3)}
                for n, a, b in sorted(res.defrags.intervals, key=lambda i: i[1])
            ],
            "unfinished": res.defrags.unfinished,
        },
        "leader_before": res.leader_before,
        "leader_after": res.leader_after,
        "raft_term_change": res.raft_term_change,
        "fragment_s": round(res.fragment_seconds, 2),
        "db_sizes_before": res.sizes_before,
        "db_sizes_after": res.sizes_after,
    }


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--threads-per-member", type=int, default=3)
    parser.add_argument("--rate", type=float, default=40.0, help="requests/s per load thread")
    parser.add_argument("--duration", type=float, default=12.0, help="min load seconds")
    parser.add_argument("--lead-in", type=float, default=2.0, help="load before maintenance")
    parser.add_argument("--tail", type=float, default=2.0, help="load after maintenance")
    parser.add_argument("--garbage-keys", type=int, default=500)
    parser.add_argument("--garbage-value-kb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="times each garbage key is written")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--raw", type=Path, help="also write every request to this CSV file")
    args = parser.parse_args(argv)
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenario_list) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    binary = etcd_binary()
    version = etcd_version(binary)
    garbage_mb = args.garbage_keys * args.garbage_value_kb * args.rounds / 1024
    print(
        f"etcd {version}, 3 members; load {args.threads_per_member} threads/member x "
        f"{args.rate:g} req/s = {3 * args.threads_per_member * args.rate:g} req/s offered; "
        f"{garbage_mb:.0f} MiB of garbage before each scenario"
    )
    results: list[ScenarioResult] = []
    with EtcdCluster(3, binary=binary) as cluster:  # stopped on any exit, Ctrl-C included
        for name in args.scenario_list:
            print(f"scenario {name}: fragmenting, then load + maintenance ...", flush=True)
            res = run_scenario(cluster, name, args)
            results.append(res)
            shrunk = {k: f"{v['db_size'] / 2**20:.0f}" for k, v in res.sizes_after.items()}
            before = {k: f"{v['db_size'] / 2**20:.0f}" for k, v in res.sizes_before.items()}
            status = "ok" if res.maintenance.ok else f"FAILED ({res.maintenance.detail})"
            print(
                f"  {res.maintenance.mode}: {status}; db MiB before {before} after {shrunk}; "
                f"{res.load.achieved_rate:.0f} req/s achieved; raft term +{res.raft_term_change}"
            )
    elapsed = time.monotonic() - started
    print()
    print_table(results)
    rat = ratios(results)
    print()
    for name, row in rat.items():
        if row:
            cells = "  ".join(f"{k} {_fmt_ratio(v)}" for k, v in row.items())
            print(f"  {name:10} {cells}")
    emulated = any(r.maintenance.mode == "emulation" for r in results)
    if emulated:
        print("\n  NOTE: the etcdagent scenario used the in-bench EMULATION, not the real CLI.")
    print(f"\ntotal run {elapsed:.0f} s")
    report = {
        "machine": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "etcd": version,
        "etcdagent_emulated": emulated,
        "params": {
            "members": 3,
            "threads_per_member": args.threads_per_member,
            "rate_per_thread": args.rate,
            "offered_rate_per_s": 3 * args.threads_per_member * args.rate,
            "min_duration_s": args.duration,
            "lead_in_s": args.lead_in,
            "tail_s": args.tail,
            "garbage_keys": args.garbage_keys,
            "garbage_value_kb": args.garbage_value_kb,
            "garbage_rounds": args.rounds,
        },
        "scenarios": {r.name: to_json(r) for r in results},
        "ratios": rat,
        "total_run_s": round(elapsed, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted: cluster stopped, nothing written", file=sys.stderr)
        sys.exit(130)
