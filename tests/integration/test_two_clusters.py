"""One agent process, two real etcd clusters (the main etcd and the events etcd beside it).

The process runs for real (agent/process.py: a loop thread per cluster, one HTTP server) on an
injected wall clock, so each cluster's window opens when the test says. Every judgement comes
from etcd: defrags from each member's own log lines, sizes and alarms from each member's status.
Both clusters' members are named m1..m3, as two kubeadm-style clusters on the same nodes would
be: only the `cluster` label keeps their metrics apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from etcdagent_testing import EtcdCluster, EtcdRequestError
from etcdagent_testing.clock import FakeClock, RunningClock
from etcdagent_testing.etcdlog import defrag_intervals, max_concurrent_defrags
from etcdagent_testing.scenario import agent_command, fragment, wait_for
from prometheus_client.parser import text_string_to_metric_families

from etcdagent.agent.process import AgentProcess, build_process
from etcdagent.settings import Settings, load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ClusterFactory = Callable[..., EtcdCluster]

NIGHT = datetime(2026, 11, 30, 2, 10, tzinfo=UTC)  # main's window (02:00-03:00 UTC)
EVENTS_NIGHT = datetime(2026, 11, 30, 4, 10, tzinfo=UTC)  # events' own window (04:00-05:00)
NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # neither


def two_cluster_config(main: EtcdCluster, events: EtcdCluster, **top: Any) -> dict[str, Any]:
    """Shared values at the top level, each cluster's endpoints (and events' window) its own."""
    config: dict[str, Any] = {
        "windows": [{"schedule": "0 2 * * *", "duration": "1h", "timezone": "UTC"}],
        "connection": {"request_timeout": "2s", "retry_deadline": "500ms"},
        "compaction": {"retain_revisions": 0},
        "defrag": {"min_db_size": "1MiB", "wait_between": "100ms"},
        "daemon": {"listen": "127.0.0.1:0", "interval": "1s"},
        "clusters": [
            {"name": "main", "connection": {"endpoints": main.endpoints}},
            {
                "name": "events",
                "connection": {"endpoints": events.endpoints},
                "windows": [{"schedule": "0 4 * * *", "duration": "1h", "timezone": "UTC"}],
            },
        ],
    }
    for group, values in top.items():
        config[group] = {**config.get(group, {}), **values}
    return config


@pytest.fixture
def run_process() -> Iterator[Callable[[Settings, FakeClock], AgentProcess]]:
    running: list[tuple[AgentProcess, threading.Thread]] = []

    def start(settings: Settings, clock: FakeClock) -> AgentProcess:
        process = build_process(lambda: settings, initial=settings, clock=clock)
        thread = threading.Thread(
            target=process.run, kwargs={"install_signals": False}, daemon=True
        )
        thread.start()
        running.append((process, thread))
        wait_for(lambda: process.server is not None, 30, "the agent's HTTP server")
        return process

    yield start
    for process, thread in running:
        process.request_stop()
        thread.join(timeout=90)
        assert not thread.is_alive(), "the agent did not stop"


def scrape(process: AgentProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert process.server is not None
    text = requests.get(process.server.url + "/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def member_labels(cluster: str, proc: Any) -> tuple[tuple[str, str], ...]:
    return (("cluster", cluster), ("member", proc.name), ("member_id", f"{proc.member_id():x}"))


def sizes_match_etcd(process: AgentProcess, clusters: dict[str, EtcdCluster]) -> bool:
    """Every member's DB size and up-ness on /metrics, under its cluster, is what etcd says."""
    samples = scrape(process)
    for name, cluster in clusters.items():
        for proc in cluster.members:
            labels = member_labels(name, proc)
            if samples.get(("etcdagent_member_db_size_bytes", labels)) != int(
                proc.status()["dbSize"]
            ):
                return False
            if samples.get(("etcdagent_member_up", labels)) != 1.0:
                return False
    return True


def cycles(process: AgentProcess, cluster: str) -> float:
    return (
        process.loops[cluster].registry.get_sample_value("etcdagent_cycle_duration_seconds_count")
        or 0.0
    )


def finished_defrags(cluster: EtcdCluster) -> list[str]:
    return sorted(i.member for i in defrag_intervals(cluster) if i.end is not None)


def probe(process: AgentProcess, path: str) -> tuple[int, str]:
    assert process.server is not None
    answer = requests.get(process.server.url + path, timeout=5)
    return answer.status_code, answer.text.strip()


