"""The kubeadm fit against real clusters: ``--local-member`` checked against the member list (at
start, and on every cycle), resolved when it is a URL no member advertises, the local member's own
metrics URL, and a discovery that survives the configured member going down."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import structlog
from etcdagent_testing import EtcdCluster
from etcdagent_testing.clock import FakeClock
from etcdagent_testing.scenario import daemon_settings

from etcdagent.act.maintenance import Maintenance
from etcdagent.act.run_report import Outcome
from etcdagent.agent.daemon import Daemon
from etcdagent.cli.commands import check_local_member
from etcdagent.errors import ClusterUnavailableError, ConfigError
from etcdagent.etcd.client import ClusterClient
from etcdagent.logs import configure_logging
from etcdagent.observe.gather import take_snapshot
from etcdagent.settings import LogSettings, Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ClusterFactory = Callable[..., EtcdCluster]
NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # no window open: the cycle only watches


def localhost_url(url: str) -> str:
    """The same listener under a name no member advertises (members advertise 127.0.0.1), as
    kubeadm's https://127.0.0.1:2379 is for a member advertising its node IP."""
    parts = urlsplit(url)
    return f"{parts.scheme}://localhost:{parts.port}"


def etcdagent_command() -> list[str]:
    script = Path(sys.executable).parent / "etcdagent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "etcdagent"]


