"""How long writes stop per NOSPACE incident, against the physical limit of the recovery.

A writer overwrites 60 KB values on a real 3-member cluster with a 64 MiB quota, so the history
fills the quota again and again (the live data stays ~6 MB, so every recovery can disarm). Each
incident is judged from the writer's own record: the **outage** runs from the start of the first
put refused with NOSPACE to the end of the next put that succeeded. Against it, the **physical
limit** measured in the same run: the sum of the recovery steps' own durations (compact, one
defrag per member, move-leader if any, disarm, probe), from the agent's own record of that
recovery (the daemon's ``nospace recovery timing`` log event, the ``recover`` command's JSON
report). What is left between the two is waiting: for the next cycle, for fixed pauses, for the
agent's observations and locks.

Scenarios, each on a fresh cluster, one after the other:

* ``daemon_before`` - ``etcdagent run --interval 5s`` from the code before fast detection
  (``--before-ref``, default the commit this was built on, unpacked with ``git archive``): NOSPACE
  seen only by the next cycle, ``defrag.wait_between`` (5 s) between members;
* ``daemon``        - the same command from this checkout: the pause between cycles watches the
  alarms (about once a second), and the recovery goes on to the next member once the last one
  answers and has caught up;
* ``daemon_no_move_leader`` - the same with ``--no-move-leader``: etcd drops the proposals it
  receives during a leadership transfer, and a put forwarded by a follower then hangs until
  etcd's request timeout (~6 s with the harness's raft timings), which a single writer sees;
* ``cron_before``, ``cron`` - a CronJob's ``etcdagent recover`` every ``--cron-period`` (60 s),
  simulated here by running it at each tick, before and after.

Prints per scenario the outages, the physical limits and their ratio, and the target
(daemon outage <= 3 s and <= 2x the physical limit + 1 s); writes
bench/results/nospace_outage.json.

    .venv/bin/python bench/bench_nospace_outage.py
        [--scenarios daemon_before,daemon,daemon_no_move_leader,cron_before,cron] [--incidents 5]
        [--cron-incidents 2] [--interval 5s] [--before-ref REF]

``ETCDAGENT_TEST_ETCD`` selects the etcd version (default 3.5.1). About 9 minutes with the
defaults (the cron scenarios wait for their minutes). bench/README.md has the latest figures.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import itertools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from etcdagent_testing import EtcdCluster, etcd_binary, etcd_version
from etcdagent_testing.etcdlog import DefragInterval, defrag_intervals

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results") / "nospace_outage.json"
SCENARIOS = ("daemon_before", "daemon", "daemon_no_move_leader", "cron_before", "cron")
BEFORE_REF = "21f0ffcb0de9944ce8f22b93f25547933f3a42ac"  # the code before fast detection
QUOTA = 64 * 1024**2
AGENT_ENV = {
    # Only the NOSPACE emergency acts: no periodic compaction shortening an incident.
    "ETCDAGENT_DAEMON__COMPACTION_INTERVAL": "0",
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- the writer --------------------------------------------------------------------------------


@dataclass(slots=True)
class Put:
    start: float  # time.monotonic
    end: float
    ok: bool
    nospace: bool
    error: str | None = None


class Writer:
    """One thread overwriting ``keys`` keys with ``value_kb`` KB values at ``rate`` puts/s,
    round-robin over the members; every put recorded. The schedule never bursts to catch up."""

    def __init__(self, cluster: EtcdCluster, *, keys: int, value_kb: int, rate: float) -> None:
        self.urls = [f"{m.client_url}/v3/kv/put" for m in cluster.members]
        self.keys = keys
        self.value = _b64(os.urandom(value_kb * 1000))
        self.period = 1.0 / rate
        self.puts: list[Put] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nospace-writer", daemon=True)
        # For matching the agent's wall-clock records with the writer's monotonic ones.
        self.wall0 = time.time()
        self.mono0 = time.monotonic()

    def wall(self, mono: float) -> float:
        return self.wall0 + (mono - self.mono0)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        session = requests.Session()
        session.trust_env = False
        due = time.monotonic()
        for i in itertools.count():
            if self._stop.is_set():
                break
            key = _b64(f"/bench/nospace/{i % self.keys:04d}".encode())
            start = time.monotonic()
            try:
                resp = session.post(
                    self.urls[i % len(self.urls)],
                    json={"key": key, "value": self.value},
                    timeout=10,
                )
                ok = resp.status_code == 200
                nospace = "database space exceeded" in resp.text
                error = None if ok else resp.text[:200]
            except requests.RequestException as exc:
                ok, nospace, error = False, False, f"{type(exc).__name__}: {exc}"[:200]
            self.puts.append(Put(start, time.monotonic(), ok, nospace, error))
            due = max(due + self.period, time.monotonic())
            self._stop.wait(max(0.0, due - time.monotonic()))
        session.close()


@dataclass(slots=True)
class Incident:
    start: float  # the first NOSPACE put's start (monotonic)
    end: float | None  # the next successful put's end
    failed_puts: int = 0

    @property
    def outage(self) -> float | None:
        return None if self.end is None else self.end - self.start


def incidents(puts: Sequence[Put]) -> list[Incident]:
    """Every run of failed puts that began with NOSPACE, up to the next put that succeeded."""
    found: list[Incident] = []
    current: Incident | None = None
    for put in sorted(puts, key=lambda p: p.start):
        if current is None:
            if put.nospace:
                current = Incident(start=put.start, end=None, failed_puts=1)
            continue
        if put.ok:
            current.end = put.end
            found.append(current)
            current = None
        else:
            current.failed_puts += 1
    if current is not None:
        found.append(current)
    return found


# -- the agents --------------------------------------------------------------------------------


def unpack_before(ref: str, into: Path) -> Path:
    """The ``etcdagent`` package as it was at ``ref`` (read-only: ``git archive``)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "etcdagent"],
        check=True,
        capture_output=True,
    ).stdout
    target = into / "before"
    target.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def agent_env(code: Path) -> dict[str, str]:
    env = {**os.environ, **AGENT_ENV}
    env["PYTHONPATH"] = str(code)
    return env


