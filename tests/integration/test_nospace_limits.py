"""NOSPACE recovery that knows when it cannot help, on real clusters.

- Live data that fills the quota: refused once, after compaction and before any defrag (etcd's
  own log shows no defragment line), backed off on the next cycles, retried when sizes change.
- Disarm by file size: a member whose defrag was skipped keeps the alarm armed.
- A compaction longer than its request timeout is watched to its end: no defrag starts before
  every member has logged "finished scheduled compaction", or the run stops.
- A learner is defragmented too (first), so it does not raise NOSPACE again.

What the tests believe about defragmentation and compaction comes from etcd's own log lines.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from etcdagent_testing import EtcdCluster, EtcdMember, EtcdRequestError, etcd_version
from etcdagent_testing.clock import FakeClock
from etcdagent_testing.etcdlog import defrag_intervals, max_concurrent_defrags
from etcdagent_testing.learner import add_learner

import etcdagent.act.maintenance as maintenance_module
from etcdagent.act.maintenance import Maintenance
from etcdagent.act.run_report import Outcome
from etcdagent.agent.cycle import CycleRunner
from etcdagent.decide.plan import Plan, StepKind
from etcdagent.decide.recovery import UNRECOVERABLE, plan_recover
from etcdagent.etcd.client import ClusterClient
from etcdagent.observe.snapshot import ClusterSnapshot
from etcdagent.settings import Settings, load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ClusterFactory = Callable[..., EtcdCluster]
QUOTA = 16 * 1024**2
NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SMALL = {"min_db_size": "1MiB", "wait_between": "100ms"}


class Ticking:
    """A monotonic clock the test moves; each reading moves it 10 ms, so waits still end."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.01
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings_for(cluster: EtcdCluster, **groups: dict[str, Any]) -> Settings:
    base: dict[str, Any] = {
        "connection": {"endpoints": ",".join(cluster.endpoints[:3])},
        "compaction": {"retain_revisions": 0},
        "defrag": dict(SMALL),
        "daemon": {"listen": "127.0.0.1:0", "interval": "1s"},
    }
    for group, values in groups.items():
        base[group] = {**base.get(group, {}), **values}
    return load_settings(base)


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    full_env = {
        **os.environ,
        "ETCDAGENT_DEFRAG__MIN_DB_SIZE": "1MiB",
        "ETCDAGENT_DEFRAG__WAIT_BETWEEN": "100ms",
        **(env or {}),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "etcdagent", *args, "--output", "json"],
        capture_output=True, text=True, env=full_env, timeout=180,
    )  # fmt: skip
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def agent_has_run(cluster: EtcdCluster) -> None:
    """What an agent leaves while writes work: a compaction, and with it the spare keys whose
    deletion under NOSPACE makes etcd's in-use sizes current."""
    cluster.put("/before", "1")
    cluster.put("/before", "2")
    code, report, err = cli(
        "compact", "--endpoints", cluster.endpoints[0], "--retain-revisions", "0"
    )
    assert code == 0, (report, err)


def fill_with_live_data(cluster: EtcdCluster) -> None:
    """Unique keys until NOSPACE: the live data itself fills the file."""
    agent_has_run(cluster)
    with pytest.raises(EtcdRequestError, match="database space exceeded"):
        cluster.write_garbage(n_keys=400, value_size=64 * 1024, rounds=1)
    assert cluster.alarms()


def fill_with_history(cluster: EtcdCluster) -> None:
    """The same keys overwritten until NOSPACE: little live data, a file full of history."""
    agent_has_run(cluster)
    with pytest.raises(EtcdRequestError, match="database space exceeded"):
        cluster.write_garbage(n_keys=50, value_size=64 * 1024, rounds=20)
    assert cluster.alarms()


def delete_range(cluster: EtcdCluster, start: str, end: str) -> int:
    answer = cluster.request(
        cluster.members[0],
        "kv/deleterange",
        {"key": base64.b64encode(start.encode()).decode(),
         "range_end": base64.b64encode(end.encode()).decode()},
    )  # fmt: skip
    return int(answer.get("deleted", 0))


def defragment_lines(cluster: EtcdCluster) -> list[str]:
    """Every line etcd logged about a defragmentation, of any member."""
    return [
        f"{m.name}: {line.get('msg')}"
        for m in cluster.members
        for line in m.log_lines()
        if "defrag" in str(line.get("msg", "")).lower()
    ]


def sample(runner: CycleRunner, name: str, **labels: str) -> float | None:
    return runner.registry.get_sample_value(name, labels)


# -- live data that fills the quota ------------------------------------------------------------


