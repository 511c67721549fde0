"""Compaction beside kube-apiserver's own, on real etcd, against an emulation of its loop.

``ApiserverCompactor`` runs kube-apiserver's transaction on ``compact_rev_key`` one interval per
``tick()``; the daemon's clocks are the test's, so "an interval" passes without waiting. Which
compactions happened, and to which revision, is read from etcd's own log lines ("finished
scheduled compaction"), not from the agent's reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from etcdagent_testing import EtcdCluster
from etcdagent_testing.apiserver_compactor import ApiserverCompactor
from etcdagent_testing.clock import FakeClock
from etcdagent_testing.etcdlog import compactions

from etcdagent.agent.cycle import CycleRunner
from etcdagent.etcd.client import ClusterClient
from etcdagent.observe.compact_rev_key_read import read_compact_rev_key
from etcdagent.settings import Settings, load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ClusterFactory = Callable[..., EtcdCluster]
NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
INTERVAL = 60.0  # the emulated apiservers' --etcd-compaction-interval (by the test's clocks)
CYCLE = 15.0


class Clocks:
    """The daemon's wall and monotonic clocks, moved together by the test."""

    def __init__(self) -> None:
        self.wall = FakeClock(NOON)
        self.mono = 1000.0

    def monotonic(self) -> float:
        self.mono += 0.01  # each reading moves it a little, so the agent's waits still end
        return self.mono

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall.advance(seconds)


def settings_for(cluster: EtcdCluster, mode: str = "auto") -> Settings:
    return load_settings(
        {
            "connection": {"endpoints": ",".join(cluster.endpoints)},
            "compaction": {
                "retain_revisions": 5,
                "mode": mode,
                "apiserver_interval": f"{INTERVAL:g}s",
            },
            # Compaction due on every cycle: what holds it back is compact_rev_key alone.
            "daemon": {"listen": "127.0.0.1:0", "interval": f"{CYCLE:g}s",
                       "compaction_interval": "1s"},
        }
    )  # fmt: skip


