"""A user without the root role, against real auth clusters: one line naming the call and the role.

etcd requires the root role for Defragment (and HashKV) on every version, for Compact from 3.5.28
and 3.6.9, and for Status on 3.5.28-3.5.31 and 3.6.0-3.6.11 only (facts of etcd's source; the
expectations below are written from them, independently of ``etcd.versions``). The user has a
read/write role on the agent's own keys (/etcdagent/), so the lock works and the refusal is the
call's own.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result
from etcdagent_testing import EtcdCluster
from etcdagent_testing.etcdlog import defrag_intervals

from etcdagent.cli import cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ClusterFactory = Callable[..., EtcdCluster]
USER, PASSWORD = "ops", "ops-Pa55-secret"


def _release(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in version.split("-")[0].split(".")[:3])
    return major, minor, patch


def status_needs_root(version: str) -> bool:
    v = _release(version)
    return (3, 5, 28) <= v <= (3, 5, 31) or (3, 6, 0) <= v <= (3, 6, 11) or (3, 4, 42) <= v < (3, 5)


def compact_needs_root(version: str) -> bool:
    v = _release(version)
    return v >= (3, 6, 9) or (3, 5, 28) <= v < (3, 6) or (3, 4, 42) <= v < (3, 5)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def cluster_with_a_user(factory: ClusterFactory) -> EtcdCluster:
    """An auth cluster with user ``ops``: read/write on /etcdagent/, no root role."""
    cluster = factory(3, auth=True)
    member = cluster.members[0]
    token = cluster.root_token(member)
    permission = {
        "permType": "READWRITE",
        "key": _b64("/etcdagent/"),
        "range_end": _b64("/etcdagent0"),
    }
    setup: list[tuple[str, dict[str, Any]]] = [
        ("auth/role/add", {"name": "agent"}),
        ("auth/role/grant", {"name": "agent", "perm": permission}),
        ("auth/user/add", {"name": USER, "password": PASSWORD}),
        ("auth/user/grant", {"user": USER, "role": "agent"}),
    ]
    for path, body in setup:
        cluster.request(member, path, body, token=token)
    for i in range(40):  # history to compact, free pages to defragment
        cluster.put(f"/app/{i % 4}", "x" * 2000)
    return cluster


def as_user(cluster: EtcdCluster, *args: str) -> Result:
    result = CliRunner().invoke(
        cli,
        [*args, "--endpoints", cluster.endpoints[0], "--user", USER],
        env={"ETCDAGENT_AUTH__PASSWORD": PASSWORD},
        catch_exceptions=False,
    )
    assert PASSWORD not in result.output
    assert "Traceback" not in result.output
    return result


def status_refused(url: str) -> str:
    return (
        f"{url}: status refused: user '{USER}' lacks the root role, which etcd requires for "
        f"Status (on 3.4.42+, 3.5.28-3.5.31 and 3.6.0-3.6.11; etcdctl user grant-role {USER} root)"
    )


def test_status_as_a_user_without_the_root_role(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = cluster_with_a_user(etcd_cluster_factory)

    result = as_user(cluster, "status", "--output", "json")

    doc = json.loads(result.stdout)
    rows = {m["name"]: m for m in doc["members"]}
    if not status_needs_root(cluster.version):
        assert result.exit_code == 0, result.output
        assert doc["verdict"] == "healthy"
        return
    assert result.exit_code == 1
    for member in cluster.members:
        assert rows[member.name]["error"] == status_refused(member.client_url)


def test_defrag_as_a_user_without_the_root_role(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = cluster_with_a_user(etcd_cluster_factory)

    result = as_user(cluster, "defrag", "--force", "--no-compact", "--wait-between", "0s")

    assert result.exit_code == 1
    assert defrag_intervals(cluster) == []  # etcd refused before starting one
    lines = result.stdout.splitlines()
    if status_needs_root(cluster.version):
        (reason,) = [line for line in lines if line.startswith("  reason: ")]
        assert status_refused(cluster.members[0].client_url) in reason
        return
    (failed,) = [line for line in lines if line.startswith("   failed in ")]
    first = next(m for m in cluster.members if f"{m.client_url}: defragment" in failed)
    assert failed.endswith(
        f": {first.client_url}: defragment refused: user '{USER}' lacks the root role, which "
        f"etcd requires for Defragment (etcdctl user grant-role {USER} root)"
    ), failed


def test_compact_as_a_user_without_the_root_role(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = cluster_with_a_user(etcd_cluster_factory)
    before = cluster.members[0].status()

    # The user may not read kube-apiserver's compact_rev_key (it reads and writes /app/ only):
    # in auto mode whether an apiserver compacts is unknown, so nothing is compacted, and why.
    auto = as_user(cluster, "compact", "--retain-revisions", "1")
    if not status_needs_root(cluster.version):
        assert auto.exit_code == 0, auto.output
        assert "compact_rev_key not readable" in auto.stdout, auto.stdout
        assert "give the agent's user read and write access to compact_rev_key" in auto.stdout
    assert "compacted to revision" not in auto.stdout

    # Forced, the compaction itself meets etcd's role check.
    result = as_user(cluster, "compact", "--retain-revisions", "1", "--compaction-mode", "always")
    lines = result.stdout.splitlines()
    compacted = "compacted to revision" in result.stdout
    if status_needs_root(cluster.version):
        assert result.exit_code == 1
        (reason,) = [line for line in lines if line.startswith("  reason: ")]
        assert status_refused(cluster.members[0].client_url) in reason
    elif compact_needs_root(cluster.version):
        assert result.exit_code == 1
        (failed,) = [line for line in lines if line.startswith("   failed in ")]
        assert failed.endswith(
            f"compact refused: user '{USER}' lacks the root role, which etcd requires for "
            f"Compact (on 3.4.42+, 3.5.28+ and 3.6.9+; etcdctl user grant-role {USER} root)"
        ), failed
    else:
        assert result.exit_code == 0, result.output
        assert compacted
        return
    assert not compacted
    cluster.put("/app/after", "1")  # the history is still there: an old revision reads back
    old = int(before["header"]["revision"]) - 1
    body = {"key": _b64("/app/0"), "revision": str(old)}
    answer = cluster.request(cluster.members[0], "kv/range", body, token=cluster.root_token())
    assert answer.get("kvs"), answer
