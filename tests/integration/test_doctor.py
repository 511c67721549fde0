"""`etcdagent doctor` against real clusters made to show each problem, and one with none.

Three clusters, each shared by the tests of one scenario (a module-scoped fixture): a small-quota
cluster full of free pages that nothing compacts; two voting members and a learner holding mostly
/registry/events/ keys; a clean three-member cluster that kube-apiserver's compaction (emulated
faithfully, ``ApiserverCompactor``) keeps compacted. The two snapshots are taken by the same code
the command runs (``gather_doctor_input``); its injected sleep does the scenario's writes in
between instead of waiting, and the command itself runs once per scenario with a short
``--lookback``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from etcdagent_testing import EtcdCluster
from etcdagent_testing.apiserver_compactor import ApiserverCompactor
from etcdagent_testing.clock import FakeClock
from etcdagent_testing.errors import EtcdRequestError
from etcdagent_testing.learner import add_learner
from etcdagent_testing.load import add_garbage, db_sizes

from etcdagent.agent.cycle import CycleRunner
from etcdagent.cli.doctor_gather import gather_doctor_input
from etcdagent.decide.doctor.finding import Finding, Severity
from etcdagent.decide.doctor.run import DoctorReport, run_checks
from etcdagent.etcd.client import ClusterClient
from etcdagent.models import release
from etcdagent.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MIB = 1024**2
QUOTA = 92 * MIB


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _settle(cluster: EtcdCluster, timeout: float = 20.0) -> None:
    """Until every member's "in use" shows the compaction (etcd refreshes it at a commit)."""
    deadline = time.monotonic() + timeout
    while True:
        cluster.put("/refresh", str(time.monotonic()))
        if all(used < size / 2 for size, used in db_sizes(cluster).values()):
            return
        assert time.monotonic() < deadline, db_sizes(cluster)
        time.sleep(0.2)


def put_many(cluster: EtcdCluster, keys: list[str], value: str = "v" * 200) -> None:
    """Puts in transactions of 100 (etcd's --max-txn-ops is 128)."""
    for start in range(0, len(keys), 100):
        ops = [
            {"requestPut": {"key": _b64(k), "value": _b64(value)}}
            for k in keys[start : start + 100]
        ]
        cluster.request(cluster.members[0], "kv/txn", {"success": ops})


def doctor(cluster: EtcdCluster, between: Callable[[float], None]) -> DoctorReport:
    settings = load_settings({"connection": {"endpoints": cluster.endpoints[0]}})
    with ClusterClient(settings) as client:
        doc = gather_doctor_input(client, settings, 30.0, sleep=between)
    return run_checks(doc)


def of(report: DoctorReport, check: str) -> list[Finding]:
    return [f for f in report.findings if f.check == check]