def test_each_cluster_is_maintained_in_its_own_window_and_labelled_by_name(
    etcd_cluster_factory: ClusterFactory, run_process: Callable[..., AgentProcess]
) -> None:
    main, events = etcd_cluster_factory(3), etcd_cluster_factory(3)
    fragment(main)
    fragment(events)
    clock = RunningClock(NIGHT)
    process = run_process(load_settings(two_cluster_config(main, events)), clock)

    wait_for(lambda: len(finished_defrags(main)) == 3, 90, "main defragmented in its window")
    # The events loop ran all along (its cycles counted), yet its window is closed: nothing.
    wait_for(lambda: cycles(process, "events") >= 3, 30, "events cycles")
    assert defrag_intervals(events) == []
    samples = scrape(process)
    assert samples[("etcdagent_maintenance_window_open", (("cluster", "main"),))] == 1
    assert samples[("etcdagent_maintenance_window_open", (("cluster", "events"),))] == 0

    clock.advance((EVENTS_NIGHT - NIGHT).total_seconds())
    wait_for(lambda: len(finished_defrags(events)) == 3, 90, "events defragmented in its window")
    for cluster in (main, events):
        intervals = defrag_intervals(cluster)
        assert max_concurrent_defrags(intervals) == 1
        assert finished_defrags(cluster) == ["m1", "m2", "m3"]  # once each, main not again
    wait_for(
        lambda: sizes_match_etcd(process, {"main": main, "events": events}),
        30,
        "the metrics of both clusters to match what their members report",
    )
    assert probe(process, "/readyz") == (200, "main: ok\nevents: ok")
    assert probe(process, "/readyz?cluster=events") == (200, "ok")
    assert probe(process, "/readyz?cluster=nope")[0] == 404


def test_a_frozen_cluster_never_stalls_the_other(
    etcd_cluster_factory: ClusterFactory, run_process: Callable[..., AgentProcess]
) -> None:
    """Every events member SIGSTOPped (requests hang until their timeout): the main cluster is
    maintained on its usual cadence and /readyz names the cluster that is down."""
    main, events = etcd_cluster_factory(3), etcd_cluster_factory(3)
    fragment(main)
    for member in events.members:
        member.stop()
    clock = RunningClock(NIGHT)
    # Both clusters in the window: only reachability tells them apart.
    config = two_cluster_config(main, events)
    config["clusters"][1].pop("windows")
    process = run_process(load_settings(config), clock)

    wait_for(lambda: len(finished_defrags(main)) == 3, 90, "main defragmented")
    before = cycles(process, "main")
    wait_for(lambda: cycles(process, "main") >= before + 3, 30, "main's cycles to go on")
    status, text = probe(process, "/readyz")
    assert status == 503
    lines = dict(line.split(": ", 1) for line in text.splitlines())
    assert lines["main"] == "ok" and lines["events"] != "ok", text
    assert probe(process, "/readyz?cluster=main") == (200, "ok")
    assert probe(process, "/readyz?cluster=events")[0] == 503
    wait_for(
        lambda: (
            (
                process.loops["events"].registry.get_sample_value(
                    "etcdagent_cycle_errors_total", {"kind": "unreachable"}
                )
                or 0
            )
            >= 1
        ),
        30,
        "the events cycles to count as unreachable",
    )

    # Back: the events cluster is observed and maintained too, the main one left alone.
    for member in events.members:
        member.cont()
    fragment(events)
    wait_for(lambda: len(finished_defrags(events)) == 3, 120, "events defragmented once back")
    assert finished_defrags(main) == ["m1", "m2", "m3"]
    assert max_concurrent_defrags(defrag_intervals(events)) == 1
    wait_for(lambda: probe(process, "/readyz")[0] == 200, 30, "both clusters ready")


def test_a_full_cluster_is_recovered_while_the_other_is_maintained(
    etcd_cluster_factory: ClusterFactory, run_process: Callable[..., AgentProcess]
) -> None:
    """NOSPACE on the events etcd, outside its window: its own recovery (its lock, its slots)
    runs while the main etcd is maintained in its window by the same process."""
    main = etcd_cluster_factory(3)
    events = etcd_cluster_factory(3, quota_backend_bytes=16 * 1024**2)
    events.put("/known/a", "kept")
    fragment(main)
    with pytest.raises(EtcdRequestError, match="database space exceeded"):
        events.write_garbage(n_keys=50, value_size=64 * 1024, rounds=20)
    assert events.alarms(), "the quota was not reached"
    process = run_process(load_settings(two_cluster_config(main, events)), RunningClock(NIGHT))

    def writes_work() -> bool:
        try:
            return not events.alarms() and events.put("/known/b", "written") > 0
        except EtcdRequestError:
            return False

    wait_for(writes_work, 120, "writes to the events etcd to work again")
    wait_for(lambda: len(finished_defrags(main)) == 3, 90, "main defragmented in its window")
    assert events.get("/known/a") == b"kept"
    assert finished_defrags(events) == ["m1", "m2", "m3"]  # one recovery sweep, once each
    for cluster in (main, events):
        assert max_concurrent_defrags(defrag_intervals(cluster)) == 1
    runs = process.loops["events"].registry.get_sample_value(
        "etcdagent_maintenance_runs_total", {"trigger": "emergency-nospace", "result": "done"}
    )
    assert runs == 1


