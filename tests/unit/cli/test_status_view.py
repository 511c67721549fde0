"""`etcdagent status` output: the documented JSON shape and the table people read."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from etcdagent.cli.status_view import render_table, status_json
from etcdagent.models import Alarm, AlarmType, Member, MemberMetrics, MemberStatus
from etcdagent.observe.health import Health, Verdict, assess
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
M1 = 0x8E9E05C52164694D
M2 = 0x0B6E2F7A9C3D1E45
M3 = 0x3C
MiB = 1024**2
GiB = 1024**3
DEAD_ERROR = "http://10.0.0.3:2379: status failed: connection refused (is etcd running?)"

DOCUMENTED_MEMBER_KEYS = {
    "id",
    "name",
    "endpoint",
    "role",
    "reachable",
    "version",
    "db_size",
    "db_size_in_use",
    "quota",
    "revision",
    "raft_index",
    "raft_applied_index",
    "alarms",
    "error",
}


def _member(member_id: int, name: str, ip: str) -> Member:
    return Member(
        id=member_id,
        name=name,
        peer_urls=(f"http://{ip}:2380",),
        client_urls=(f"http://{ip}:2379",),
    )


def _status(member_id: int, db_size: int, in_use: int) -> MemberStatus:
    return MemberStatus(
        member_id=member_id,
        cluster_id=0xC1,
        revision=1234,
        version="3.5.1",
        db_size=db_size,
        db_size_in_use=in_use,
        leader=M1,
        raft_index=5000,
        raft_term=3,
        raft_applied_index=4998,
    )


def snapshot() -> ClusterSnapshot:
    quota = MemberMetrics(scraped_at=WHEN, quota=2 * GiB, has_leader=True)
    return ClusterSnapshot(
        taken_at=WHEN,
        cluster_id=0xC1,
        discovered_via="http://10.0.0.1:2379",
        members=(
            MemberSnapshot(
                member=_member(M1, "m1", "10.0.0.1"),
                endpoint="http://10.0.0.1:2379",
                status=_status(M1, 412 * MiB, 100 * MiB),
                metrics=quota,
            ),
            MemberSnapshot(
                member=_member(M2, "m2", "10.0.0.2"),
                endpoint="http://10.0.0.2:2379",
                status=_status(M2, 1 * GiB, 512 * MiB),
                metrics=quota,
            ),
            MemberSnapshot(
                member=_member(M3, "m3", "10.0.0.3"),
                endpoint="http://10.0.0.3:2379",
                error=DEAD_ERROR,
                metrics_error="not scraped: the member does not answer",
            ),
        ),
        alarms=(Alarm(member_id=M2, alarm=AlarmType.NOSPACE),),
    )


def test_json_has_the_documented_keys() -> None:
    snap = snapshot()
    out = status_json(snap, assess(snap))
    json.dumps(out)  # serialisable as is
    assert out["verdict"] == "degraded"
    assert len(out["members"]) == 3
    for member in out["members"]:
        assert set(member) >= DOCUMENTED_MEMBER_KEYS, DOCUMENTED_MEMBER_KEYS - set(member)


def test_json_sizes_in_bytes_and_ids_in_hex() -> None:
    snap = snapshot()
    m1, m2, m3 = status_json(snap, assess(snap))["members"]
    assert m1["id"] == "8e9e05c52164694d"
    assert m2["id"] == "b6e2f7a9c3d1e45"
    assert m3["id"] == "3c"
    assert m1["db_size"] == 412 * MiB
    assert m1["db_size_in_use"] == 100 * MiB
    assert m1["quota"] == 2 * GiB
    assert m1["role"] == "leader"
    assert m2["role"] == "follower"
    assert m1["reachable"] is True
    assert m1["version"] == "3.5.1"
    assert (m1["revision"], m1["raft_index"], m1["raft_applied_index"]) == (1234, 5000, 4998)
    assert m1["alarms"] == []
    assert m2["alarms"] == ["NOSPACE"]
    assert m1["error"] is None
    assert m1["endpoint"] == "http://10.0.0.1:2379"
    assert m1["name"] == "m1"


def test_json_for_a_dead_member() -> None:
    snap = snapshot()
    dead = status_json(snap, assess(snap))["members"][2]
    assert dead["reachable"] is False
    assert dead["error"] == DEAD_ERROR
    for key in ("version", "db_size", "db_size_in_use", "revision", "raft_index", "quota"):
        assert dead[key] is None, key
    assert dead["alarms"] == []


def test_json_verdict_and_reasons() -> None:
    snap = snapshot()
    out = status_json(snap, assess(snap))
    assert out["leader"] == "8e9e05c52164694d"
    assert out["cluster_id"] == "c1"
    assert any("m3" in r for r in out["reasons"])
    assert any("NOSPACE" in r and "m2" in r for r in out["reasons"])


def test_json_when_no_leader() -> None:
    snap = snapshot()
    out = status_json(snap, Health(verdict=Verdict.UNAVAILABLE, reasons=("no leader",)))
    assert out["verdict"] == "unavailable"
    assert out["reasons"] == ["no leader"]


def test_table_shows_members_sizes_and_the_dead_member() -> None:
    snap = snapshot()
    table = render_table(snap, assess(snap))
    lines = table.splitlines()
    header = lines[0]
    for column in ("NAME", "ID", "ENDPOINT", "ROLE", "DB SIZE", "QUOTA", "ALARMS"):
        assert column in header
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert "8e9e05c52164694d" in rows["m1"]
    assert "leader" in rows["m1"]
    assert "412 MiB" in rows["m1"]
    assert "2.0 GiB" in rows["m1"]  # the quota
    assert "follower" in rows["m2"]
    assert "NOSPACE" in rows["m2"]
    assert "unreachable" in rows["m3"]
    assert "3c" in rows["m3"]


def test_table_lists_errors_and_ends_with_the_verdict() -> None:
    snap = snapshot()
    table = render_table(snap, assess(snap))
    lines = table.splitlines()
    assert "errors:" in lines
    assert f"  m3: {DEAD_ERROR}" in lines
    # the metrics error of a member that does not answer at all adds nothing
    assert not any("metrics:" in line for line in lines)
    verdict = lines[-1]
    assert verdict.startswith("cluster c1: degraded")
    assert "m3" in verdict
    assert "NOSPACE" in verdict


def test_table_of_a_healthy_cluster_has_no_error_section() -> None:
    snap = snapshot()
    healthy = ClusterSnapshot(
        taken_at=WHEN,
        cluster_id=snap.cluster_id,
        discovered_via=snap.discovered_via,
        members=snap.members[:2],
    )
    health = assess(healthy)
    assert health.verdict is Verdict.HEALTHY
    table = render_table(healthy, health)
    assert "errors:" not in table
    assert table.splitlines()[-1] == "cluster c1: healthy"


def test_table_columns_line_up() -> None:
    snap = snapshot()
    lines = render_table(snap, assess(snap)).splitlines()[:4]
    start = lines[0].index("ROLE")
    assert lines[1][start:].startswith("leader")
    assert lines[2][start:].startswith("follower")
    assert lines[3][start:].startswith("unreachable")
