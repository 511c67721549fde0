"""Maintenance in the conditions users have: a database big enough that each defrag takes
seconds (longer than a short lock TTL), clients writing all the while, several agents whose
cycles are out of step, and agents killed or stopped in the middle of a defrag.

Every scenario is judged from etcd's own logs ("starting/finished defragment", "became leader")
and from what a client saw: never two defragmentations at once, every acknowledged write intact,
no alarm left armed, no agent process dead unexpectedly, and a healthy cluster at the end.

One cluster is loaded once per module (:data:`LIVE_MIB` of live data, seconds to write); each
test then adds garbage so a defrag is worth it again and looks only at etcd's log lines from
its own start on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from etcdagent_testing import EtcdCluster
from etcdagent_testing.etcdlog import (
    DefragInterval,
    defrag_intervals,
    max_concurrent_defrags,
    role_changes,
)
from etcdagent_testing.load import (
    ALWAYS_OPEN,
    Agent,
    SteadyWriter,
    add_garbage,
    agents_reaped,
    load_live_data,
    spawn_agent,
    start_replicas,
)
from etcdagent_testing.scenario import assert_intact, seed_keys, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# Live data the module's cluster holds. Measured on this project's 2-core machine (etcd's own
# log timestamps, a follower): 0.6-2 s at 200 MiB, 1.1-5.3 s at 300 MiB, 3.1-10.7 s at 500 MiB
# over etcd 3.4.23-3.6.14, a first defrag slower than a second one; loading 500 MiB of 1 MiB
# values takes 4-9 s. Only 500 MiB keeps every defrag above a 2 s lock TTL.
LIVE_MIB = 500
# Overwritten and compacted before each test: enough free pages that a defrag is worth it under
# MIN_FREE_RATIO below (the default 45% would need as much garbage as live data).
GARBAGE_MIB = 80
MIN_FREE_RATIO = "0.05"
# Shorter than every defrag here, so a sweep keeps its lock only by renewing it through each
# defrag, and a killed agent's lock frees itself while etcd still defragments. Not the 1 s floor
# (the least the lock takes, and etcd grants with these raft timings): there a leader that
# answers keep-alives ~0.7 s late (a loaded 2-core machine, the leadership just moved, a
# follower's defrag competing for the disk) lets etcd expire a live agent's lease, which is etcd
# doing its job (seen once in CI, 3.6.14, a sweep losing its lock during its last defrag).
LOCK_TTL = "2s"

# What every agent of these tests shares: compact everything (so the garbage is reclaimable),
# the lower worth-it threshold, a short lock TTL, JSON logs.
AGENT_ENV = {
    "ETCDAGENT_COMPACTION__RETAIN_REVISIONS": "0",
    "ETCDAGENT_DEFRAG__MIN_FREE_RATIO": MIN_FREE_RATIO,
    "ETCDAGENT_LOCK__TTL": LOCK_TTL,
    "ETCDAGENT_LOG__FORMAT": "json",
}
DAEMON_ENV = {**AGENT_ENV, "ETCDAGENT_WINDOWS": ALWAYS_OPEN}
# Agents that take over from a killed one go straight to the defrags: a compaction first would
# wait for every member to apply it, the one still defragmenting too, and hide a missing fence
# (with the default 5m retention a user's run often has nothing to compact).
CONTENDER = ("--no-compact",)
DEBUG = {"ETCDAGENT_LOG__LEVEL": "debug"}  # "maintenance lock busy, waiting" is a debug line


# -- the module's loaded cluster -----------------------------------------------------------------


@dataclass
class Busy:
    """The module's cluster, the keys seeded before the load, and how long the load took."""

    cluster: EtcdCluster
    known: dict[str, str]
    load_seconds: float