def test_run_once_maintains_both_clusters_and_pushes_their_metrics(
    etcd_cluster_factory: ClusterFactory, tmp_path: Path, pushgateway: str
) -> None:
    """CronJob mode with two clusters: both passes at once, one push labelled by cluster."""
    main, events = etcd_cluster_factory(3), etcd_cluster_factory(3)
    fragment(main)
    fragment(events)
    config = two_cluster_config(main, events)
    for entry in config["clusters"]:
        entry["windows"] = []  # the CronJob's schedule is the window
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    done = subprocess.run(
        agent_command("run", "--once", "--config", str(path), "--pushgateway", pushgateway),
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for cluster in (main, events):
        assert finished_defrags(cluster) == ["m1", "m2", "m3"]
    pushed = requests.get(pushgateway + "/metrics", timeout=5).text
    runs = {
        s.labels.get("cluster"): s.value
        for family in text_string_to_metric_families(pushed)
        for s in family.samples
        if s.name == "etcdagent_maintenance_runs_total"
        and (s.labels.get("trigger"), s.labels.get("result")) == ("once", "done")
    }
    assert runs == {"main": 1.0, "events": 1.0}


def agent_json(*args: str, env: dict[str, str]) -> tuple[int, Any, str]:
    done = subprocess.run(
        [*agent_command(*args)], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    try:
        answer = json.loads(done.stdout) if done.stdout.strip() else None
    except json.JSONDecodeError:
        answer = done.stdout
    return done.returncode, answer, done.stderr


def test_status_and_commands_per_cluster(
    etcd_cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    main, events = etcd_cluster_factory(3), etcd_cluster_factory(3)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(two_cluster_config(main, events)))  # JSON is YAML
    env = {**os.environ, "ETCDAGENT_CONFIG": str(config)}

    code, both, err = agent_json("status", "-o", "json", env=env)
    assert code == 0, err
    assert [c["cluster"] for c in both["clusters"]] == ["main", "events"]
    for answer, cluster in zip(both["clusters"], (main, events), strict=True):
        endpoints = {m["endpoint"] for m in answer["members"]}
        assert endpoints == set(cluster.endpoints)
    code, one, err = agent_json("status", "--cluster", "events", "-o", "json", env=env)
    assert code == 0 and one["cluster"] == "events", err
    assert {m["endpoint"] for m in one["members"]} == set(events.endpoints)

    # A command that changes etcd never picks several clusters by surprise.
    code, _, err = agent_json("defrag", "--dry-run", env=env)
    assert code == 2 and "several clusters are configured (main, events)" in err
    code, _, err = agent_json("compact", "--cluster", "nope", env=env)
    assert code == 2 and "--cluster 'nope'" in err and "main, events" in err
    code, _, err = agent_json("status", "--endpoints", main.endpoints[0], env=env)
    assert code == 2 and "connection.endpoints" in err
    code, report, err = agent_json(
        "defrag", "--cluster", "events", "--dry-run", "--force", "-o", "json", env=env
    )
    assert code == 0, err
    steps = report["plans"][-1]["plan"]["steps"]
    planned = {s["member_name"] for s in steps if s["kind"] == "defrag"}
    assert planned == {"m1", "m2", "m3"}
    assert defrag_intervals(events) == [] and defrag_intervals(main) == []  # a dry run

    # doctor: both clusters audited side by side, or the one asked for.
    code, audit, err = agent_json("doctor", "--lookback", "1s", "-o", "json", env=env)
    assert [c["cluster"] for c in audit["clusters"]] == ["main", "events"], err
    assert all("findings" in c for c in audit["clusters"])
    code, audit, err = agent_json(
        "doctor", "--cluster", "main", "--lookback", "1s", "-o", "json", env=env
    )
    assert audit["cluster"] == "main" and "findings" in audit, err

    # The events etcd down: main's table still shows, events' is one line, exit 1.
    for member in events.members:
        member.kill()
    done = subprocess.run(
        agent_command("status"), capture_output=True, text=True, env=env, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "cluster main:" in done.stdout and "healthy" in done.stdout
    assert "cluster events:\nerror:" in done.stdout
    assert "Traceback" not in done.stderr
