"""Time retention under wrong and jumping agent clocks (libfaketime), on real clusters.

Agents run as real subprocesses (`etcdagent run`) with a short retention and a compaction every
cycle, while the test writes a key ten times a second and records when it sent each write. What
was compacted, and when, comes from etcd's own log ("compact tree index"); no write sent less
than the retention before a compaction may be below its revision. Each scenario also requires at
least one compaction, so that a test which never compacts cannot pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import pytest
from etcdagent_testing import EtcdCluster
from etcdagent_testing.faketime import ClockFile, libfaketime, skewed_env
from etcdagent_testing.load import Agent, agents_reaped, spawn_agent
from etcdagent_testing.retention import RevisionRecorder, compactions, too_young

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(240),
    pytest.mark.skipif(libfaketime() is None, reason="run `bash scripts/install-faketime`"),
]

RETAIN = 10.0
TEN_MINUTES = 600.0
ENV = {
    "ETCDAGENT_COMPACTION__RETAIN": f"{RETAIN:g}s",
    "ETCDAGENT_DAEMON__COMPACTION_INTERVAL": "1s",
    "ETCDAGENT_DEFRAG__MIN_DB_SIZE": "1GiB",  # compaction is the subject, not defragmentation
}
RUN_FOR = 2 * RETAIN + 10  # long enough for markers and observations to come of age


def agent_clock_offset(env: Mapping[str, str]) -> tuple[float, float]:
    """(wall offset, monotonic offset) in seconds that ``env`` gives the agent's own clocks."""
    code = (
        "import time; from etcdagent.clock import utcnow; "
        "print(utcnow().timestamp(), time.monotonic())"
    )
    before_wall, before_mono = time.time(), time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return float(out[0]) - before_wall, float(out[1]) - before_mono


def test_libfaketime_moves_the_agents_wall_clock_and_not_its_monotonic_clock(
    tmp_path: Path,
) -> None:
    wall, mono = agent_clock_offset(skewed_env("-10m"))
    assert -TEN_MINUTES - 5 < wall < -TEN_MINUTES + 5
    assert 0 <= mono < 5
    wall, mono = agent_clock_offset(skewed_env("+10m"))
    assert TEN_MINUTES - 5 < wall < TEN_MINUTES + 5
    clock = ClockFile(tmp_path / "offset", "+0")
    assert abs(agent_clock_offset(clock.env())[0]) < 5
    clock.set("+10m")
    assert TEN_MINUTES - 5 < agent_clock_offset(clock.env())[0] < TEN_MINUTES + 5


def daemon(cluster: EtcdCluster, name: str, directory: Path, env: Mapping[str, str]) -> Agent:
    args = [
        "run", "--endpoints", ",".join(cluster.endpoints), "--listen", "127.0.0.1:0",
        "--interval", "1s", "--log-format", "json",
    ]  # fmt: skip
    return spawn_agent(name, args, directory, {**ENV, **env})


def log_offset(agent: Agent, started: float) -> float:
    """How far the agent's first log timestamp is from the real time it was started."""
    for event in agent.events():
        stamp = event.get("timestamp")
        if isinstance(stamp, str):
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - started
    raise AssertionError(f"{agent.name} logged nothing:\n{agent.err()[-2000:]}")


def judge(cluster: EtcdCluster, recorder: RevisionRecorder, agents: Sequence[Agent]) -> None:
    for agent in agents:
        assert agent.proc.poll() is None, f"{agent.name} exited:\n{agent.err()[-3000:]}"
    found = compactions(cluster)
    bad = too_young(recorder, found, RETAIN)
    assert not bad, "history younger than the retention was compacted: " + "; ".join(
        f"revision {w.revision} sent {age:.1f}s before the compaction to {c.revision}"
        for c, w, age in bad[:5]
    )
    logs = "\n".join(
        json.dumps(e) for a in agents for e in a.events() if e.get("event") == "maintenance run"
    )
    assert found, f"nothing was compacted in {RUN_FOR:g}s: the test proves nothing\n{logs[-3000:]}"


def test_a_replica_ten_minutes_behind_compacts_nothing_younger_than_the_retention(
    etcd_cluster: EtcdCluster, tmp_path: Path
) -> None:
    """The slow replica's markers would have claimed to be 10 minutes old when written."""
    cluster = etcd_cluster
    with RevisionRecorder(cluster) as recorder:
        started = time.time()
        slow = daemon(cluster, "behind", tmp_path, skewed_env("-10m"))
        with agents_reaped([slow]) as agents:
            time.sleep(2)  # the normal replica's first run then finds the slow one's markers
            agents.append(daemon(cluster, "normal", tmp_path, {}))
            time.sleep(RUN_FOR)
            judge(cluster, recorder, agents)
            assert log_offset(slow, started) < -TEN_MINUTES + 30


def test_a_replica_ten_minutes_ahead_compacts_nothing_younger_than_the_retention(
    etcd_cluster: EtcdCluster, tmp_path: Path
) -> None:
    """The fast replica would have seen every other replica's markers as 10 minutes old."""
    cluster = etcd_cluster
    with RevisionRecorder(cluster) as recorder:
        normal = daemon(cluster, "normal", tmp_path, {})
        with agents_reaped([normal]) as agents:
            time.sleep(2)
            started = time.time()
            fast = daemon(cluster, "ahead", tmp_path, skewed_env("+10m"))
            agents.append(fast)
            time.sleep(RUN_FOR)
            judge(cluster, recorder, agents)
            assert log_offset(fast, started) > TEN_MINUTES - 30


def test_a_clock_jumping_during_a_daemon_run_compacts_nothing_younger_than_the_retention(
    etcd_cluster: EtcdCluster, tmp_path: Path
) -> None:
    """Forward 10 minutes (every marker so far would look old), later back again."""
    cluster = etcd_cluster
    clock = ClockFile(tmp_path / "offset", "+0")
    with RevisionRecorder(cluster) as recorder:
        jumper = daemon(cluster, "jumper", tmp_path, clock.env())
        with agents_reaped([jumper]) as agents:
            time.sleep(RETAIN * 0.6)
            clock.set("+10m")
            jumped = time.time()
            time.sleep(RETAIN)
            clock.set("+0")
            time.sleep(RUN_FOR - RETAIN * 0.6)
            judge(cluster, recorder, agents)
            stamps = [
                datetime.fromisoformat(str(e["timestamp"]).replace("Z", "+00:00")).timestamp()
                for e in jumper.events()
                if "timestamp" in e
            ]
            assert any(s - jumped > TEN_MINUTES - 30 for s in stamps), "the clock never jumped"