@dataclass
class Scene:
    """One test's view: the cluster, and etcd's log lines from ``since`` on."""

    cluster: EtcdCluster
    known: dict[str, str]
    since: datetime
    dir: Path
    agents: list[Agent] = field(default_factory=list)

    @property
    def endpoints(self) -> str:
        return ",".join(self.cluster.endpoints)

    def intervals(self) -> list[DefragInterval]:
        """Defrags of this test: started since, or still running from before."""
        return [
            i
            for i in defrag_intervals(self.cluster)
            if i.start >= self.since or i.end is None or i.end >= self.since
        ]

    def started(self) -> list[DefragInterval]:
        return [i for i in defrag_intervals(self.cluster) if i.start >= self.since]

    def counts(self) -> dict[str, int]:
        """member name -> defrags started since the test began."""
        found = {m.name: 0 for m in self.cluster.members}
        for interval in self.started():
            found[interval.member] += 1
        return found


@pytest.fixture(scope="module")
def busy(etcd_binary: Path) -> Iterator[Busy]:
    cluster = EtcdCluster(3, binary=etcd_binary).start()
    try:
        known = seed_keys(cluster)
        loaded = load_live_data(cluster, LIVE_MIB)
        print(f"\nloaded {LIVE_MIB} MiB into etcd {cluster.version} in {loaded.seconds:.1f}s")
        yield Busy(cluster, known, loaded.seconds)
    finally:
        cluster.stop()