class Scene:
    """One cluster, one emulated apiserver, one daemon."""

    def __init__(self, cluster: EtcdCluster, mode: str = "auto") -> None:
        self.cluster = cluster
        self.api = ApiserverCompactor(cluster.members[0].client_url)
        self.clocks = Clocks()
        self.settings = settings_for(cluster, mode)
        self.runner = CycleRunner(
            self.settings, clock=self.clocks.wall, monotonic=self.clocks.monotonic
        )
        self.writes = 0
        self.notes: list[str] = []

    def write(self, n: int = 10) -> None:
        for _ in range(n):
            self.writes += 1
            self.cluster.put(f"/traffic/{self.writes % 7}", str(self.writes))

    def cycles(self, seconds: float) -> None:
        """Let ``seconds`` pass, one daemon cycle every CYCLE, with writes in between."""
        for _ in range(int(seconds // CYCLE)):
            self.write()
            self.clocks.advance(CYCLE)
            assert self.runner.cycle()
            report = self.runner.last_report
            if report is not None:
                self.notes += [n for p in report.plans for n in p.plan.notes]

    def interval(self, *, apiserver: bool = True) -> int | None:
        """One apiserver interval: its attempt (if it runs), then the daemon's cycles."""
        done = self.api.tick() if apiserver else None
        self.cycles(INTERVAL)
        return done

    def etcd_compactions(self) -> list[int]:
        return compactions(self.cluster.members[0])

    def key(self) -> Any:
        with ClusterClient(self.settings) as client:
            return read_compact_rev_key(client.member(self.cluster.endpoints[0]))

    def sample(self, name: str) -> float | None:
        return self.runner.registry.get_sample_value(name)

    def agent_compacted(self) -> list[int]:
        """Revisions etcd compacted to that the apiserver did not ask for."""
        return [r for r in self.etcd_compactions() if r not in self.api.compactions]


@pytest.fixture
def scene(etcd_cluster: EtcdCluster) -> Iterator[Scene]:
    s = Scene(etcd_cluster)
    yield s
    s.runner.cluster.close()


def test_the_agent_leaves_compaction_to_a_compacting_apiserver_takes_over_and_stands_back(
    scene: Scene,
) -> None:
    # The apiserver compacts: the first attempt only puts the key, then one compaction per
    # interval, to the revision it saw one interval before.
    for _ in range(4):
        scene.interval()
    assert len(scene.api.compactions) == 3
    assert scene.etcd_compactions() == scene.api.compactions  # not once twice, none of ours
    assert any("kube-apiserver compacts every ~1m" in n for n in scene.notes), scene.notes
    assert scene.sample("etcdagent_apiserver_compacting") == 1
    assert scene.sample("etcdagent_apiserver_compacted_revision") == scene.api.compactions[-1]
    measured = scene.sample("etcdagent_apiserver_compaction_interval_seconds")
    assert measured is not None and INTERVAL - CYCLE <= measured <= INTERVAL + CYCLE

    # The apiserver stops: for two intervals nothing compacts; then the agent does, through the
    # key's transaction, with its own retention (5 revisions).
    stopped_at = scene.api.version
    scene.interval(apiserver=False)
    assert scene.agent_compacted() == []
    scene.interval(apiserver=False)
    scene.cycles(CYCLE)
    ours = scene.agent_compacted()
    assert len(ours) == 1, (scene.etcd_compactions(), scene.api.compactions)
    key = scene.key()
    assert key.version == stopped_at + 1 and key.by_agent
    assert key.value == ours[0]  # what 1.34+ apiservers read back: the revision compacted to
    assert ours[0] > scene.api.compactions[-1]
    assert scene.sample("etcdagent_apiserver_compacting") == 0
    # At most once per two intervals: its own move is quiet time restarting.
    scene.interval(apiserver=False)
    assert len(scene.agent_compacted()) == 1

    # The apiserver comes back: its first attempt loses (the agent moved the key) and learns
    # the key; it wins one interval later, or one more when the agent's two quiet intervals
    # end in between (the agent moves at most once per two of the apiserver's attempts).
    before = len(scene.api.compactions)
    attempts = 0
    while len(scene.api.compactions) == before:
        attempts += 1
        assert attempts <= 3, (scene.api, scene.etcd_compactions())
        scene.interval()
    assert scene.api.lost in (1, 2) and attempts == scene.api.lost + 1
    assert scene.api.compactions[-1] > max(scene.agent_compacted())
    agent_moves = len(scene.agent_compacted())
    scene.interval()
    scene.interval()
    assert len(scene.agent_compacted()) == agent_moves  # the apiserver compacts again
    assert scene.sample("etcdagent_apiserver_compacting") == 1
    assert scene.api.errors == []  # never asked to compact below what etcd had compacted
    compacted = scene.etcd_compactions()
    assert compacted == sorted(compacted) and len(set(compacted)) == len(compacted)


def test_no_key_means_the_agent_compacts_on_its_cadence_without_creating_one(
    scene: Scene,
) -> None:
    scene.cycles(3 * CYCLE)
    assert len(scene.etcd_compactions()) >= 2
    assert not scene.key().exists  # etcd outside Kubernetes: no compact_rev_key appears
    assert scene.sample("etcdagent_apiserver_compacting") == 0
    assert scene.sample("etcdagent_apiserver_compacted_revision") is None


@pytest.mark.parametrize("mode", ["always", "never"])
def test_compaction_mode_forces_the_choice(etcd_cluster: EtcdCluster, mode: str) -> None:
    scene = Scene(etcd_cluster, mode)
    try:
        for _ in range(3):
            scene.interval()
        if mode == "never":
            assert scene.agent_compacted() == []
            assert any("compaction.mode is never" in n for n in scene.notes), scene.notes
            return
        # always: the agent compacts on its cadence, through the key, whatever the apiserver
        # does; the apiserver's next attempt then loses, and it learns the agent's revision.
        ours = scene.agent_compacted()
        assert ours, scene.etcd_compactions()
        lost = scene.api.lost
        scene.api.tick()
        assert scene.api.lost == lost + 1
        key = scene.key()
        assert key.by_agent and key.value in scene.etcd_compactions()
    finally:
        scene.runner.cluster.close()


# -- one-shot commands -------------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "etcdagent", *args, "--output", "json"],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120,
    )  # fmt: skip
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def test_compact_and_status_say_that_kube_apiserver_compacts(etcd_cluster: EtcdCluster) -> None:
    api = ApiserverCompactor(etcd_cluster.members[0].client_url)
    for _ in range(3):
        for i in range(10):
            etcd_cluster.put(f"/k/{i}", "v")
        api.tick()
    endpoint = etcd_cluster.endpoints[0]
    code, report, err = cli("compact", "--endpoints", endpoint, "--retain-revisions", "5")
    assert code == 0, (report, err)
    assert report["outcome"] == "nothing-to-do", report
    assert "kube-apiserver compacts every 5m" in report["reason"], report["reason"]
    assert compactions(etcd_cluster.members[0]) == api.compactions

    code, status, err = cli("status", "--endpoints", endpoint)
    assert code == 0, (status, err)
    line = status["compaction"]["who"]
    assert f"kube-apiserver compacts every 5m, last to revision {api.compactions[-1]}" in line

    # Forced: compacts now, through the key.
    code, report, err = cli(
        "compact", "--endpoints", endpoint, "--retain-revisions", "5",
        "--compaction-mode", "always",
    )  # fmt: skip
    assert code == 0 and report["outcome"] == "done", (report, err)
    ours = [r for r in compactions(etcd_cluster.members[0]) if r not in api.compactions]
    assert len(ours) == 1
    code, status, err = cli("status", "--endpoints", endpoint)
    assert f"etcdagent compacted last, to revision {ours[0]}" in status["compaction"]["who"]


def test_a_one_shot_compact_takes_over_once_a_marker_proves_the_key_quiet(
    etcd_cluster: EtcdCluster,
) -> None:
    """A CronJob has no memory of its own: the retention marker it wrote after the key's last
    move proves, by etcd's lease clock, how long the key has been quiet."""
    api = ApiserverCompactor(etcd_cluster.members[0].client_url)
    for _ in range(3):
        for i in range(10):
            etcd_cluster.put(f"/k/{i}", "v")
        api.tick()
    args = ("compact", "--endpoints", etcd_cluster.endpoints[0], "--retain-revisions", "5")
    env = {"ETCDAGENT_COMPACTION__APISERVER_INTERVAL": "1s"}
    code, report, err = cli(*args, env=env)
    assert code == 0 and report["outcome"] == "nothing-to-do", (report, err)
    assert "how long ago is not known yet" in report["reason"]
    # etcd's lease clock ages the marker; it cannot be passed in (2 intervals: 2 s, and etcd
    # reports a lease's remaining TTL in whole seconds).
    time.sleep(3.5)
    for i in range(10):
        etcd_cluster.put(f"/k/{i}", "w")
    code, report, err = cli(*args, env=env)
    assert code == 0 and report["outcome"] == "done", (report, err)
    ours = [r for r in compactions(etcd_cluster.members[0]) if r not in api.compactions]
    assert len(ours) == 1
    with ClusterClient(load_settings({})) as client:
        key = read_compact_rev_key(client.member(etcd_cluster.endpoints[0]))
    assert key.by_agent and key.value == ours[0] and key.version == api.version + 1


def test_two_apiservers_compact_once_per_interval_and_the_agent_not_at_all(
    scene: Scene,
) -> None:
    """Several apiservers share the key: each interval one wins, the other learns the key."""
    other = ApiserverCompactor(scene.cluster.members[1].client_url)
    for _ in range(5):
        scene.api.tick()
        other.tick()
        scene.cycles(INTERVAL)
    both = sorted(scene.api.compactions + other.compactions)
    assert len(both) >= 3 and scene.api.lost + other.lost >= 4
    assert scene.etcd_compactions() == both  # once per interval, whoever won; none of ours
    assert scene.sample("etcdagent_apiserver_compacting") == 1