def agent_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "etcdagent", *args]


def _json_lines(text: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    found.append(entry)
    return found


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass(slots=True)
class Recovery:
    """One recovery as the agent recorded it: when it finished (wall clock), its steps' own
    durations and their sum, its outcome."""

    finished: float
    steps_seconds: float
    outcome: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    run_seconds: float | None = None


@contextlib.contextmanager
def daemon(
    cluster: EtcdCluster, code: Path, log_path: Path, interval: str, *extra: str
) -> Iterator[None]:
    """`etcdagent run` from ``code`` until the block ends (SIGTERM, then kill)."""
    argv = agent_argv(
        "run", "--endpoints", ",".join(cluster.endpoints), "--interval", interval,
        "--listen", "127.0.0.1:0", "--log-format", "json", *extra,
    )  # fmt: skip
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=agent_env(code),
            cwd=code,
            text=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not any(e.get("event") == "decision" for e in _json_lines(log_path.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not decide:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def daemon_recoveries(log_text: str) -> list[Recovery]:
    return [
        Recovery(
            finished=_epoch(e["timestamp"]),
            steps_seconds=float(e["steps_seconds"]),
            outcome=str(e.get("outcome")),
            steps=list(e.get("steps") or []),
            run_seconds=e.get("run_seconds"),
        )
        for e in _json_lines(log_text)
        if e.get("event") == "nospace recovery timing"
    ]


def cron_recover(cluster: EtcdCluster, code: Path, log_dir: Path, n: int) -> Recovery | None:
    """One CronJob run of `etcdagent recover`; its report's steps, if it recovered anything."""
    argv = agent_argv(
        "recover", "--endpoints", ",".join(cluster.endpoints), "--output", "json",
        "--log-format", "json",
    )  # fmt: skip
    done = subprocess.run(
        argv, capture_output=True, text=True, env=agent_env(code), cwd=code, timeout=300
    )
    (log_dir / f"cron-{n}.stderr").write_text(done.stderr)
    (log_dir / f"cron-{n}.stdout").write_text(done.stdout)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        return None
    results = [r for r in report.get("results") or [] if r.get("duration") is not None]
    if not results:
        return None
    steps = [
        {
            "action": r["step"]["kind"],
            "member": r["step"].get("member_name"),
            "status": r["status"],
            "seconds": round(float(r["duration"]), 4),
        }
        for r in results
    ]
    started = _epoch(report["started_at"])
    finished = _epoch(report["finished_at"]) if report.get("finished_at") else time.time()
    return Recovery(
        finished=finished,
        steps_seconds=round(sum(s["seconds"] for s in steps), 4),
        outcome=str(report.get("outcome")),
        steps=steps,
        run_seconds=round(finished - started, 4),
    )


# -- one scenario --------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    name: str
    outages: list[float]
    physical: list[float | None]
    etcd_defrag: list[float]  # etcd's own defrag time per incident (its log lines), summed
    recoveries: list[Recovery]
    failed_puts: list[int]
    puts: int
    other_errors: int
    wall_s: float

    def figures(self) -> dict[str, Any]:
        phys = [p for p in self.physical if p is not None]
        return {
            "incidents": len(self.outages),
            "outage_s": [round(o, 3) for o in self.outages],
            "outage_median_s": _median(self.outages),
            "outage_max_s": _r(max(self.outages)) if self.outages else None,
            "physical_s": [None if p is None else round(p, 3) for p in self.physical],
            "physical_median_s": _median(phys),
            "etcd_defrag_s": [round(d, 3) for d in self.etcd_defrag],
            "outage_over_physical": [
                round(o / p, 2) if p else None
                for o, p in zip(self.outages, self.physical, strict=True)
            ],
            "failed_puts": self.failed_puts,
            "puts": self.puts,
            "other_errors_outside_incidents": self.other_errors,
            "wall_s": round(self.wall_s, 1),
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def run_scenario(
    name: str, args: argparse.Namespace, before: Path | None, work: Path
) -> ScenarioResult:
    code = before if name.endswith("_before") else ROOT
    assert code is not None
    cron = name.startswith("cron")
    wanted = args.cron_incidents if cron else args.incidents
    log_dir = work / name
    log_dir.mkdir()
    print(f"\n== {name}: {wanted} incidents ({code})", flush=True)
    started = time.monotonic()
    recoveries: list[Recovery] = []
    with EtcdCluster(3, quota_backend_bytes=QUOTA) as cluster:
        writer = Writer(cluster, keys=args.keys, value_kb=args.value_kb, rate=args.rate)
        deadline = time.monotonic() + args.timeout
        if cron:
            writer.start()
            tick = 0
            next_tick = time.monotonic() + args.cron_period
            while time.monotonic() < deadline:
                if _done(writer, wanted):
                    break
                time.sleep(max(0.0, next_tick - time.monotonic()))
                tick += 1
                next_tick += args.cron_period
                found = cron_recover(cluster, code, log_dir, tick)
                if found is not None:
                    recoveries.append(found)
                    print(f"  cron {tick}: {found.outcome}, steps {found.steps_seconds:.2f}s")
        else:
            log_path = log_dir / "daemon.log"
            extra = ("--no-move-leader",) if name.endswith("no_move_leader") else ()
            with daemon(cluster, code, log_path, args.interval, *extra):
                writer.start()
                while time.monotonic() < deadline and not _done(writer, wanted):
                    time.sleep(0.5)
            recoveries = daemon_recoveries(log_path.read_text())
        writer.stop()
        defrags = defrag_intervals(cluster)
    found_incidents = [i for i in incidents(writer.puts) if i.outage is not None][:wanted]
    outages = [i.outage for i in found_incidents if i.outage is not None]
    physical = [_physical(i, writer, recoveries) for i in found_incidents]
    etcd_defrag = [_etcd_defrag(i, writer, defrags) for i in found_incidents]
    in_incident = sum(i.failed_puts for i in incidents(writer.puts))
    other = sum(1 for p in writer.puts if not p.ok) - in_incident
    for n, (o, p, d) in enumerate(zip(outages, physical, etcd_defrag, strict=True), 1):
        phys = f"{p:.2f}s" if p is not None else "-"
        print(f"  incident {n}: outage {o:.2f}s, physical limit {phys}, etcd's defrags {d:.2f}s")
    return ScenarioResult(
        name=name,
        outages=outages,
        physical=physical,
        etcd_defrag=etcd_defrag,
        recoveries=recoveries,
        failed_puts=[i.failed_puts for i in found_incidents],
        puts=len(writer.puts),
        other_errors=max(0, other),
        wall_s=time.monotonic() - started,
    )


def _done(writer: Writer, wanted: int) -> bool:
    return sum(1 for i in incidents(list(writer.puts)) if i.end is not None) >= wanted


def _physical(incident: Incident, writer: Writer, recoveries: Sequence[Recovery]) -> float | None:
    """The steps' sum of the recovery that ended this incident: the done one that finished
    during it (or within a second after writes came back, for its own last records)."""
    assert incident.end is not None
    start, end = writer.wall(incident.start), writer.wall(incident.end)
    fitting = [r for r in recoveries if r.outcome == "done" and start <= r.finished <= end + 1.0]
    if not fitting:
        return None
    return min(fitting, key=lambda r: abs(r.finished - end)).steps_seconds


def _etcd_defrag(incident: Incident, writer: Writer, defrags: Sequence[DefragInterval]) -> float:
    """Seconds etcd itself spent defragmenting during the incident, by its own log lines."""
    assert incident.end is not None
    start, end = writer.wall(incident.start), writer.wall(incident.end)
    return sum(
        (d.end - d.start).total_seconds()
        for d in defrags
        if d.end is not None and start <= d.start.timestamp() <= end
    )


# -- reporting -----------------------------------------------------------------------------------


def print_table(results: Sequence[ScenarioResult]) -> dict[str, Any]:
    by_name = {r.name: r for r in results}
    print(
        "\n| scenario | incidents | outage median / max s | physical limit median s | "
        "etcd's defrags median s | outage / physical (median) | "
        "target (daemon: <= 3 s and <= 2x physical + 1 s) |"
    )
    print("|---|---|---|---|---|---|---|")
    ratios: dict[str, Any] = {}
    for res in results:
        fig = res.figures()
        over = [x for x in fig["outage_over_physical"] if x is not None]
        target = "-"
        if res.name.startswith("daemon") and not res.name.endswith("_before") and res.outages:
            met = all(
                o <= 3.0 and (p is None or o <= 2 * p + 1.0)
                for o, p in zip(res.outages, res.physical, strict=True)
            )
            target = "met" if met else "**not met**"
        print(
            f"| {res.name} | {fig['incidents']} | {fig['outage_median_s']} / {fig['outage_max_s']}"
            f" | {fig['physical_median_s']} | {_median(res.etcd_defrag)} | {_median(over)}"
            f" | {target} |"
        )
        ratios[res.name] = {"outage_over_physical_median": _median(over)}
    for after in ("daemon", "cron"):
        b, a = by_name.get(after + "_before"), by_name.get(after)
        if b and a and b.outages and a.outages:
            ratio = statistics.median(a.outages) / statistics.median(b.outages)
            ratios[after]["outage_vs_before_median"] = round(ratio, 3)
            print(f"{after}: median outage {ratio:.2f}x of before")
    return ratios


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--incidents", type=int, default=5, help="per daemon scenario")
    parser.add_argument("--cron-incidents", type=int, default=2, help="per cron scenario")
    parser.add_argument("--interval", default="5s", help="the daemon's --interval")
    parser.add_argument("--cron-period", type=float, default=60.0, help="seconds")
    parser.add_argument("--keys", type=int, default=100, help="keys the writer overwrites")
    parser.add_argument("--value-kb", type=int, default=60)
    parser.add_argument("--rate", type=float, default=100.0, help="puts per second")
    parser.add_argument("--timeout", type=float, default=240.0, help="per scenario, seconds")
    parser.add_argument("--before-ref", default=BEFORE_REF, help="git ref of the 'before' code")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not args.scenario_list or set(args.scenario_list) - set(SCENARIOS):
        parser.error(f"scenarios: any of {', '.join(SCENARIOS)}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    version = etcd_version(etcd_binary())
    print(
        f"etcd {version}, 3 members, quota {QUOTA // 1024**2} MiB, writer {args.keys} keys x "
        f"{args.value_kb} KB at {args.rate:g} puts/s; daemon --interval {args.interval}, cron "
        f"every {args.cron_period:g}s; before = {args.before_ref[:12]}"
    )
    results: list[ScenarioResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-nospace-") as tmp:
        work = Path(tmp)
        before = (
            unpack_before(args.before_ref, work)
            if any(s.endswith("_before") for s in args.scenario_list)
            else None
        )
        for name in args.scenario_list:
            results.append(run_scenario(name, args, before, work))
    ratios = print_table(results)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": len(os.sched_getaffinity(0)),
                "etcd": version,
                "quota_bytes": QUOTA,
                "writer": {"keys": args.keys, "value_kb": args.value_kb, "rate": args.rate},
                "daemon_interval": args.interval,
                "cron_period_s": args.cron_period,
                "before_ref": args.before_ref,
                "scenarios": {
                    r.name: {
                        **r.figures(),
                        "recoveries": [
                            {
                                "outcome": x.outcome,
                                "steps_seconds": x.steps_seconds,
                                "run_seconds": x.run_seconds,
                                "steps": x.steps,
                            }
                            for x in r.recoveries
                        ],
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