@pytest.fixture
def scene(busy: Busy, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scene]:
    """The loaded cluster back in shape (healthy, no defrag running, no alarm), with fresh
    garbage so a defrag is worth it; etcd's log tails on failure."""
    cluster = busy.cluster
    cluster.wait_healthy()
    wait_for(
        lambda: all(i.end is not None for i in defrag_intervals(cluster)),
        timeout=60,
        what="an earlier test's defrag to finish",
    )
    assert cluster.alarms() == []
    add_garbage(cluster, GARBAGE_MIB)
    scene = Scene(cluster, busy.known, datetime.now(UTC), tmp_path)
    yield scene
    failed = any(
        getattr(getattr(request.node, f"rep_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    if failed:
        print(f"\n===== etcd {cluster.version} logs for {request.node.nodeid}", file=sys.stderr)
        for member in cluster.members:
            print(member.log_tail(20), file=sys.stderr)
        for agent in scene.agents:
            print(f"--- agent {agent.name} stderr\n{agent.err()[-3000:]}", file=sys.stderr)


# -- checks --------------------------------------------------------------------------------------


def timeline(intervals: list[DefragInterval]) -> str:
    """ "m2 13:00:58.335-13:01:02.301; ..." from etcd's logs, for messages."""
    return "; ".join(
        f"{i.member} {i.start.time()}-{i.end.time() if i.end else '...'}" for i in intervals
    )


def assert_never_two(scene: Scene) -> None:
    intervals = scene.intervals()
    assert max_concurrent_defrags(intervals) <= 1, (
        f"two defrags at once per etcd's logs: {timeline(intervals)}"
    )


def assert_lock_kept(scene: Scene) -> None:
    """No agent lost its maintenance lock while it held it (its lease expired under it: from
    then on another agent may start a defrag while this one's still runs). Each agent logs
    "maintenance lock lost" when its renewal hears of it, and "maintenance lock lost during the
    run" when it finds the key gone as it lets go."""
    lost = [
        f"{agent.name} at {event.get('timestamp')}"
        for agent in scene.agents
        for event in agent.events()
        if event.get("event") in ("maintenance lock lost", "maintenance lock lost during the run")
    ]
    assert not lost, f"maintenance lock lost mid-maintenance: {lost}"


def assert_busy_end(scene: Scene, writer: SteadyWriter) -> None:
    """What every scenario ends with."""
    cluster = scene.cluster
    cluster.wait_healthy(timeout=60)
    wait_for(
        lambda: all(i.end is not None for i in scene.intervals()),
        timeout=60,
        what="every defrag to finish",
    )
    assert_never_two(scene)
    assert_lock_kept(scene)
    assert_intact(cluster, scene.known)
    writer.assert_intact()
    assert cluster.alarms() == []


def assert_exited_cleanly(agent: Agent, codes: tuple[int, ...] = (0,)) -> None:
    """Exited (not killed, not crashed) with one of ``codes``."""
    code = agent.proc.returncode
    err = agent.err()
    assert code in codes, f"{agent.name} exited {code}:\n{err[-3000:]}"
    assert "Traceback" not in err + agent.out(), f"{agent.name}:\n{err[-3000:]}"


def report_of(agent: Agent) -> dict[str, Any] | None:
    """The JSON report a one-shot printed on stdout (None: it printed none)."""
    text = agent.out().strip()
    if not text:
        return None
    report: dict[str, Any] = json.loads(text)
    return report


def assert_done_or_refused(agent: Agent) -> None:
    """A one-shot that ran alongside other agents: done (exit 0), or refused with a report
    that says why (exit 1: the lock is held, a member is busy or does not answer). An error
    without a report (its own lease lost, a crash) is an agent dead unexpectedly."""
    assert_exited_cleanly(agent, (0, 1))
    report = report_of(agent)
    err = agent.err()
    assert report is not None, (
        f"{agent.name} exited {agent.proc.returncode} with no report:\n" + (err[-3000:])
    )
    if agent.proc.returncode == 1:
        assert report["outcome"] == "refused", (agent.name, report["outcome"], report["reason"])


def assert_running(agents: list[Agent], what: str) -> None:
    for agent in agents:
        code = agent.proc.poll()
        assert code is None, f"{agent.name} died ({code}) before {what}:\n{agent.err()[-3000:]}"


def leader_at(scene: Scene, when: datetime) -> str | None:
    """The member that was raft leader at ``when``, per the members' "became ..." lines."""
    events = sorted(
        (t, member.name, role)
        for member in scene.cluster.members
        for t, role in role_changes(member)
    )
    leader: str | None = None
    for t, name, role in events:
        if t > when:
            break
        if role == "leader":
            leader = name
        elif name == leader:
            leader = None
    return leader


def leader_changes_between(scene: Scene, start: datetime, end: datetime) -> list[str]:
    return [
        member.name
        for member in scene.cluster.members
        for t, role in role_changes(member)
        if role == "leader" and start <= t <= end
    ]


def defrag_once(scene: Scene, name: str, *args: str, env: dict[str, str] | None = None) -> Agent:
    """`etcdagent defrag --force` over the whole cluster (a one-shot, JSON report)."""
    agent = spawn_agent(
        name,
        ["defrag", "--endpoints", scene.endpoints, "--force", "--output", "json", *args],
        scene.dir,
        {**AGENT_ENV, **(env or {})},
    )
    scene.agents.append(agent)
    return agent


def wait_defrag_running(scene: Scene, agents: list[Agent], nth: int = 1) -> DefragInterval:
    """The ``nth`` defrag of this test, once etcd logged it as started and while it has not
    finished (the agents must still run): the moment to kill or stop the agent that asked."""

    def running() -> list[DefragInterval]:
        return [i for i in scene.started()[nth - 1 : nth] if i.end is None]

    def check() -> bool:
        assert_running(agents, "a defrag started")
        return bool(running())

    wait_for(check, timeout=90, what="etcd to log 'starting defragment'")
    return running()[0]


def wait_logged(agent: Agent, text: str, what: str) -> None:
    def check() -> bool:
        assert_running([agent], what)
        return text in agent.err()

    wait_for(check, timeout=60, what=what)


class Retrier:
    """Another agent retrying every second: `defrag --force --lock-timeout 0` in a loop, until
    one of its runs is done or it is stopped. Each run must exit 0 (done) or 1 (refused: the
    lock is held, or the fence says no); anything else is an agent dead unexpectedly."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.runs: list[Agent] = []
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retrier", daemon=True)

    def __enter__(self) -> Retrier:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        for run in self.runs:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set() and not self.done.is_set():
            run = defrag_once(
                self.scene, f"retry-{len(self.runs)}", "--lock-timeout", "0", *CONTENDER
            )
            self.runs.append(run)
            while run.proc.poll() is None and not self._stop.is_set():
                time.sleep(0.05)
            if run.proc.poll() == 0:
                self.done.set()
                return
            self._stop.wait(1.0)

    def assert_clean(self) -> None:
        for run in self.runs:
            if run.proc.poll() is not None:
                assert_done_or_refused(run)


# -- 1. one forced sweep over a busy cluster, lock TTL shorter than each defrag -----------------


def test_forced_sweep_of_a_busy_cluster_with_long_defrags(scene: Scene) -> None:
    cluster = scene.cluster
    with SteadyWriter(cluster, prefix="/writer/sweep/") as writer:
        agent = defrag_once(scene, "sweep")
        agent.proc.wait(timeout=180)
    assert_exited_cleanly(agent)

    started = scene.started()
    leaders = [leader_at(scene, i.start) for i in started]
    print(f"\nsweep: {timeline(started)}; leaders {leaders}; writer: {writer.summary()}")
    assert sorted(i.member for i in started) == sorted(m.name for m in cluster.members), started
    # The leader is never defragmented while it leads: it goes last, or leadership moved away
    # from it first (then the member defragmented last is a follower by then).
    for interval in started:
        leader = leader_at(scene, interval.start)
        assert leader is not None, f"no leader known at {interval.start}"
        if interval is not started[-1]:
            assert interval.member != leader, (interval, leader, started)
    last = started[-1]
    if leader_at(scene, last.start) == last.member:
        # Defragmented as the leader: allowed only when it goes last and never moved.
        assert not leader_changes_between(scene, scene.since, last.start), started
    assert_busy_end(scene, writer)


# -- 2. three DaemonSet replicas, a `run --once` and a `defrag --force` at once ------------------


def test_three_replicas_a_run_once_and_a_forced_sweep_never_defragment_two_at_once(
    scene: Scene, record_property: Any
) -> None:
    cluster = scene.cluster
    with SteadyWriter(cluster, prefix="/writer/replicas/") as writer:
        replicas = start_replicas(cluster, scene.dir, DAEMON_ENV)
        scene.agents.extend(replicas)
        with agents_reaped(replicas):
            wait_defrag_running(scene, replicas)
            once = spawn_agent(
                "run-once",
                ["run", "--once", "--endpoints", scene.endpoints, "--interval", "1s"],
                scene.dir,
                DAEMON_ENV,
            )
            scene.agents.append(once)
            forced = defrag_once(scene, "forced", "--lock-timeout", "90s")
            with agents_reaped([once, forced]):

                def all_done() -> bool:
                    assert_running(replicas, "every member was defragmented")
                    finished = {i.member for i in scene.started() if i.end is not None}
                    return (
                        once.proc.poll() is not None
                        and forced.proc.poll() is not None
                        and finished == {m.name for m in cluster.members}
                    )

                wait_for(all_done, timeout=180, what="every member defragmented, both runs ended")
            assert_running(replicas, "SIGTERM")
            for replica in replicas:
                replica.proc.send_signal(signal.SIGTERM)
            for replica in replicas:
                replica.proc.wait(timeout=60)

    counts = scene.counts()
    record_property("defrags_per_member", counts)
    print(f"\nreplicas: defrags per member {counts}; writer: {writer.summary()}")
    for replica in replicas:
        assert_exited_cleanly(replica)
    assert_done_or_refused(forced)
    assert_exited_cleanly(once, (0, 1))
    if once.proc.returncode != 0:
        assert "maintenance already running by etcdagent@" in once.err(), once.err()[-3000:]
    assert all(n >= 1 for n in counts.values()), counts
    assert_busy_end(scene, writer)


# -- 3. an agent SIGKILLed mid-defrag while another retries every second ------------------------


def test_agent_killed_mid_defrag_while_others_wait_and_retry(scene: Scene) -> None:
    """The killed agent's lease (:data:`LOCK_TTL`) expires two seconds after the kill, while
    etcd still defragments the member it was on: the agent waiting for the lock gets it then,
    the one retrying every second soon after. Neither may start a defrag before etcd finished
    that one."""
    cluster = scene.cluster
    with SteadyWriter(cluster, prefix="/writer/kill/") as writer:
        victim = defrag_once(scene, "victim")
        with agents_reaped([victim]):
            wait_logged(victim, "maintenance lock acquired", "the first agent to take the lock")
            waiter = defrag_once(scene, "waiter", "--lock-timeout", "90s", *CONTENDER, env=DEBUG)
            with agents_reaped([waiter]), Retrier(scene) as retrier:
                wait_logged(waiter, "maintenance lock busy, waiting", "the waiter to wait")
                # The sweep's last defrag (the leader's, or the old leader's after a move): the
                # agents that take over then find the followers to do, while it still runs.
                hit = wait_defrag_running(scene, [victim], nth=len(cluster.members))
                victim.proc.send_signal(signal.SIGKILL)
                killed_at = datetime.now(UTC)
                victim.proc.wait(timeout=10)
                waiter.proc.wait(timeout=180)
                wait_for(retrier.done.is_set, timeout=180, what="a retried sweep to be done")
                retrier.assert_clean()
    assert victim.proc.returncode == -signal.SIGKILL
    assert_done_or_refused(waiter)

    intervals = scene.intervals()
    hit_now = next(i for i in intervals if i.start == hit.start and i.member == hit.member)
    print(
        f"\nkill: hit {hit.member}, waiter exit {waiter.proc.returncode}, "
        f"{len(retrier.runs)} retries; "
        f"defrags {timeline(intervals)}; {writer.summary()}"
    )
    assert hit_now.end is None or hit_now.end > killed_at, (hit_now, killed_at)  # mid-defrag
    assert_busy_end(scene, writer)
    # The retried sweep that was done defragmented every member after the kill.
    after = {i.member for i in scene.intervals() if i.start >= killed_at and i.end is not None}
    assert after == {m.name for m in cluster.members}, scene.intervals()


# -- 4. a daemon SIGTERMed mid-defrag: it exits within its grace period --------------------------


# Longer than a defrag here (a daemon does not start a defrag estimated to outlast its grace
# period: defrag.budget is capped at it; 505 MiB at defrag.estimated_rate 50 MiB/s is 10.1 s).
GRACE = 20.0


def test_daemon_sigtermed_mid_defrag_exits_within_its_grace_period(scene: Scene) -> None:
    cluster = scene.cluster
    env = {**DAEMON_ENV, "ETCDAGENT_DAEMON__GRACE_PERIOD": f"{GRACE}s"}
    with SteadyWriter(cluster, prefix="/writer/sigterm/") as writer:
        daemon = spawn_agent(
            "daemon",
            ["run", "--endpoints", scene.endpoints, "--listen", "127.0.0.1:0", "--interval", "1s"],
            scene.dir,
            env,
        )
        scene.agents.append(daemon)
        with agents_reaped([daemon]):
            hit = wait_defrag_running(scene, [daemon])
            with Retrier(scene) as retrier:
                daemon.proc.send_signal(signal.SIGTERM)
                termed = time.monotonic()
                try:
                    daemon.proc.wait(timeout=GRACE + 2)  # + process start-up and exit slack
                except subprocess.TimeoutExpired:
                    pytest.fail(
                        f"the daemon still ran {time.monotonic() - termed:.1f}s after SIGTERM "
                        f"(grace period {GRACE}s):\n{daemon.err()[-3000:]}"
                    )
                wait_for(retrier.done.is_set, timeout=180, what="a retried sweep to be done")
                retrier.assert_clean()
    assert_exited_cleanly(daemon)

    intervals = scene.intervals()
    print(
        f"\nsigterm: hit {hit.member}; {len(retrier.runs)} retries; "
        f"defrags {timeline(intervals)}; {writer.summary()}"
    )
    assert_busy_end(scene, writer)
