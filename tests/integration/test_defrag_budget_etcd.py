"""The defrag budget and the leadership move on real clusters.

- ``defrag --dry-run`` with a budget shorter than a member's estimate skips that member, saying
  the estimate, the budget and the offline procedure; it is not a failure (exit 0).
- A real defrag leaves a record per member under /etcdagent/defrag/ and the next plan estimates
  from it (the rate measured there), not from defrag.estimated_rate.
- By default (defrag.move_leader) leadership moves before the leader's defrag, so the old leader
  is defragmented as a follower (etcd's own log says when it stepped down and when it
  defragmented).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from etcdagent_testing import EtcdCluster
from etcdagent_testing.etcdlog import defrag_intervals, max_concurrent_defrags, role_changes

from etcdagent.decide.defrag_budget import estimate_defrag
from etcdagent.etcd.client import ClusterClient
from etcdagent.observe.gather import take_snapshot
from etcdagent.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SMALL = {"ETCDAGENT_DEFRAG__MIN_DB_SIZE": "1MiB", "ETCDAGENT_DEFRAG__WAIT_BETWEEN": "200ms"}


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "etcdagent", *args, "--output", "json"],
        capture_output=True, text=True, timeout=150, env={**os.environ, **SMALL, **(env or {})},
    )  # fmt: skip
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def fragment(cluster: EtcdCluster) -> None:
    cluster.write_garbage(n_keys=200, value_size=16 * 1024, rounds=4)


# A dry run of `defrag --force` (every voting member, worth it or not) without compaction: what
# the budget alone decides.


def last_defrag_plan(report: dict[str, Any]) -> dict[str, Any]:
    plans = [p for p in report["plans"] if p["phase"] == "defrag"]
    return plans[-1]["plan"]  # type: ignore[no-any-return]


def test_a_dry_run_over_budget_skips_each_member_with_the_reason(
    etcd_cluster: EtcdCluster,
) -> None:
    cluster = etcd_cluster
    fragment(cluster)

    code, report, err = run(
        "defrag", "--endpoints", cluster.endpoints[0], "--dry-run", "--force", "--no-compact",
        env={"ETCDAGENT_DEFRAG__BUDGET": "1ms"},
    )  # fmt: skip

    assert code == 0, (report, err)
    assert report["outcome"] == "nothing-to-do"
    plan = last_defrag_plan(report)
    assert plan["steps"] == []
    assert sorted(s["member_name"] for s in plan["skipped"]) == ["m1", "m2", "m3"]
    for skip in plan["skipped"]:
        assert "over the 1ms budget (defrag.budget)" in skip["reason"]
        assert "defrag.estimated_rate" in skip["reason"]
        assert "etcdutl defrag --data-dir" in skip["reason"]
    assert defrag_intervals(cluster) == []


def test_a_real_defrag_is_recorded_and_estimates_the_next(etcd_cluster: EtcdCluster) -> None:
    cluster = etcd_cluster
    fragment(cluster)

    code, report, err = run("defrag", "--endpoints", cluster.endpoints[0], "--retain-revisions=0")

    assert code == 0, (report, err)
    ids = {m.name: m.member_id() for m in cluster.members}
    for name, member_id in ids.items():
        raw = cluster.get(f"/etcdagent/defrag/{member_id:x}")
        assert raw is not None, name
        record = json.loads(raw)
        assert record["in_use"] > 0 and record["duration"] > 0 and record["finished_at"]
        assert record["in_flight"] is None
    settings = load_settings(
        {"connection": {"endpoints": [cluster.endpoints[0]]}, "defrag": {"min_db_size": "1MiB"}}
    )
    with ClusterClient(settings) as client:
        snapshot = take_snapshot(client)
    for snap in snapshot.members:
        assert snap.defrag_record is not None
        assert "the rate of its last defrag" in estimate_defrag(snap, settings.defrag).basis

    # The next plan (forced: nothing is worth it any more) says so in its skip reasons.
    code, report, err = run(
        "defrag", "--endpoints", cluster.endpoints[0], "--dry-run", "--force", "--no-compact",
        env={"ETCDAGENT_DEFRAG__BUDGET": "1ms"},
    )  # fmt: skip
    assert code == 0, (report, err)
    skipped = last_defrag_plan(report)["skipped"]
    assert len(skipped) == 3
    assert all("the rate of its last defrag" in s["reason"] for s in skipped)


def test_by_default_the_old_leader_is_defragmented_as_a_follower(
    etcd_cluster: EtcdCluster,
) -> None:
    cluster = etcd_cluster
    fragment(cluster)
    old = cluster.leader()

    code, report, err = run("defrag", "--endpoints", cluster.endpoints[0], "--retain-revisions=0")

    assert code == 0, (report, err)
    kinds = [(r["step"]["kind"], r["step"]["member_name"]) for r in report["results"]]
    assert kinds.index(("move-leader", old.name)) < kinds.index(("defrag", old.name))
    move = next(r for r in report["results"] if r["step"]["kind"] == "move-leader")
    done_before = [n for k, n in kinds[: kinds.index(("move-leader", old.name))] if k == "defrag"]
    assert move["step"]["target_name"] == done_before[-1]  # a member already defragmented
    old_defrag = next(i for i in defrag_intervals(cluster) if i.member == old.name)
    stepped_down = [t for t, role in role_changes(old) if role == "follower"]
    assert any(t <= old_defrag.start for t in stepped_down[1:])  # [0] is the start-up
    assert cluster.leader() is not old
    assert max_concurrent_defrags(defrag_intervals(cluster)) == 1
