"""`etcdagent compact | defrag | recover` against real 3-member clusters.

What the tests believe about defragmentation comes from etcd's own log lines (see
etcdagent_testing.etcdlog), not from etcdagent's output.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from etcdagent_testing import EtcdCluster, EtcdRequestError
from etcdagent_testing.etcdlog import defrag_intervals, max_concurrent_defrags, role_changes

from etcdagent.act.lock import LOCK_KEY, MaintenanceLock
from etcdagent.act.maintenance import Maintenance
from etcdagent.act.run_report import Outcome, PhasePlan, PlanListener
from etcdagent.decide.plan import Step, StepKind
from etcdagent.etcd.client import ClusterClient
from etcdagent.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ClusterFactory = Callable[..., EtcdCluster]

# Small test databases: lower the "worth it" size so the default rule applies to them.
SMALL = {"ETCDAGENT_DEFRAG__MIN_DB_SIZE": "1MiB", "ETCDAGENT_DEFRAG__WAIT_BETWEEN": "200ms"}


def agent(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, **SMALL, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "etcdagent", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
    )  # fmt: skip


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    proc = agent(*args, "--output", "json", env=env)
    out, err = proc.communicate(timeout=150)
    assert out, err
    return proc.returncode, json.loads(out), err


def fragment(cluster: EtcdCluster) -> dict[str, str]:
    """Known keys (to read back after maintenance) and overwritten garbage (to reclaim)."""
    known = {f"/known/{i:03d}": f"value-{i}-{os.urandom(4).hex()}" for i in range(30)}
    for key, value in known.items():
        cluster.put(key, value)
    cluster.write_garbage(n_keys=200, value_size=16 * 1024, rounds=4)
    return known


def assert_intact(cluster: EtcdCluster, known: dict[str, str]) -> None:
    for key, value in known.items():
        assert cluster.get(key) == value.encode(), key


def reserved_keys(cluster: EtcdCluster) -> int:
    prefix = b"/etcdagent/"
    answer = cluster.request(
        cluster.members[0],
        "kv/range",
        {
            "key": base64.b64encode(prefix).decode(),
            "range_end": base64.b64encode(b"/etcdagent0").decode(),
            "count_only": True,
        },
    )
    return int(answer.get("count", 0))


def sizes(cluster: EtcdCluster) -> dict[str, int]:
    return {m.name: int(m.status()["dbSize"]) for m in cluster.members}


def compact_revision(cluster: EtcdCluster) -> int:
    settings = load_settings({"connection": {"endpoints": cluster.endpoints[0]}})
    with ClusterClient(settings) as client:
        metrics = client.member(cluster.endpoints[0]).metrics()
    return metrics.compact_revision or 0


def test_dry_run_changes_nothing_and_shows_what_the_real_run_does(
    etcd_cluster: EtcdCluster,
) -> None:
    cluster = etcd_cluster
    fragment(cluster)
    code, _, _ = run("compact", "--endpoints", cluster.endpoints[0], "--retain-revisions", "0")
    assert code == 0
    cluster.put("/known/refresh", "sizes")  # etcd refreshes "in use" at its next commit
    leader = cluster.leader().name
    before = (sizes(cluster), compact_revision(cluster), reserved_keys(cluster))

    code, dry, _ = run("defrag", "--endpoints", cluster.endpoints[0], "--dry-run", "--no-compact")

    assert code == 0
    assert dry["dry_run"] is True and dry["results"] == []
    planned = [(s["kind"], s["member_name"]) for s in dry["plans"][-1]["plan"]["steps"]]
    # defrag.move_leader (the default): leadership moves before the leader's own defrag.
    assert [kind for kind, _ in planned] == ["defrag", "defrag", "move-leader", "defrag"]
    assert planned[-1] == ("defrag", leader)
    for command in (
        ["defrag", "--retain-revisions", "0"],
        ["compact", "--retain-revisions", "0"],
        ["recover"],
    ):
        code, _, _ = run(*command, "--endpoints", cluster.endpoints[0], "--dry-run")
        assert code == 0
    assert (sizes(cluster), compact_revision(cluster), reserved_keys(cluster)) == before
    assert cluster.leader().name == leader
    assert defrag_intervals(cluster) == []

    code, real, _ = run("defrag", "--endpoints", cluster.endpoints[0], "--no-compact")

    assert code == 0
    assert [(r["step"]["kind"], r["step"]["member_name"]) for r in real["results"]] == planned
    assert [i.member for i in defrag_intervals(cluster)] == [
        name for kind, name in planned if kind == "defrag"
    ]


def test_compaction_keeps_the_revisions_retention(etcd_cluster: EtcdCluster) -> None:
    cluster = etcd_cluster
    fragment(cluster)
    current = cluster.put("/known/last", "x")

    code, report, _ = run(
        "compact", "--endpoints", cluster.endpoints[1], "--retain-revisions", "10"
    )

    assert code == 0, report
    target = current - 10
    assert report["results"][0]["step"]["revision"] == target
    key = base64.b64encode(b"/known/last").decode()
    # Inside the retention: still readable at that revision; outside: compacted.
    cluster.request(cluster.members[2], "kv/range", {"key": key, "revision": str(target)})
    with pytest.raises(EtcdRequestError, match="compacted"):
        cluster.request(cluster.members[2], "kv/range", {"key": key, "revision": str(target - 1)})
    assert all(compact_revision_of(cluster, i) >= target for i in range(3))


def compact_revision_of(cluster: EtcdCluster, index: int) -> int:
    settings = load_settings({"connection": {"endpoints": cluster.endpoints[index]}})
    with ClusterClient(settings) as client:
        return client.member(cluster.endpoints[index]).metrics().compact_revision or 0


def test_time_retention_uses_markers_and_never_compacts_younger_history(
    etcd_cluster: EtcdCluster,
) -> None:
    """Markers are aged by etcd's lease clock: real seconds, whatever the agent's clock says
    (here it is stuck in 2000, which the old timestamp-named markers would have believed)."""
    cluster = etcd_cluster
    settings = load_settings(
        {"connection": {"endpoints": cluster.endpoints[0]}, "compaction": {"retain": "3s"}}
    )
    stuck = datetime(2000, 1, 1, tzinfo=UTC)
    key = base64.b64encode(b"/known/a").decode()

    def agent_run() -> Maintenance:
        return Maintenance(ClusterClient(settings), settings, clock=lambda: stuck)

    cluster.put("/known/a", "before the first run")
    first = agent_run().compact()
    assert first.outcome is Outcome.NOTHING_TO_DO
    assert "no revision is known to be older than 3s" in (first.reason or "")
    # The marker is two puts (created, then under its lease): its revision is the first.
    marker_revision = cluster.put("/known/a", "after the first run") - 2
    written = time.monotonic()

    assert agent_run().compact().outcome is Outcome.NOTHING_TO_DO  # the marker is too young
    recent = cluster.put("/known/a", "after the second run")
    time.sleep(max(0.0, written + 5 - time.monotonic()))  # 3 s, and etcd's whole seconds

    third = agent_run().compact()

    assert third.outcome is Outcome.DONE, third.reason
    assert third.results[0].step.revision == marker_revision
    cluster.request(cluster.members[0], "kv/range", {"key": key, "revision": str(recent)})
    cluster.request(cluster.members[0], "kv/range", {"key": key, "revision": str(marker_revision)})
    with pytest.raises(EtcdRequestError, match="compacted"):
        cluster.request(
            cluster.members[0], "kv/range", {"key": key, "revision": str(marker_revision - 1)}
        )


def test_defrag_followers_first_leader_last_one_at_a_time(etcd_cluster: EtcdCluster) -> None:
    cluster = etcd_cluster
    known = fragment(cluster)
    leader = cluster.leader().name
    before = sizes(cluster)

    code, report, err = run(
        "defrag", "--endpoints", cluster.endpoints[0], "--retain-revisions", "0"
    )

    assert code == 0, (report, err)
    assert report["outcome"] == "done"
    intervals = defrag_intervals(cluster)
    assert len(intervals) == 3 and all(i.end is not None for i in intervals)
    assert max_concurrent_defrags(intervals) == 1
    assert intervals[-1].member == leader
    after = sizes(cluster)
    assert all(after[name] < before[name] for name in before)
    defrags = [r for r in report["results"] if r["step"]["kind"] == "defrag"]
    assert [r["status"] for r in defrags] == ["done"] * 3
    assert report["reclaimed_total"] == sum(r["reclaimed"] for r in defrags) > 0
    cluster.wait_healthy()
    assert_intact(cluster, known)


def test_move_leader_moves_leadership_before_the_old_leaders_defrag(
    etcd_cluster: EtcdCluster,
) -> None:
    cluster = etcd_cluster
    known = fragment(cluster)
    old = cluster.leader()

    code, report, err = run(
        "defrag", "--endpoints", cluster.endpoints[0], "--retain-revisions", "0", "--move-leader"
    )

    assert code == 0, (report, err)
    kinds = [(r["step"]["kind"], r["step"]["member_name"]) for r in report["results"]]
    assert kinds.index(("move-leader", old.name)) < kinds.index(("defrag", old.name))
    old_defrag = next(i for i in defrag_intervals(cluster) if i.member == old.name)
    stepped_down = [t for t, role in role_changes(old) if role == "follower"]
    assert any(t <= old_defrag.start for t in stepped_down[1:])  # [0] is the start-up
    assert cluster.leader() is not old
    assert max_concurrent_defrags(defrag_intervals(cluster)) == 1
    assert_intact(cluster, known)


def test_killed_member_refuses_and_nothing_is_defragmented(etcd_cluster: EtcdCluster) -> None:
    cluster = etcd_cluster
    fragment(cluster)
    victim = cluster.followers()[0]
    victim.kill()

    code, report, _ = run(
        "defrag", "--endpoints", cluster.endpoints[0] if victim.name != "m1"
        else cluster.endpoints[1], "--retain-revisions", "0", "--retry-deadline", "200ms",
    )  # fmt: skip

    assert code == 1
    assert report["outcome"] == "refused"
    assert f"{victim.name} does not answer" in report["reason"]
    assert defrag_intervals(cluster) == []


def test_member_stopped_mid_sweep_stops_it_safely(etcd_cluster: EtcdCluster) -> None:
    cluster = etcd_cluster
    known = fragment(cluster)
    proc = agent(
        "defrag",
        "--endpoints",
        ",".join(cluster.endpoints),
        "--retain-revisions",
        "0",
        "--request-timeout",
        "1s",
        "--retry-deadline",
        "500ms",
        "--output",
        "json",
        env={"ETCDAGENT_DEFRAG__WAIT_BETWEEN": "3s"},
    )
    deadline = time.monotonic() + 60
    while not [i for i in defrag_intervals(cluster) if i.end is not None]:
        assert time.monotonic() < deadline, "no defragmentation finished"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    done = {i.member for i in defrag_intervals(cluster)}
    victim = next(m for m in cluster.followers() if m.name not in done)
    victim.stop()
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        victim.cont()

    assert proc.returncode == 1, err
    report = json.loads(out)
    assert report["outcome"] in ("refused", "failed")
    assert victim.name in report["reason"]
    assert victim.name not in {i.member for i in defrag_intervals(cluster)}
    assert max_concurrent_defrags(defrag_intervals(cluster)) == 1
    cluster.wait_healthy()
    assert_intact(cluster, known)


def test_two_agents_never_defragment_at_the_same_time(etcd_cluster: EtcdCluster) -> None:
    cluster = etcd_cluster
    known = fragment(cluster)
    args = (
        "defrag",
        "--endpoints",
        ",".join(cluster.endpoints),
        "--force",
        "--no-compact",
        "--lock-timeout",
        "90s",
        "--output",
        "json",
    )
    first, second = agent(*args), agent(*args)
    results = [p.communicate(timeout=150) for p in (first, second)]

    assert (first.returncode, second.returncode) == (0, 0), results
    intervals = defrag_intervals(cluster)
    assert len(intervals) == 6
    assert max_concurrent_defrags(intervals) == 1
    assert_intact(cluster, known)


def test_lock_held_elsewhere_refuses_with_the_holder(etcd_cluster: EtcdCluster) -> None:
    cluster = etcd_cluster
    settings = load_settings({"connection": {"endpoints": cluster.endpoints[0]}})
    with ClusterClient(settings) as client:
        lock = MaintenanceLock(
            lambda: [client.member(cluster.endpoints[0])], holder="operator's shell on cp-1"
        )
        lock.acquire(timeout=0)
        try:
            code, report, _ = run(
                "defrag",
                "--endpoints",
                cluster.endpoints[1],
                "--force",
                "--no-compact",
                "--lock-timeout",
                "0",
            )
        finally:
            lock.release()
    assert code == 1
    assert report["reason"] == "maintenance already running by operator's shell on cp-1"
    assert defrag_intervals(cluster) == []


class RevokesTheLockAtTheLastStep(PlanListener):
    """Revokes the maintenance lock's lease as the run's last step starts, past every lock check
    of the run: in life, a lease that expired during the last defrag (a leader slow to answer
    keep-alives), before any renewal heard of it."""

    def __init__(self, cluster: EtcdCluster) -> None:
        self.cluster = cluster
        self.last: Step | None = None
        self.revoked: int | None = None

    def plan(self, phase: PhasePlan) -> None:
        if phase.plan.steps:
            self.last = phase.plan.steps[-1]

    def started(self, step: Step) -> None:
        if step != self.last or self.revoked is not None:
            return
        key = base64.b64encode(LOCK_KEY.encode()).decode()
        answer = self.cluster.request(self.cluster.members[0], "kv/range", {"key": key})
        self.revoked = int(answer["kvs"][0]["lease"])
        self.cluster.request(self.cluster.members[0], "kv/lease/revoke", {"ID": str(self.revoked)})


def test_a_lock_lost_during_the_last_step_is_told_in_the_report(etcd_cluster: EtcdCluster) -> None:
    cluster = etcd_cluster
    fragment(cluster)
    settings = load_settings(
        {
            "connection": {"endpoints": ",".join(cluster.endpoints)},
            "defrag": {"min_db_size": "1MiB", "wait_between": "200ms", "compact_first": False},
        }
    )
    listener = RevokesTheLockAtTheLastStep(cluster)
    with ClusterClient(settings) as client:
        report = Maintenance(client, settings, listener=listener).defrag(force=True)

    assert listener.revoked is not None, report
    assert report.outcome is Outcome.DONE, report  # the work was done: all three members
    assert [r.step.kind for r in report.results].count(StepKind.DEFRAG) == 3
    lost = [n for n in report.notes if n.startswith("the maintenance lock was lost during the run")]
    assert lost and "its key is gone" in lost[0], report.notes
    assert max_concurrent_defrags(defrag_intervals(cluster)) == 1


def nospace(cluster: EtcdCluster, n_keys: int, rounds: int) -> None:
    with pytest.raises(EtcdRequestError, match="database space exceeded"):
        cluster.write_garbage(n_keys=n_keys, value_size=64 * 1024, rounds=rounds)
    assert cluster.alarms()


def test_nospace_recovery_ends_with_writes_working(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = etcd_cluster_factory(size=3, quota_backend_bytes=16 * 1024**2)
    known = {f"/known/{i}": f"v{i}" for i in range(10)}
    for key, value in known.items():
        cluster.put(key, value)
    nospace(cluster, n_keys=50, rounds=20)

    code, report, err = run("recover", "--endpoints", cluster.endpoints[0])

    assert code == 0, (report, err)
    kinds = [r["step"]["kind"] for r in report["results"]]
    assert kinds[0] == "compact" and kinds[-1] == "probe-write"
    assert kinds.count("defrag") == 3 and "disarm" in kinds
    assert cluster.alarms() == []
    assert cluster.put("/known/after", "ok") > 0
    assert max_concurrent_defrags(defrag_intervals(cluster)) == 1
    assert_intact(cluster, known)

    code, report, _ = run("recover", "--endpoints", cluster.endpoints[0])
    assert code == 0
    assert report["outcome"] == "nothing-to-do"


def test_nospace_with_too_much_live_data_is_not_disarmed(
    etcd_cluster_factory: ClusterFactory,
) -> None:
    cluster = etcd_cluster_factory(size=3, quota_backend_bytes=16 * 1024**2)
    # An agent that ran while writes worked keeps spare keys: deleting one under NOSPACE makes
    # etcd's in-use sizes current, so the refusal comes before any defrag.
    cluster.put("/known/a", "1")
    cluster.put("/known/a", "2")
    assert run("compact", "--endpoints", cluster.endpoints[0], "--retain-revisions", "0")[0] == 0
    nospace(cluster, n_keys=400, rounds=1)  # unique keys: the live data fills the file

    # Where exactly etcd stops a write differs between versions; with the bar at half the quota
    # the live data is always above it here (the default, 90%, is covered by unit tests).
    code, report, _ = run(
        "recover",
        "--endpoints",
        cluster.endpoints[0],
        env={"ETCDAGENT_DEFRAG__RECOVER_MAX_QUOTA_USE": "0.5"},
    )

    assert code == 1
    assert report["outcome"] == "refused"
    assert "delete at least" in report["reason"]
    assert cluster.alarms() != []  # still armed: disarming would only re-raise it
    assert defrag_intervals(cluster) == []  # decided after compaction, before any defrag


def test_sigterm_mid_sweep_finishes_the_current_step_and_releases_the_lock(
    etcd_cluster: EtcdCluster,
) -> None:
    cluster = etcd_cluster
    fragment(cluster)
    proc = agent(
        "defrag",
        "--endpoints",
        cluster.endpoints[0],
        "--retain-revisions",
        "0",
        "--output",
        "json",
        env={"ETCDAGENT_DEFRAG__WAIT_BETWEEN": "30s"},
    )
    deadline = time.monotonic() + 60
    while not [i for i in defrag_intervals(cluster) if i.end is not None]:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)

    assert proc.returncode == 1
    report = json.loads(out)
    assert report["outcome"] == "interrupted"
    statuses = [r["status"] for r in report["results"] if r["step"]["kind"] == "defrag"]
    assert statuses == ["done", "not-started", "not-started"]
    assert len(defrag_intervals(cluster)) == 1
    # The lock was released: another run can start at once.
    code, _, _ = run(
        "defrag",
        "--endpoints",
        cluster.endpoints[0],
        "--no-compact",
        "--lock-timeout",
        "0",
        "--dry-run",
    )
    assert code == 0
    assert reserved_lock_free(cluster)


def reserved_lock_free(cluster: EtcdCluster) -> bool:
    key = base64.b64encode(b"/etcdagent/lock").decode()
    return "kvs" not in cluster.request(cluster.members[0], "kv/range", {"key": key})


def test_timed_out_defrag_is_not_retried_but_waited_for(etcd_cluster: EtcdCluster) -> None:
    """A client-side timeout does not cancel a defrag: the agent must not send a second one."""
    cluster = etcd_cluster
    known = fragment(cluster)
    cluster.write_garbage(n_keys=300, value_size=64 * 1024, rounds=3)

    code, report, err = run(
        "defrag", "--endpoints", cluster.endpoints[0], "--retain-revisions", "0",
        env={"ETCDAGENT_DEFRAG__TIMEOUT_MIN": "1ms", "ETCDAGENT_DEFRAG__TIMEOUT_MAX": "1ms"},
    )  # fmt: skip

    assert code == 0, (report, err)
    defrags = [r for r in report["results"] if r["step"]["kind"] == "defrag"]
    assert [r["status"] for r in defrags] == ["done"] * 3
    assert all("instead of retrying" in (r["warning"] or "") for r in defrags)
    assert all(r["reclaimed"] > 0 for r in defrags)  # the member finished it anyway
    intervals = defrag_intervals(cluster)
    assert sorted(i.member for i in intervals) == ["m1", "m2", "m3"]  # one each: no retry
    assert max_concurrent_defrags(intervals) == 1
    assert_intact(cluster, known)