def run_command(cluster: EtcdCluster, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "etcdagent", "doctor", "--endpoints", cluster.endpoints[0]]
    return subprocess.run(
        [*command, "--lookback", "1s", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def known_critical_bug(version: str) -> bool:
    ours = release(version)
    return ours is not None and (3, 5, 0) <= ours <= (3, 5, 2)


# -- a database near its quota, fragmented, and nothing compacting -------------------------------


@pytest.fixture(scope="module")
def troubled(etcd_binary: Path) -> Iterator[EtcdCluster]:
    with EtcdCluster(3, binary=etcd_binary, quota_backend_bytes=QUOTA) as cluster:
        # 64 MiB of overwrites, one at a time, compacted: files of 75-83 MiB (measured; it varies
        # by member, wider with concurrent writers), 4 MiB live; 80% of the quota is 73.6 MiB.
        add_garbage(cluster, 64, workers=1)
        _settle(cluster)
        yield cluster


@pytest.fixture(scope="module")
def troubled_report(troubled: EtcdCluster) -> DoctorReport:
    def writes(_seconds: float) -> None:  # revisions pile up in the lookback, none compacted
        put_many(troubled, [f"/app/key{i:04d}" for i in range(300)])

    return doctor(troubled, writes)


def test_a_database_near_its_quota(troubled_report: DoctorReport) -> None:
    quota = of(troubled_report, "quota")
    assert {f.member for f in quota} == {"m1", "m2", "m3"}
    for finding in quota:
        use = finding.evidence["quota_use"]
        assert isinstance(use, float)
        assert "of the 92 MiB quota used" in finding.summary
        high = finding.severity in (Severity.WARNING, Severity.CRITICAL)
        assert high is (use >= 0.8), finding
        assert ("--quota-backend-bytes" in finding.action) is high
    assert any(f.severity is not Severity.OK for f in quota), quota  # the largest file, >= 80%
    assert troubled_report.exit_code == 1


def test_heavy_fragmentation(troubled_report: DoctorReport) -> None:
    frag = {f.member: f for f in of(troubled_report, "fragmentation")}
    assert set(frag) == {"m1", "m2", "m3"}
    for finding in frag.values():
        free = finding.evidence["fragmentation"]
        assert isinstance(free, float) and free > 0.8, finding  # 4 MiB live in a ~80 MiB file
    near_quota = [f.member for f in of(troubled_report, "quota") if f.severity is not Severity.OK]
    for member in near_quota:  # the agent's rule: quota use >= 80% with >= 64 MiB reclaimable
        finding = frag[member]
        assert finding.severity is Severity.WARNING, finding
        assert finding.evidence["agent_would_defragment"] is True
        assert "(quota pressure)" in finding.summary
        assert "no maintenance window" in finding.action


def test_no_compaction_running(troubled_report: DoctorReport) -> None:
    [finding] = of(troubled_report, "compaction")
    assert finding.severity is Severity.CRITICAL, finding
    assert "nothing compacts" in finding.summary
    assert "no kube-apiserver compaction" in finding.summary
    written = finding.evidence["revisions_written_in_lookback"]
    assert isinstance(written, int) and written >= 3  # three transactions of 100 puts


# -- two voting members, a learner, and mostly events -------------------------------------------


def _add_learner(cluster: EtcdCluster, attempts: int = 20) -> None:
    """etcd refuses a new member ("unhealthy cluster") until its members have been connected
    for a few seconds after the start."""
    for attempt in range(attempts):
        try:
            add_learner(cluster)
            return
        except EtcdRequestError as exc:
            if "unhealthy cluster" not in exc.message or attempt == attempts - 1:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="module")
def layout(etcd_binary: Path) -> Iterator[EtcdCluster]:
    with EtcdCluster(2, binary=etcd_binary) as cluster:
        _add_learner(cluster)
        put_many(cluster, [f"/registry/events/default/pod-{i:05d}.17f" for i in range(1500)])
        put_many(cluster, [f"/registry/pods/default/pod-{i:05d}" for i in range(400)])
        put_many(cluster, [f"/registry/leases/kube-node-lease/node-{i}" for i in range(20)])
        yield cluster


@pytest.fixture(scope="module")
def layout_json(layout: EtcdCluster) -> dict[str, object]:
    result = run_command(layout, "--output", "json")
    assert result.returncode == 1, result.stderr
    answer = json.loads(result.stdout)
    assert isinstance(answer, dict)
    return answer


def _findings(answer: dict[str, object], check: str) -> list[dict[str, object]]:
    findings = answer["findings"]
    assert isinstance(findings, list)
    return [f for f in findings if f["check"] == check]


def test_an_even_member_count(layout_json: dict[str, object]) -> None:
    [finding] = _findings(layout_json, "member_count")
    assert finding["severity"] == "warning"
    assert finding["evidence"] == {"voting_members": 2, "quorum": 2, "failures_tolerated": 0}


def test_a_learner(layout_json: dict[str, object]) -> None:
    [finding] = _findings(layout_json, "learners")
    assert finding["severity"] == "warning"
    assert finding["member"] == "l1"
    assert "member promote" in str(finding["action"])


def test_a_large_share_of_events(layout_json: dict[str, object]) -> None:
    [events] = _findings(layout_json, "events_share")
    assert events["severity"] == "warning"
    assert events["evidence"] == {"keys": 1500, "total_keys": 1920, "share": 0.7812}
    assert "--etcd-servers-overrides=/events#" in str(events["action"])
    [leases] = _findings(layout_json, "leases_share")
    assert leases["severity"] == "ok"
    assert layout_json["schema_version"] == 1 and layout_json["exit_code"] == 1


# -- a clean, healthy cluster --------------------------------------------------------------------


def test_a_clean_cluster_has_nothing_above_info(etcd_binary: Path) -> None:
    with EtcdCluster(3, binary=etcd_binary) as cluster:
        put_many(cluster, [f"/registry/configmaps/default/cm-{i:03d}" for i in range(50)])
        api = ApiserverCompactor(cluster.members[0].client_url)
        api.tick()
        put_many(cluster, [f"/registry/secrets/default/s-{i:03d}" for i in range(50)])
        assert api.tick() is not None  # compacted to the revision of its first attempt
        result = run_command(cluster)
        report = doctor(cluster, lambda _s: None)
    above = {f.check for f in report.findings if f.severity.rank > Severity.INFO.rank}
    bug = known_critical_bug(cluster.version)
    assert above == ({"known_bug"} if bug else set()), report.findings
    assert result.returncode == (1 if bug else 0), result.stdout + result.stderr
    [compaction] = of(report, "compaction")
    assert compaction.severity is Severity.OK
    assert "kube-apiserver compacts" in compaction.summary
    # Every member's round trips are judged (a fresh cluster may not have probed its peers yet).
    round_trips = of(report, "peer_round_trip")
    assert {f.member for f in round_trips} == {"m1", "m2", "m3"}, round_trips
    for finding in round_trips:
        measured = [k for k in finding.evidence if k.startswith("p99_seconds_to_")]
        assert measured == [] or len(measured) == 2, finding
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SEVERITY", "CHECK", "MEMBER", "EVIDENCE"]
    assert lines[-1].startswith("cluster ")
    assert ("critical" if bug else "info") in lines[-1]


def test_the_daemon_exports_the_findings_every_cycle(layout: EtcdCluster) -> None:
    """Two cycles a lookback apart (injected clocks): the findings become
    etcdagent_doctor_finding{check,severity} series."""
    settings = load_settings(
        {
            "connection": {"endpoints": layout.endpoints[0]},
            "compaction": {"mode": "never"},  # the daemon writes nothing into this cluster
            "daemon": {"listen": "127.0.0.1:0", "interval": "15s"},
        }
    )
    clock = FakeClock(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    elapsed = [0.0]
    runner = CycleRunner(settings, clock=clock, monotonic=lambda: elapsed[0])
    try:
        assert runner.cycle()
        clock.advance(300)
        elapsed[0] += 300
        assert runner.cycle()
    finally:
        runner.cluster.close()

    def value(check: str, severity: str) -> float | None:
        labels = {"check": check, "severity": severity}
        return runner.registry.get_sample_value("etcdagent_doctor_finding", labels)

    assert value("member_count", "warning") == 1
    assert value("learners", "warning") == 1
    assert value("events_share", "warning") == 1  # counted in the first cycle, kept
    assert value("member_count", "ok") is None
    assert runner.doctor.last_report is not None
    [compaction] = [f for f in runner.doctor.last_report.findings if f.check == "compaction"]
    assert compaction.severity in (Severity.OK, Severity.INFO, Severity.CRITICAL)
