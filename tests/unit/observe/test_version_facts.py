"""Version differences the snapshot absorbs: where the quota comes from, the 3.6 downgrade state,
and what the decisions and the status view make of them (answers recorded from etcd 3.6.14)."""

from __future__ import annotations

from etcdagent_testing.snapshots import GIB, MIB, cluster, settings, snap

from etcdagent.cli.status_view import render_table, status_json
from etcdagent.decide.gates import cluster_gate_failures
from etcdagent.models import MemberStatus, release
from etcdagent.observe.health import Verdict, assess

STATUS_3614 = {  # etcd 3.6.14 during `downgrade enable 3.5` (quota flag unset)
    "header": {"cluster_id": "6450201347900444192", "member_id": "16077064128333774175",
               "revision": "1", "raft_term": "2"},
    "version": "3.6.14", "dbSize": "20480", "leader": "16077064128333774175", "raftIndex": "4",
    "raftTerm": "2", "raftAppliedIndex": "4", "dbSizeInUse": "16384", "storageVersion": "3.6.0",
    "dbSizeQuota": "2147483648", "downgradeInfo": {"enabled": True, "targetVersion": "3.5.0"},
}  # fmt: skip


def test_a_36_status_carries_storage_version_quota_and_downgrade() -> None:
    status = MemberStatus.from_gateway(STATUS_3614)
    assert status.release == (3, 6, 14)
    assert status.storage_version == "3.6.0"
    assert status.reliable_quota == 2 * GIB
    assert status.downgrade.enabled and status.downgrade.target_version == "3.5.0"
    idle = MemberStatus.from_gateway({**STATUS_3614, "downgradeInfo": {}})
    assert not idle.downgrade.enabled


def test_release_parses_what_etcd_prints() -> None:
    assert release("3.5.30") == (3, 5, 30)
    assert release("3.6.0-rc.1") == (3, 6, 0)
    assert release("") is None
    assert release("not a version") is None


def test_the_status_quota_is_trusted_from_366_and_the_metric_before() -> None:
    # 3.6.0-3.6.5 report the flag they were given; the gauge is what etcd enforces.
    old = snap("m1", version="3.6.3", quota=1 * GIB, metrics_quota=2 * GIB)
    new = snap("m1", version="3.6.6", quota=1 * GIB, metrics_quota=2 * GIB)
    assert old.quota == 2 * GIB
    assert new.quota == 1 * GIB
    # Without /metrics, a non-zero status quota is still the best there is.
    assert snap("m1", version="3.6.3", quota=1 * GIB).quota == 1 * GIB
    assert snap("m1", version="3.5.1").quota is None


def test_a_downgrade_in_progress_blocks_maintenance_and_degrades_the_verdict() -> None:
    shot = cluster(*(snap(n, version="3.6.14", downgrade_to="3.5.0") for n in ("m1", "m2", "m3")))
    assert shot.downgrade_target == "3.5.0"
    reasons = cluster_gate_failures(shot, settings().defrag)
    assert any("downgrade of the cluster to 3.5.0 is in progress" in r for r in reasons)
    health = assess(shot)
    assert health.verdict is Verdict.DEGRADED
    assert status_json(shot, health)["downgrade_target"] == "3.5.0"

    calm = cluster(*(snap(n, version="3.6.14") for n in ("m1", "m2", "m3")))
    assert calm.downgrade_target is None
    assert cluster_gate_failures(calm, settings().defrag) == []


def test_the_table_has_a_storage_column_only_when_a_member_reports_one() -> None:
    old = cluster(snap("m1", db_size=10 * MIB, in_use=5 * MIB))
    assert "STORAGE" not in render_table(old, assess(old)).splitlines()[0]
    status = MemberStatus.from_gateway(STATUS_3614)
    member = snap("m1").model_copy(update={"status": status.model_copy(update={"member_id": 0xA1})})
    new = cluster(member)
    assert "STORAGE" in render_table(new, assess(new)).splitlines()[0]
    assert "3.6.0" in render_table(new, assess(new)).splitlines()[1]