def test_unrecoverable_nospace_is_refused_before_any_defrag_backed_off_and_retried(
    etcd_cluster_factory: ClusterFactory,
) -> None:
    cluster = etcd_cluster_factory(size=3, quota_backend_bytes=QUOTA)
    fill_with_live_data(cluster)
    # Where exactly etcd stops a write differs between versions; with the bar at half the quota
    # the live data is always above it here.
    settings = settings_for(cluster, defrag={"recover_max_quota_use": 0.5})
    monotonic = Ticking()
    runner = CycleRunner(settings, clock=FakeClock(NOON), monotonic=monotonic)
    try:
        assert runner.cycle()
        first = runner.last_report
        assert first is not None and first.outcome is Outcome.REFUSED
        assert first.reason is not None and first.reason.startswith(UNRECOVERABLE)
        assert "delete at least" in first.reason and "raise --quota-backend-bytes" in first.reason
        kinds = [r.step.kind for r in first.results if r.status.value != "not-started"]
        assert kinds == [StepKind.COMPACT]  # compacted, then decided: nothing defragmented
        assert sample(runner, "etcdagent_nospace_unrecoverable") == 1
        assert sample(runner, "etcdagent_nospace_unrecoverable_refusals_total") == 1

        # The next cycles: the same sizes, so no new attempt.
        for _ in range(3):
            monotonic.advance(30)
            assert runner.cycle()
            assert runner.last_report is None
        assert sample(runner, "etcdagent_nospace_unrecoverable_refusals_total") == 1
        assert sample(runner, "etcdagent_nospace_unrecoverable") == 1

        # The bounded retry: tried again after defrag.recover_retry_unrecoverable, refused again.
        monotonic.advance(settings.defrag.recover_retry_unrecoverable)
        assert runner.cycle()
        again = runner.last_report
        assert again is not None and again.outcome is Outcome.REFUSED
        assert again.reason is not None and again.reason.startswith(UNRECOVERABLE)
        assert sample(runner, "etcdagent_nospace_unrecoverable_refusals_total") == 2

        # The operator's command says the same, exit 1.
        code, report, _ = cli(
            "recover",
            "--endpoints",
            cluster.endpoints[0],
            env={"ETCDAGENT_DEFRAG__RECOVER_MAX_QUOTA_USE": "0.5"},
        )
        assert code == 1 and report["outcome"] == "refused"
        assert report["reason"].startswith(UNRECOVERABLE)
        assert defragment_lines(cluster) == []  # etcd never started a defrag
        assert cluster.alarms() != []

        # Data deleted (deletes pass under NOSPACE): the sizes change, recovery is tried at once.
        assert delete_range(cluster, "/garbage/00000000", "/garbage/00000300") > 0
        monotonic.advance(30)
        assert runner.cycle()
        done = runner.last_report
        assert done is not None
        assert done.outcome is Outcome.DONE, (done.reason, done.notes)
        assert cluster.alarms() == []
        assert cluster.put("/after", "ok") > 0
        assert max_concurrent_defrags(defrag_intervals(cluster)) == 1
        assert sample(runner, "etcdagent_nospace_unrecoverable") == 0
    finally:
        runner.cluster.close()


# -- disarm by file size -----------------------------------------------------------------------


