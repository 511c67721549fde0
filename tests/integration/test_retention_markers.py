"""Retention markers against real clusters: their ages come from etcd's lease clock, a leader
change makes them look younger (never older), and only markers written by the protocol count.

Ages are compared with the test's own monotonic record of when it wrote each marker; the
measured values are printed (``-s``) and summarised in etcdagent/act/markers.py.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from etcdagent_testing import EtcdCluster
from etcdagent_testing.member import EtcdMember

from etcdagent.act.maintenance import Maintenance
from etcdagent.act.markers import MARKER_PREFIX, read_markers, write_marker
from etcdagent.act.run_report import Outcome
from etcdagent.etcd.client import ClusterClient, MemberClient
from etcdagent.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def client(etcd_cluster: EtcdCluster) -> Iterator[MemberClient]:
    settings = load_settings({"connection": {"endpoints": ",".join(etcd_cluster.endpoints)}})
    with ClusterClient(settings) as cluster_client:
        yield cluster_client.member(etcd_cluster.endpoints[0])


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def ages(member: MemberClient) -> dict[str, float]:
    return {m.key or "": m.age for m in read_markers(member).markers}


def transfer_leadership(cluster: EtcdCluster) -> EtcdMember:
    leader = cluster.leader()
    target = next(m for m in cluster.members if m is not leader)
    cluster.request(
        leader, "maintenance/transfer-leadership", {"targetID": str(target.member_id())}
    )
    deadline = time.monotonic() + 10
    while cluster.leader() is not target:
        assert time.monotonic() < deadline, "leadership did not move"
        time.sleep(0.05)
    return target


def test_a_markers_age_is_how_long_ago_etcd_granted_its_lease(
    etcd_cluster: EtcdCluster, client: MemberClient
) -> None:
    written = time.monotonic()
    marker = write_marker(client, 300, "test", datetime(2000, 1, 1, tzinfo=UTC))
    time.sleep(3.5)
    read_at = time.monotonic()
    [found] = read_markers(client).markers
    elapsed = read_at - written
    print(f"etcd {etcd_cluster.version}: age {found.age} s, {elapsed:.2f} s after the write")
    assert found.key == marker.key
    assert found.revision == marker.revision
    assert found.age <= elapsed  # never older than the truth
    assert found.age >= elapsed - 2.5  # and not far off it: it is etcd's clock
    [kv] = client.range_prefix(MARKER_PREFIX).kvs
    assert kv.version == 2
    assert kv.lease == marker.lease
    assert json.loads(kv.value)["lease"] == str(marker.lease)
    # The writer's wall clock (here: the year 2000) plays no part in the age.
    assert json.loads(kv.value)["wall"].startswith("2000-01-01")


def test_a_moved_or_restarted_leader_makes_markers_look_younger_never_older(
    etcd_cluster: EtcdCluster, client: MemberClient
) -> None:
    cluster = etcd_cluster
    written = time.monotonic()
    write_marker(client, 300, "test", datetime.now(UTC))
    time.sleep(4)
    before = ages(client)
    transfer_leadership(cluster)
    moved = ages(client)
    elapsed = time.monotonic() - written
    print(f"etcd {cluster.version}: before the move {before}, after {moved} ({elapsed:.1f} s)")
    assert moved.keys() == before.keys()
    for key, age in moved.items():
        assert age <= before[key] + 0.5  # younger, or the same: never older
        assert age <= elapsed
    time.sleep(3)
    settled = ages(client)
    cluster.leader().restart()
    cluster.leader()
    restarted = ages(client)
    elapsed = time.monotonic() - written
    print(
        f"etcd {cluster.version}: before restarting the leader {settled}, after {restarted} "
        f"({elapsed:.1f} s)"
    )
    assert restarted.keys() == before.keys()
    for key, age in restarted.items():
        assert age <= settled[key] + 0.5
        assert age <= elapsed


def test_rewritten_legacy_and_foreign_markers_are_ignored_and_pruned(
    etcd_cluster: EtcdCluster,
) -> None:
    """Each of these claims an old revision is very old; none may be compacted to."""
    cluster = etcd_cluster
    legacy = f"{MARKER_PREFIX}{946_684_800_000:015d}"  # the old scheme: 2000-01-01 in the name
    cluster.put(legacy, json.dumps({"time": "2000-01-01T00:00:00+00:00", "by": "old agent"}))
    # A foreign key under a lease, put once (version 1): not the protocol.
    grant = cluster.request(cluster.members[0], "lease/grant", {"TTL": "3600"})
    foreign = f"{MARKER_PREFIX}foreign"
    cluster.request(
        cluster.members[0],
        "kv/put",
        {
            "key": b64(foreign),
            "value": b64(json.dumps({"lease": grant["ID"]})),
            "lease": grant["ID"],
        },
    )
    cut_short = f"{MARKER_PREFIX}cut-short"
    cluster.put(cut_short, json.dumps({"by": "crashed", "pending": True}))
    for i in range(20):
        cluster.put("/known/a", f"value {i}")
    settings = load_settings(
        {"connection": {"endpoints": ",".join(cluster.endpoints)}, "compaction": {"retain": "2s"}}
    )
    with ClusterClient(settings) as cluster_client:
        member = cluster_client.member(cluster.endpoints[0])
        # A valid marker rewritten under its old name (a third put): version 3.
        rewritten = write_marker(member, 2, "test", datetime.now(UTC))
        cluster.request(
            cluster.members[0],
            "kv/put",
            {
                "key": b64(rewritten.key or ""),
                "value": b64(json.dumps({"lease": str(rewritten.lease)})),
                "lease": str(rewritten.lease),
            },
        )
        time.sleep(4)
        assert read_markers(member).markers == []
        report = Maintenance(cluster_client, settings).compact()
    assert report.outcome is Outcome.NOTHING_TO_DO, report.reason
    assert "no revision is known to be older than 2s" in (report.reason or "")
    kvs = client_keys(cluster)
    assert legacy not in kvs
    assert foreign not in kvs
    assert (rewritten.key or "") not in kvs
    assert cut_short in kvs  # a marker being written right now is left to its writer...
    # ...until a valid marker newer than it exists (this run wrote one).
    with ClusterClient(settings) as cluster_client:
        Maintenance(cluster_client, settings).compact()
    assert cut_short not in client_keys(cluster)
    # Nothing was compacted: the oldest history is still readable.
    cluster.request(cluster.members[0], "kv/range", {"key": b64("/known/a"), "revision": "2"})


def client_keys(cluster: EtcdCluster) -> set[str]:
    answer = cluster.request(
        cluster.members[0],
        "kv/range",
        {"key": b64(MARKER_PREFIX), "range_end": b64(MARKER_PREFIX[:-1] + "0"), "keys_only": True},
    )
    return {base64.b64decode(kv["key"]).decode() for kv in answer.get("kvs", [])}