def run_agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ETCDAGENT_")}
    return subprocess.run(
        [*etcdagent_command(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


@contextlib.contextmanager
def json_logs() -> Iterator[io.StringIO]:
    saved = structlog.get_config()
    buffer = io.StringIO()
    configure_logging(LogSettings.model_validate({"level": "debug", "format": "json"}), buffer)
    try:
        yield buffer
    finally:
        structlog.configure(**saved)


def events(text: str, name: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == name:
                found.append(entry)
    return found


@pytest.fixture
def make_daemon() -> Iterator[Callable[[Settings], Daemon]]:
    made: list[Daemon] = []

    def factory(settings: Settings) -> Daemon:
        daemon = Daemon(lambda: settings, clock=FakeClock(NOON))
        made.append(daemon)
        return daemon

    try:
        yield factory
    finally:
        for daemon in made:
            daemon.cluster.close()


def unmatched(daemon: Daemon) -> float | None:
    return daemon.registry.get_sample_value("etcdagent_local_member_unmatched")


# -- at start: exit 2, naming the members that exist ---------------------------------------------


def test_a_local_member_naming_no_member_exits_2_and_lists_the_members(
    etcd_cluster: EtcdCluster,
) -> None:
    cluster = etcd_cluster
    endpoints = ",".join(cluster.endpoints)
    ran = run_agent("run", "--endpoints", endpoints, "--local-member", "etcd1")
    assert ran.returncode == 2, ran.stderr[-2000:]
    assert "--local-member 'etcd1' names no member of this cluster" in ran.stderr
    for member in cluster.members:
        assert f"{member.name} ({member.advertised_client_url})" in ran.stderr, ran.stderr
    assert "Traceback" not in ran.stderr

    # A one-pass command limited to a member (from the environment or the config file) too.
    ran = run_agent(
        "defrag", "--endpoints", endpoints, env={"ETCDAGENT_DAEMON__LOCAL_MEMBER": "etcd1"}
    )
    assert ran.returncode == 2, ran.stderr[-2000:]
    assert "--local-member 'etcd1' names no member" in ran.stderr
    ran = run_agent(
        "defrag",
        "--dry-run",
        "--endpoints",
        endpoints,
        env={"ETCDAGENT_DAEMON__LOCAL_MEMBER": "m2"},
    )
    assert ran.returncode == 0, ran.stderr[-2000:]


# -- a URL no member advertises names the member answering there ---------------------------------


def test_a_local_url_no_member_advertises_resolves_to_the_member_answering_there(
    etcd_cluster: EtcdCluster,
) -> None:
    cluster = etcd_cluster
    m2 = cluster.followers()[0]  # a leader's replica would wait for the followers' replicas
    local = localhost_url(m2.client_url)
    assert local not in [m.advertised_client_url for m in cluster.members]
    settings = daemon_settings(cluster.endpoints, daemon={"local_member": local})
    check_local_member(settings)  # does not refuse to start
    with ClusterClient(settings) as client:
        snapshot = take_snapshot(client)
        assert snapshot.local_member_id == m2.member_id()
        report = Maintenance(client, settings, dry_run=True).defrag(force=True)
        [plan] = [p for p in report.plans if p.phase == "defrag"]
        assert [s.member_name for s in plan.plan.steps] == [m2.name]

        # Its etcd restarting: still the member that answered there, shown down.
        m2.kill()
        try:
            down = take_snapshot(client)
            assert down.local_member_id == m2.member_id()
            assert not down.by_id(m2.member_id()).reachable  # type: ignore[union-attr]
        finally:
            m2.restart()

    # A fresh process while that etcd is down knows nothing yet: it starts, and says why.
    m2.kill()
    try:
        check_local_member(settings)  # no exit 2: the URL may answer later
        with ClusterClient(settings) as client:
            snapshot = take_snapshot(client)
        assert snapshot.local_member_id is None
        assert snapshot.local_member_unresolved is not None
        assert f"no member advertises {local}, and it did not answer" in (
            snapshot.local_member_unresolved
        )
    finally:
        m2.restart()
    # A name no member has is plainly wrong: refused at start.
    with pytest.raises(ConfigError, match="names no member"):
        check_local_member(daemon_settings(cluster.endpoints, daemon={"local_member": "m9"}))


# -- while running: a metric, an error in the log, a refused plan ----------------------------------


def test_the_daemon_counts_a_local_member_that_names_no_member(
    etcd_cluster: EtcdCluster, make_daemon: Callable[[Settings], Daemon]
) -> None:
    cluster = etcd_cluster
    daemon = make_daemon(daemon_settings(cluster.endpoints, daemon={"local_member": "etcd2"}))
    with json_logs() as logs:
        assert daemon.cycle()
        assert daemon.cycle()
    assert unmatched(daemon) == 1
    [logged] = events(
        logs.getvalue(), "local member names no member: this replica defragments nothing"
    )
    assert logged["level"] == "error"
    assert "m1 (" in logged["error"] and "'etcd2'" in logged["error"]

    # Asked to maintain, it refuses and says why.
    report = daemon._maintenance().defrag(force=True)
    assert report.outcome is Outcome.REFUSED
    assert report.reason is not None
    assert report.reason.startswith("this replica defragments nothing: --local-member 'etcd2'")

    # The member list changes under it (a reload, a member renamed): the metric follows.
    daemon.settings = daemon_settings(cluster.endpoints, daemon={"local_member": "m3"})
    assert daemon.cycle()
    assert unmatched(daemon) == 0

    alone = make_daemon(daemon_settings(cluster.endpoints))
    assert alone.cycle()
    assert unmatched(alone) == 0  # no --local-member: nothing to match


# -- the local member's own metrics URL ----------------------------------------------------------


def test_local_metrics_url_scrapes_the_local_member_there(
    etcd_cluster_factory: ClusterFactory,
) -> None:
    cluster = etcd_cluster_factory(3, separate_metrics=True)
    m2 = cluster.members[1]
    assert m2.metrics_url is not None
    settings = daemon_settings(
        cluster.endpoints,
        connection={"local_metrics_url": m2.metrics_url},
        daemon={"local_member": localhost_url(m2.client_url)},
    )
    with ClusterClient(settings) as client:
        snapshot = take_snapshot(client)
        local = snapshot.by_id(m2.member_id())
        assert local is not None and local.metrics is not None, local
        assert client.member(local.endpoint or "").metrics_url == m2.metrics_url + "/metrics"
    # Pointed at a port nobody listens on, only the local member's scrape fails.
    nowhere = "http://127.0.0.1:1"
    settings = daemon_settings(
        cluster.endpoints,
        connection={"local_metrics_url": nowhere},
        daemon={"local_member": "m2"},
    )
    with ClusterClient(settings) as client:
        snapshot = take_snapshot(client)
    for snap in snapshot.members:
        if snap.member.name == "m2":
            assert snap.metrics is None and nowhere in (snap.metrics_error or ""), snap
        else:
            assert snap.metrics is not None, snap


# -- discovery when the configured member is down ------------------------------------------------


def test_discovery_falls_back_to_the_members_found_before(
    etcd_cluster: EtcdCluster, make_daemon: Callable[[Settings], Daemon]
) -> None:
    cluster = etcd_cluster
    m1, m2, m3 = cluster.members
    settings = daemon_settings([m1.client_url])  # kubeadm: only this node's member is configured
    daemon = make_daemon(settings)
    assert daemon.cycle()
    m1.kill()
    try:
        assert daemon.cycle(), "the other members answer for the member list"
        for member, up in ((m1, 0), (m2, 1), (m3, 1)):
            labels = {"member": member.name, "member_id": f"{member.member_id():x}"}
            assert daemon.registry.get_sample_value("etcdagent_member_up", labels) == up
        daemon.request_reload()  # SIGHUP: a new client, that keeps the members found so far
        assert daemon.cycle()
        assert (
            daemon.registry.get_sample_value(
                "etcdagent_cycle_errors_total", {"kind": "unreachable"}
            )
            is None
        )
        with ClusterClient(settings) as fresh:
            # A process that never discovered the members has nobody else to ask.
            with pytest.raises(ClusterUnavailableError):
                take_snapshot(fresh)
            fresh.known_urls = daemon.cluster.known_urls
            snapshot = take_snapshot(fresh)
        assert snapshot.discovered_via in (m2.advertised_client_url, m3.advertised_client_url)
        reachable = {s.member.name: s.reachable for s in snapshot.members}
        assert reachable == {"m1": False, "m2": True, "m3": True}
    finally:
        m1.restart()