def test_a_member_whose_file_is_still_at_the_quota_keeps_the_alarm_armed(
    etcd_cluster_factory: ClusterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = etcd_cluster_factory(size=3, quota_backend_bytes=QUOTA)
    fill_with_history(cluster)
    skipped: list[str] = []
    planned = plan_recover

    def without_one_defrag(snapshot: ClusterSnapshot, settings: Settings, **kw: bool) -> Plan:
        """The recovery plan with the first follower's defrag skipped (as if it had failed)."""
        plan = planned(snapshot, settings, **kw)
        first = next(s for s in plan.steps if s.kind is StepKind.DEFRAG)
        skipped[:] = [first.member_label]
        return plan.model_copy(update={"steps": tuple(s for s in plan.steps if s != first)})

    monkeypatch.setattr(maintenance_module, "plan_recover", without_one_defrag)
    settings = settings_for(cluster)
    with ClusterClient(settings) as client:
        report = Maintenance(client, settings).recover()

    assert report.outcome is Outcome.REFUSED, report
    assert report.reason is not None and report.reason.startswith("the alarm stays armed")
    assert f"{skipped[0]}'s file is" in report.reason
    defragged = {i.member for i in defrag_intervals(cluster)}
    assert skipped[0] not in defragged and len(defragged) == 2
    # Its data in use is small: only the file keeps it from being disarmed.
    member = next(m for m in cluster.members if m.name == skipped[0])
    status = member.status()
    assert int(status["dbSizeInUse"]) < 0.5 * QUOTA <= 0.9 * QUOTA <= int(status["dbSize"])
    assert cluster.alarms() != []


# -- a compaction longer than its request --------------------------------------------------------


def slow_compaction_args(cluster_version: str) -> list[str]:
    """Two revisions per compaction batch, 10 ms apart (etcd's default pause; 3.4 and 3.5.1
    cannot change it): a thousand old revisions take ~5 s to compact."""
    major_minor = tuple(int(p) for p in cluster_version.split(".")[:2])
    flag = (
        "--compaction-batch-limit"
        if major_minor >= (3, 6)
        else ("--experimental-compaction-batch-limit")
    )
    return [flag, "2"]


def compaction_finished_at(member: EtcdMember) -> list[datetime]:
    found: list[datetime] = []
    for line in member.log_lines():
        if line.get("msg") == "finished scheduled compaction" and isinstance(line.get("ts"), str):
            found.append(datetime.fromisoformat(str(line["ts"]).replace("Z", "+00:00")))
    return found


def test_a_compaction_longer_than_its_request_is_watched_and_no_defrag_runs_beside_it(
    etcd_cluster_factory: ClusterFactory, etcd_binary: Path
) -> None:
    slow = slow_compaction_args(etcd_version(etcd_binary))
    cluster = etcd_cluster_factory(size=3, extra_args=slow)
    history = {m.name: len(compaction_finished_at(m)) for m in cluster.members}
    cluster.write_garbage(n_keys=1200, value_size=64, rounds=2)  # 1200 old revisions

    # 1. Not finished within compaction.applied_timeout: the run stops, no defrag starts.
    code, report, err = cli(
        "defrag", "--endpoints", cluster.endpoints[0], "--retain-revisions", "0", "--force",
        env={"ETCDAGENT_COMPACTION__REQUEST_TIMEOUT": "500ms",
             "ETCDAGENT_COMPACTION__APPLIED_TIMEOUT": "1s"},
    )  # fmt: skip
    assert code == 1, (report, err)
    compact = report["results"][0]
    assert compact["step"]["kind"] == "compact" and compact["status"] == "failed"
    assert "not finished on every member" in compact["message"]
    assert "request timed out" in compact["message"]
    assert defrag_intervals(cluster) == []
    deadline = time.monotonic() + 60
    while any(len(compaction_finished_at(m)) == history[m.name] for m in cluster.members):
        assert time.monotonic() < deadline, "the compaction never finished"
        time.sleep(0.2)

    # 2. Long enough to wait: every member finishes compacting before the first defrag starts.
    history = {m.name: len(compaction_finished_at(m)) for m in cluster.members}
    cluster.write_garbage(n_keys=1200, value_size=64, rounds=2)
    code, report, err = cli(
        "defrag", "--endpoints", cluster.endpoints[0], "--retain-revisions", "0", "--force",
        env={"ETCDAGENT_COMPACTION__REQUEST_TIMEOUT": "500ms",
             "ETCDAGENT_COMPACTION__APPLIED_TIMEOUT": "60s"},
    )  # fmt: skip
    assert code == 0, (report, err)
    compact = report["results"][0]
    assert compact["status"] == "done" and "request timed out" in compact["message"], compact
    finished = {m.name: compaction_finished_at(m)[history[m.name] :] for m in cluster.members}
    assert all(finished.values()), finished  # each member logged its compaction's end ...
    intervals = defrag_intervals(cluster)
    assert len(intervals) == 3
    last_finished = max(ts for times in finished.values() for ts in times)
    first_defrag = min(i.start for i in intervals)
    assert last_finished <= first_defrag, (finished, intervals)  # ... before any defrag began
    started = report["results"][0]["started_at"]
    took = last_finished - datetime.fromisoformat(started)
    assert took.total_seconds() > 0.5  # it really outlasted the request timeout


# -- learners ------------------------------------------------------------------------------------


def test_a_learner_at_its_quota_keeps_the_alarm_armed_until_it_is_dealt_with(
    etcd_cluster_factory: ClusterFactory,
) -> None:
    """etcd refuses Defragment on a learner; at its quota it would raise NOSPACE again at the
    next write, so recovery defragments the voting members and keeps the alarm armed, naming
    the learner and what to do. Removed (one of the two remedies), the recovery completes."""
    cluster = etcd_cluster_factory(
        size=3, quota_backend_bytes=QUOTA, extra_args=["--strict-reconfig-check=false"]
    )
    learner = add_learner(cluster)
    fill_with_history(cluster)
    # It holds the same history; where exactly its file stops short of the quota varies (14-16
    # MiB here), so the bar is at 80% of the quota.
    assert int(learner.status()["dbSize"]) >= 0.8 * QUOTA
    bar = {"ETCDAGENT_DEFRAG__RECOVER_MAX_QUOTA_USE": "0.8"}

    code, report, err = cli("recover", "--endpoints", cluster.endpoints[0], env=bar)

    assert code == 1, (report, err)
    assert report["reason"].startswith("the alarm stays armed: l1 (learner)'s file is"), report
    assert "etcdutl defrag --data-dir" in report["reason"]
    assert [s["member_name"] for s in report["plans"][-1]["plan"]["skipped"]] == ["l1"]
    intervals = defrag_intervals(cluster)
    assert sorted(i.member for i in intervals) == ["m1", "m2", "m3"]
    assert max_concurrent_defrags(intervals) == 1
    assert cluster.alarms() != []

    cluster.request(cluster.leader(), "cluster/member/remove", {"ID": str(learner.member_id())})
    learner.kill()
    cluster.members.remove(learner)
    code, report, err = cli("recover", "--endpoints", cluster.endpoints[0], env=bar)
    assert code == 0, (report, err)
    assert cluster.alarms() == []
    assert cluster.put("/after", "ok") > 0
