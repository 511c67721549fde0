"""`etcdagent doctor` on a member with a slow disk (the fault suite's fsync-delaying FUSE mount).

The slow follower's WAL fsyncs and backend commits really wait (see ``test_slow_disk``), so its
own histograms show it; the doctor must name that member, and only that one, as the slow disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from etcdagent_testing import EtcdCluster, EtcdMember
from etcdagent_testing.scenario import wait_for
from test_slow_disk import slow_disk_under

from etcdagent.cli.doctor_gather import gather_doctor_input
from etcdagent.decide.doctor.finding import Severity
from etcdagent.decide.doctor.run import run_checks
from etcdagent.etcd.client import ClusterClient
from etcdagent.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ClusterFactory = Callable[..., EtcdCluster]
FSYNC_DELAY = 0.3  # seconds per fsync: 30 times etcd's 10 ms guidance, below the mixin's 1 s


def _caught_up(cluster: EtcdCluster, member: EtcdMember) -> bool:
    want = int(cluster.leader().status().get("raftIndex", 0))
    status = member.status()
    return int(status.get("raftAppliedIndex", status.get("raftIndex", 0))) >= want


def test_doctor_names_the_member_with_the_slow_disk(
    etcd_cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    cluster = etcd_cluster_factory(3)
    slow = cluster.followers()[-1]
    control = tmp_path / "fsync-delay"
    with slow_disk_under(slow, control):
        wait_for(lambda: _caught_up(cluster, slow), timeout=60, what="catch-up after restart")
        control.write_text(f"{FSYNC_DELAY}\n")

        def writes(_seconds: float) -> None:  # the lookback: writes the slow member must fsync
            for i in range(20):
                cluster.put(f"/doctor/slow/{i}", "x")
            wait_for(lambda: _caught_up(cluster, slow), timeout=60, what="catch-up")
            time.sleep(0.2)  # the member's last commit lands in its histogram

        settings = load_settings({"connection": {"endpoints": ",".join(cluster.endpoints)}})
        with ClusterClient(settings) as client:
            report = run_checks(gather_doctor_input(client, settings, 30.0, sleep=writes))
        control.unlink()
    wal = {f.member: f for f in report.findings if f.check == "wal_fsync"}
    assert set(wal) == {m.name for m in cluster.members}
    finding = wal[slow.name]
    assert finding.severity is Severity.WARNING, finding
    assert f"{slow.name} has a slow disk" in finding.summary
    assert "SSD or NVMe" in finding.action
    p99 = finding.evidence["p99_seconds"]
    assert isinstance(p99, float) and p99 >= 0.2
    for name, other in wal.items():  # the fast members' p99 is far below the slow one's
        if name != slow.name:
            fast = other.evidence["p99_seconds"]
            assert fast is None or (isinstance(fast, float) and fast < p99 / 2), other
    assert report.exit_code == 1
