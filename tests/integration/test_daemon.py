"""The daemon against real clusters, with an injected clock and short windows.

Cycles are driven one by one (``Daemon.cycle()``) with a clock the test moves, so windows open
and close without waiting for wall time; what etcd did is read from its own logs.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from etcdagent_testing import EtcdCluster, EtcdRequestError
from etcdagent_testing.clock import FakeClock
from etcdagent_testing.etcdlog import defrag_intervals, max_concurrent_defrags
from prometheus_client.parser import text_string_to_metric_families

from etcdagent.agent.daemon import Daemon
from etcdagent.settings import Settings, load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ClusterFactory = Callable[..., EtcdCluster]

NIGHT = datetime(2026, 11, 30, 2, 10, tzinfo=UTC)  # inside the 02:00-03:00 UTC window
NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # outside it


def daemon_settings(cluster: EtcdCluster, **groups: dict[str, Any]) -> Settings:
    base: dict[str, Any] = {
        "connection": {"endpoints": ",".join(cluster.endpoints)},
        "windows": [{"schedule": "0 2 * * *", "duration": "1h", "timezone": "UTC"}],
        "compaction": {"retain_revisions": 0},
        "defrag": {"min_db_size": "1MiB", "wait_between": "100ms"},
        "daemon": {"listen": "127.0.0.1:0", "interval": "1s"},
    }
    for group, values in groups.items():
        base[group] = {**base.get(group, {}), **values} if isinstance(values, dict) else values
    return load_settings(base)


@pytest.fixture
def make_daemon() -> Iterator[Callable[..., tuple[Daemon, FakeClock]]]:
    made: list[Daemon] = []

    def factory(settings: Settings, start: datetime = NIGHT) -> tuple[Daemon, FakeClock]:
        clock = FakeClock(start)
        daemon = Daemon(lambda: settings, clock=clock)
        made.append(daemon)
        return daemon, clock

    yield factory
    for daemon in made:
        daemon.cluster.close()


def fragment(cluster: EtcdCluster) -> None:
    cluster.write_garbage(n_keys=200, value_size=16 * 1024, rounds=4)


def two_cycles(daemon: Daemon, clock: FakeClock) -> None:
    """Signals (p99, rates) need two samples: a first cycle, then the one that may act."""
    daemon.cycle()
    clock.advance(15)
    daemon.cycle()


def sample(daemon: Daemon, name: str, **labels: str) -> float | None:
    return daemon.registry.get_sample_value(name, labels)


def test_no_maintenance_outside_a_window(
    etcd_cluster: EtcdCluster, make_daemon: Callable[..., tuple[Daemon, FakeClock]]
) -> None:
    fragment(etcd_cluster)
    daemon, clock = make_daemon(daemon_settings(etcd_cluster), start=NOON)

    for _ in range(3):
        assert daemon.cycle()
        clock.advance(15)

    assert defrag_intervals(etcd_cluster) == []
    assert sample(daemon, "etcdagent_maintenance_window_open") == 0
    next_start = sample(daemon, "etcdagent_maintenance_window_next_start_timestamp_seconds")
    assert next_start == datetime(2026, 12, 1, 2, 0, tzinfo=UTC).timestamp()


def test_maintenance_inside_a_window_in_order(
    etcd_cluster: EtcdCluster, make_daemon: Callable[..., tuple[Daemon, FakeClock]]
) -> None:
    fragment(etcd_cluster)
    leader = etcd_cluster.leader().name
    daemon, clock = make_daemon(daemon_settings(etcd_cluster))

    two_cycles(daemon, clock)

    assert daemon.last_decision is not None and daemon.last_decision.blocking == {}
    intervals = defrag_intervals(etcd_cluster)
    assert len(intervals) == 3
    assert intervals[-1].member == leader
    assert max_concurrent_defrags(intervals) == 1
    assert sample(daemon, "etcdagent_maintenance_runs_total", trigger="window", result="done") == 1
    for proc in etcd_cluster.members:
        assert (
            sample(
                daemon,
                "etcdagent_defragmentations_total",
                member=proc.name,
                member_id=f"{proc.member_id():x}",
                result="done",
            )
            == 1
        )


def test_latency_gate_blocks_and_is_named(
    etcd_cluster: EtcdCluster, make_daemon: Callable[..., tuple[Daemon, FakeClock]]
) -> None:
    fragment(etcd_cluster)
    settings = daemon_settings(etcd_cluster, gates={"wal_fsync_p99_max": 0})
    daemon, clock = make_daemon(settings)

    daemon.cycle()
    etcd_cluster.write_garbage(n_keys=20, value_size=1024, rounds=2, txn_ops=1)  # some fsyncs
    clock.advance(15)
    daemon.cycle()

    assert daemon.last_decision is not None
    assert "wal_fsync_p99" in daemon.last_decision.blocking
    assert "> 0 ms" in daemon.last_decision.blocking["wal_fsync_p99"]
    assert sample(daemon, "etcdagent_gate_blocking", gate="wal_fsync_p99") == 1
    assert sample(daemon, "etcdagent_gate_blocking", gate="cluster_health") == 0
    assert defrag_intervals(etcd_cluster) == []


def test_traffic_gate_blocks_under_load(
    etcd_cluster: EtcdCluster, make_daemon: Callable[..., tuple[Daemon, FakeClock]]
) -> None:
    fragment(etcd_cluster)
    settings = daemon_settings(etcd_cluster, gates={"max_request_rate": 5})
    daemon, clock = make_daemon(settings)

    daemon.cycle()
    # ~100 requests within the 15 s the clock moves: > 5 requests/s.
    etcd_cluster.write_garbage(n_keys=100, value_size=64, rounds=1, txn_ops=1)
    clock.advance(15)
    daemon.cycle()

    assert daemon.last_decision is not None
    assert "traffic" in daemon.last_decision.blocking
    assert sample(daemon, "etcdagent_gate_blocking", gate="traffic") == 1
    assert defrag_intervals(etcd_cluster) == []


def test_nospace_is_recovered_outside_any_window(
    etcd_cluster_factory: ClusterFactory, make_daemon: Callable[..., tuple[Daemon, FakeClock]]
) -> None:
    cluster = etcd_cluster_factory(size=3, quota_backend_bytes=16 * 1024**2)
    cluster.put("/known/a", "kept")
    with pytest.raises(EtcdRequestError, match="database space exceeded"):
        cluster.write_garbage(n_keys=50, value_size=64 * 1024, rounds=20)
    daemon, _ = make_daemon(daemon_settings(cluster), start=NOON)

    assert daemon.cycle()

    assert cluster.alarms() == []
    assert cluster.put("/known/b", "written") > 0
    assert cluster.get("/known/a") == b"kept"
    assert (
        sample(
            daemon, "etcdagent_maintenance_runs_total", trigger="emergency-nospace", result="done"
        )
        == 1
    )
    assert max_concurrent_defrags(defrag_intervals(cluster)) == 1


def test_two_daemons_never_defragment_at_the_same_time(
    etcd_cluster: EtcdCluster, make_daemon: Callable[..., tuple[Daemon, FakeClock]]
) -> None:
    fragment(etcd_cluster)
    settings = daemon_settings(etcd_cluster, defrag={"wait_between": "300ms"})
    pairs = [make_daemon(settings), make_daemon(settings)]
    for daemon, clock in pairs:
        daemon.cycle()
        clock.advance(15)
    threads = [threading.Thread(target=daemon.cycle) for daemon, _ in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    intervals = defrag_intervals(etcd_cluster)
    assert max_concurrent_defrags(intervals) == 1
    assert sorted({i.member for i in intervals}) == ["m1", "m2", "m3"]
    outcomes = sorted(d.last_report.outcome.value for d, _ in pairs if d.last_report)
    # One swept; the other found the lock held, or (after it) nothing left worth doing.
    assert outcomes[0] in ("done", "nothing-to-do", "refused")


def scrape_and_expect(
    daemon: Daemon, cluster: EtcdCluster
) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], dict[Any, float]]:
    """The agent's /metrics samples, and what etcd's members say those samples should be."""
    assert daemon.server is not None
    text = requests.get(daemon.server.url + "/metrics", timeout=5).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    expected: dict[Any, float] = {}
    for proc in cluster.members:
        labels = (
            ("cluster", "default"),  # a config without clusters: is one cluster, named default
            ("member", proc.name),
            ("member_id", f"{proc.member_id():x}"),
        )
        status = proc.status()
        leader = int(status["leader"]) == proc.member_id()
        expected[("etcdagent_member_db_size_bytes", labels)] = int(status["dbSize"])
        expected[("etcdagent_member_db_size_in_use_bytes", labels)] = int(status["dbSizeInUse"])
        expected[("etcdagent_member_quota_bytes", labels)] = 2 * 1024**3
        expected[("etcdagent_member_is_leader", labels)] = 1.0 if leader else 0.0
        expected[("etcdagent_member_up", labels)] = 1.0
    return samples, expected


def test_metrics_endpoint_matches_what_etcd_reports(etcd_cluster: EtcdCluster) -> None:
    # No periodic compaction: its marker write would change the sizes under the comparison.
    settings = daemon_settings(etcd_cluster, daemon={"compaction_interval": 0})
    daemon = Daemon(lambda: settings)
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while daemon.server is None or daemon.last_beat is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        health = requests.get(daemon.server.url + "/healthz", timeout=5)
        ready = requests.get(daemon.server.url + "/readyz", timeout=5)
        missing = requests.get(daemon.server.url + "/nope", timeout=5)
        # etcd may still commit internal entries just after start, moving "in use" between the
        # agent's scrape and ours: compare until one of the agent's cycles and etcd agree.
        deadline = time.monotonic() + 20
        while True:
            samples, expected = scrape_and_expect(daemon, etcd_cluster)
            got = {key: samples.get(key) for key in expected}
            if got == expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        daemon.request_stop()
        thread.join(30)
    assert (health.status_code, ready.status_code, missing.status_code) == (200, 200, 404)
    assert got == expected
    assert (
        samples[("etcdagent_last_successful_cycle_timestamp_seconds", (("cluster", "default"),))]
        > 0
    )


def test_sigterm_ends_the_daemon_within_the_grace_period_and_releases_the_lock(
    etcd_cluster: EtcdCluster,
) -> None:
    fragment(etcd_cluster)
    now = datetime.now(UTC)
    env = {
        **os.environ,
        "ETCDAGENT_WINDOWS": f'[{{"schedule": "{now.minute} {now.hour} * * *", '
        '"duration": "30m", "timezone": "UTC"}]',
        "ETCDAGENT_DEFRAG__MIN_DB_SIZE": "1MiB",
        "ETCDAGENT_DEFRAG__WAIT_BETWEEN": "60s",
        "ETCDAGENT_COMPACTION__RETAIN_REVISIONS": "0",
        "ETCDAGENT_GATES__MAX_REQUEST_RATE": "100000",
        "ETCDAGENT_DAEMON__GRACE_PERIOD": "10s",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "etcdagent", "run", "--endpoints", etcd_cluster.endpoints[0],
         "--listen", "127.0.0.1:0", "--interval", "1s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not [i for i in defrag_intervals(etcd_cluster) if i.end is not None]:
            assert time.monotonic() < deadline, "no defrag started"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert took < 10
    assert len(defrag_intervals(etcd_cluster)) == 1  # the pause was cut, no new step started
    key = base64.b64encode(b"/etcdagent/lock").decode()
    assert "kvs" not in etcd_cluster.request(etcd_cluster.members[0], "kv/range", {"key": key})


def test_run_once_maintains_and_pushes_to_a_pushgateway(
    etcd_cluster: EtcdCluster, pushgateway: str
) -> None:
    """CronJob mode: one pass (no window configured: the CronJob's schedule is the window)."""
    fragment(etcd_cluster)
    env = {
        **os.environ,
        "ETCDAGENT_DEFRAG__MIN_DB_SIZE": "1MiB",
        "ETCDAGENT_DEFRAG__WAIT_BETWEEN": "100ms",
        "ETCDAGENT_COMPACTION__RETAIN_REVISIONS": "0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "etcdagent", "run", "--once", "--endpoints",
         etcd_cluster.endpoints[0], "--interval", "1s", "--pushgateway", pushgateway],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert len(defrag_intervals(etcd_cluster)) == 3
    pushed = requests.get(pushgateway + "/metrics", timeout=5).text
    runs = {
        (s.labels.get("trigger"), s.labels.get("result"), s.labels.get("job")): s.value
        for family in text_string_to_metric_families(pushed)
        for s in family.samples
        if s.name == "etcdagent_maintenance_runs_total"
    }
    assert runs[("once", "done", "etcdagent")] == 1
    assert "etcdagent_member_db_size_bytes" in pushed


def test_run_once_exits_1_when_a_gate_blocks(etcd_cluster: EtcdCluster) -> None:
    # Any traffic at all (the agent's own status requests count) is too much.
    env = {**os.environ, "ETCDAGENT_GATES__MAX_REQUEST_RATE": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "etcdagent", "run", "--once", "--endpoints",
         etcd_cluster.endpoints[0], "--interval", "1s"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 1
    assert "traffic" in result.stderr
    assert defrag_intervals(etcd_cluster) == []


def test_a_defrag_that_would_overrun_the_window_is_not_started(
    etcd_cluster: EtcdCluster, make_daemon: Callable[..., tuple[Daemon, FakeClock]]
) -> None:
    fragment(etcd_cluster)
    # 10 KiB/s: each member's few MiB in use would take minutes; the window has 65 s left. The
    # budget (and the grace period that caps it for `run`) are set out of the way: this is
    # about the window's end.
    settings = daemon_settings(
        etcd_cluster,
        defrag={"estimated_rate": "10KiB", "budget": "1h"},
        daemon={"grace_period": "1h"},
    )
    daemon, clock = make_daemon(settings, start=datetime(2026, 11, 30, 2, 58, 55, tzinfo=UTC))

    two_cycles(daemon, clock)

    assert daemon.last_report is not None
    defrags = [r for r in daemon.last_report.results if r.step.kind.value == "defrag"]
    assert defrags and all(r.status.value == "skipped" for r in defrags)
    assert all("would overrun the maintenance window" in r.message for r in defrags)
    assert defrag_intervals(etcd_cluster) == []


def test_sighup_reloads_the_config_file_and_a_bad_one_is_refused(
    etcd_cluster: EtcdCluster, tmp_path: Any
) -> None:
    config = tmp_path / "etcdagent.yaml"
    config.write_text(f"connection:\n  endpoints: [{etcd_cluster.endpoints[0]}]\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "etcdagent", "run", "--config", str(config),
         "--listen", "127.0.0.1:0", "--interval", "500ms", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.5)  # the process's own start-up, not a clock we could inject
        config.write_text(
            f"connection:\n  endpoints: [{etcd_cluster.endpoints[1]}]\n"
            "gates:\n  max_leader_changes: 7\n"
        )
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        config.write_text("gates:\n  max_leader_changes: many\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert proc.poll() is None  # a bad reload does not stop the agent
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert '"event": "configuration reloaded"' in err
    assert '"max_leader_changes": 7' in err
    assert "configuration reload refused" in err
    assert "gates.max_leader_changes" in err
