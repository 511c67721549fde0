"""The agent's own metrics, read back from a registry of their own (no global state)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from etcdagent_testing.snapshots import IDS, MIB, WHEN, alarm, cluster, snap, three
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from etcdagent import __version__
from etcdagent.act.run_report import Outcome, RunReport
from etcdagent.act.step_results import StepResult, StepStatus
from etcdagent.agent.metrics import AgentMetrics, metric_docs
from etcdagent.decide.plan import Step, StepKind
from etcdagent.models import AlarmType


@dataclass(frozen=True)
class Signals:
    member_id: int
    wal_fsync_p99: float | None = None
    backend_commit_p99: float | None = None
    leader_changes: int | None = None
    request_rate: float | None = None
    db_growth_rate: float | None = None
    time_to_quota: float | None = None


@pytest.fixture
def metrics() -> AgentMetrics:
    return AgentMetrics(CollectorRegistry(), gates=("quorum", "leader", "corrupt"))


def value(metrics: AgentMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def of(name: str) -> dict[str, str]:
    return {"member": name, "member_id": f"{IDS[name]:x}"}


def test_per_member_gauges_match_the_snapshot(metrics: AgentMetrics) -> None:
    snapshot = cluster(
        snap("m1", db_size=400 * MIB, in_use=100 * MIB, quota=2048 * MIB),
        snap("m2", db_size=200 * MIB, in_use=150 * MIB, metrics_quota=1024 * MIB),
        snap("m3", up=False),
        alarms=(alarm("m2"),),
    )
    metrics.observe_snapshot(snapshot, {})

    assert value(metrics, "etcdagent_member_db_size_bytes", **of("m1")) == 400 * MIB
    assert value(metrics, "etcdagent_member_db_size_in_use_bytes", **of("m1")) == 100 * MIB
    assert value(metrics, "etcdagent_member_quota_bytes", **of("m1")) == 2048 * MIB
    assert value(metrics, "etcdagent_member_fragmentation_ratio", **of("m1")) == 0.75
    assert value(metrics, "etcdagent_member_db_size_bytes", **of("m2")) == 200 * MIB
    assert value(metrics, "etcdagent_member_quota_bytes", **of("m2")) == 1024 * MIB
    assert value(metrics, "etcdagent_member_fragmentation_ratio", **of("m2")) == 0.25

    assert value(metrics, "etcdagent_member_up", **of("m1")) == 1
    assert value(metrics, "etcdagent_member_up", **of("m3")) == 0
    assert value(metrics, "etcdagent_member_is_leader", **of("m1")) == 1
    assert value(metrics, "etcdagent_member_is_leader", **of("m2")) == 0
    assert value(metrics, "etcdagent_member_is_leader", **of("m3")) == 0

    # A member that does not answer: its sizes are unknown, so absent (not 0, not NaN).
    for name in ("db_size_bytes", "db_size_in_use_bytes", "quota_bytes", "fragmentation_ratio"):
        assert value(metrics, f"etcdagent_member_{name}", **of("m3")) is None

    nospace, corrupt = AlarmType.NOSPACE.value, AlarmType.CORRUPT.value
    assert value(metrics, "etcdagent_member_alarm_active", alarm=nospace, **of("m2")) == 1
    assert value(metrics, "etcdagent_member_alarm_active", alarm=corrupt, **of("m2")) == 0
    assert value(metrics, "etcdagent_member_alarm_active", alarm=nospace, **of("m1")) == 0


def test_signals_set_their_gauges_and_none_removes_the_series(metrics: AgentMetrics) -> None:
    full = {
        IDS["m1"]: Signals(
            IDS["m1"],
            wal_fsync_p99=0.008,
            backend_commit_p99=0.016,
            db_growth_rate=1024.0,
            time_to_quota=3600.0,
        ),
        IDS["m2"]: Signals(IDS["m2"]),  # not enough data yet
    }
    metrics.observe_snapshot(three(), full)
    assert value(metrics, "etcdagent_member_wal_fsync_p99_seconds", **of("m1")) == 0.008
    assert value(metrics, "etcdagent_member_backend_commit_p99_seconds", **of("m1")) == 0.016
    assert value(metrics, "etcdagent_member_db_growth_bytes_per_second", **of("m1")) == 1024
    assert value(metrics, "etcdagent_member_time_to_quota_seconds", **of("m1")) == 3600
    for name in (
        "wal_fsync_p99_seconds",
        "backend_commit_p99_seconds",
        "db_growth_bytes_per_second",
        "time_to_quota_seconds",
    ):
        assert value(metrics, f"etcdagent_member_{name}", **of("m2")) is None
        assert value(metrics, f"etcdagent_member_{name}", **of("m3")) is None  # no signals

    # Next cycle: m1 stopped growing and its latency window ran dry -> series gone.
    metrics.observe_snapshot(
        three(),
        {IDS["m1"]: Signals(IDS["m1"], wal_fsync_p99=None, time_to_quota=float("inf"))},
    )
    assert value(metrics, "etcdagent_member_wal_fsync_p99_seconds", **of("m1")) is None
    assert value(metrics, "etcdagent_member_time_to_quota_seconds", **of("m1")) is None
    assert "NaN" not in generate_latest(metrics.registry).decode()


def test_nan_signals_are_absent_not_nan(metrics: AgentMetrics) -> None:
    nan = float("nan")
    metrics.observe_snapshot(three(), {IDS["m1"]: Signals(IDS["m1"], nan, nan, None, nan, nan)})
    assert value(metrics, "etcdagent_member_wal_fsync_p99_seconds", **of("m1")) is None
    assert "NaN" not in generate_latest(metrics.registry).decode()


def test_a_member_that_left_loses_its_series(metrics: AgentMetrics) -> None:
    signals = {IDS["m3"]: Signals(IDS["m3"], wal_fsync_p99=0.01)}
    metrics.observe_snapshot(three(), signals)
    assert value(metrics, "etcdagent_member_up", **of("m3")) == 1
    assert value(metrics, "etcdagent_member_wal_fsync_p99_seconds", **of("m3")) == 0.01

    metrics.observe_snapshot(cluster(snap("m1"), snap("m2")), {})

    exposed = generate_latest(metrics.registry).decode()
    assert 'member="m3"' not in exposed
    assert value(metrics, "etcdagent_member_up", **of("m2")) == 1


def test_alarms_are_absent_when_no_member_answered(metrics: AgentMetrics) -> None:
    metrics.observe_snapshot(three(), {})
    down = cluster(snap("m1", up=False), snap("m2", up=False), snap("m3", up=False))
    down = down.model_copy(update={"alarms_error": "no member answered its status"})
    metrics.observe_snapshot(down, {})
    assert value(metrics, "etcdagent_member_alarm_active", alarm="NOSPACE", **of("m1")) is None
    assert value(metrics, "etcdagent_member_up", **of("m1")) == 0


def test_leader_changes_count_only_changes(metrics: AgentMetrics) -> None:
    name = "etcdagent_leader_changes_observed_total"
    assert value(metrics, name) == 0
    metrics.observe_snapshot(three(leader="m1"), {})
    metrics.observe_snapshot(three(leader="m1"), {})
    assert value(metrics, name) == 0
    metrics.observe_snapshot(three(leader="m2"), {})
    assert value(metrics, name) == 1
    metrics.observe_snapshot(three(leader=None), {})  # an election: no leader for a moment
    metrics.observe_snapshot(three(leader="m2"), {})  # the same one came back: no change
    assert value(metrics, name) == 1
    metrics.observe_snapshot(three(leader=None), {})
    metrics.observe_snapshot(three(leader="m3"), {})
    assert value(metrics, name) == 2
    assert value(metrics, "etcdagent_member_is_leader", **of("m3")) == 1
    assert value(metrics, "etcdagent_member_is_leader", **of("m2")) == 0


def _defrag(name: str, status: StepStatus, duration: float, reclaimed: int | None) -> StepResult:
    step = Step(kind=StepKind.DEFRAG, reason="fragmented", member_id=IDS[name], member_name=name)
    return StepResult(
        step=step, status=status, started_at=WHEN, duration=duration, reclaimed=reclaimed
    )


def _compact(revision: int, status: StepStatus) -> StepResult:
    step = Step(kind=StepKind.COMPACT, reason="retention", revision=revision)
    return StepResult(step=step, status=status, started_at=WHEN, duration=0.2)


def _report(outcome: Outcome, *results: StepResult, dry_run: bool = False) -> RunReport:
    return RunReport(
        command="defrag",
        dry_run=dry_run,
        started_at=WHEN,
        finished_at=WHEN,
        results=list(results),
        outcome=outcome,
    )


def test_record_report_counts_runs_compactions_and_defrags(metrics: AgentMetrics) -> None:
    report = _report(
        Outcome.FAILED,
        _compact(4000, StepStatus.DONE),
        _defrag("m2", StepStatus.DONE, 2.0, 300 * MIB),
        _defrag("m3", StepStatus.DONE, 40.0, 0),
        _defrag("m1", StepStatus.FAILED, 90.0, None),
        _defrag("m1", StepStatus.NOT_STARTED, 0.0, None),
    )
    metrics.record_report(report, "window")
    metrics.record_report(_report(Outcome.DONE, _compact(4500, StepStatus.ALREADY_DONE)), "once")

    runs = "etcdagent_maintenance_runs_total"
    assert value(metrics, runs, trigger="window", result="failed") == 1
    assert value(metrics, runs, trigger="window", result="done") == 0  # pre-created at 0
    assert value(metrics, runs, trigger="once", result="done") == 1

    assert value(metrics, "etcdagent_compactions_total", result="done") == 1
    assert value(metrics, "etcdagent_compactions_total", result="already-done") == 1
    assert value(metrics, "etcdagent_compactions_total", result="failed") == 0
    assert value(metrics, "etcdagent_last_compacted_revision") == 4500

    defrags = "etcdagent_defragmentations_total"
    assert value(metrics, defrags, result="done", **of("m2")) == 1
    assert value(metrics, defrags, result="done", **of("m3")) == 1
    assert value(metrics, defrags, result="failed", **of("m1")) == 1
    assert value(metrics, defrags, result="not-started", **of("m1")) is None

    reclaimed = "etcdagent_defrag_reclaimed_bytes_total"
    assert value(metrics, reclaimed, member="m2") == 300 * MIB
    assert value(metrics, reclaimed, member="m3") == 0

    duration = "etcdagent_defrag_duration_seconds"
    assert value(metrics, f"{duration}_count", member="m2") == 1
    assert value(metrics, f"{duration}_sum", member="m2") == 2.0
    assert value(metrics, f"{duration}_bucket", member="m2", le="1.0") == 0
    assert value(metrics, f"{duration}_bucket", member="m2", le="2.5") == 1
    assert value(metrics, f"{duration}_bucket", member="m3", le="60.0") == 1
    assert value(metrics, f"{duration}_count", member="m1") is None  # failed: not a duration


def test_defrag_buckets_span_a_tenth_of_a_second_to_half_an_hour(metrics: AgentMetrics) -> None:
    metrics.record_report(_report(Outcome.DONE, _defrag("m1", StepStatus.DONE, 0.05, 1)), "once")
    name = "etcdagent_defrag_duration_seconds_bucket"
    assert value(metrics, name, member="m1", le="0.1") == 1
    assert value(metrics, name, member="m1", le="1800.0") == 1


def test_dry_runs_are_not_counted(metrics: AgentMetrics) -> None:
    metrics.record_report(_report(Outcome.DONE, dry_run=True), "once")
    assert value(metrics, "etcdagent_maintenance_runs_total", trigger="once", result="done") == 0


def test_refused_compaction_and_refused_run(metrics: AgentMetrics) -> None:
    metrics.record_report(
        _report(Outcome.REFUSED, _compact(10, StepStatus.REFUSED)), "emergency-nospace"
    )
    assert value(metrics, "etcdagent_compactions_total", result="refused") == 1
    assert value(metrics, "etcdagent_last_compacted_revision") is None
    runs = "etcdagent_maintenance_runs_total"
    assert value(metrics, runs, trigger="emergency-nospace", result="refused") == 1


def test_gates(metrics: AgentMetrics) -> None:
    for gate in ("quorum", "leader", "corrupt"):
        assert value(metrics, "etcdagent_gate_blocking", gate=gate) == 0
    metrics.set_gates({"quorum": "m3 does not answer", "leader": None})
    assert value(metrics, "etcdagent_gate_blocking", gate="quorum") == 1
    assert value(metrics, "etcdagent_gate_blocking", gate="leader") == 0
    assert value(metrics, "etcdagent_gate_blocking", gate="corrupt") == 0
    metrics.set_gates({})
    assert value(metrics, "etcdagent_gate_blocking", gate="quorum") == 0


def test_window(metrics: AgentMetrics) -> None:
    assert value(metrics, "etcdagent_maintenance_window_open") == 0
    assert value(metrics, "etcdagent_maintenance_window_next_start_timestamp_seconds") is None
    start = WHEN + timedelta(hours=3)
    metrics.set_window(True, start)
    assert value(metrics, "etcdagent_maintenance_window_open") == 1
    next_start = "etcdagent_maintenance_window_next_start_timestamp_seconds"
    assert value(metrics, next_start) == start.timestamp()
    metrics.set_window(False, None)
    assert value(metrics, "etcdagent_maintenance_window_open") == 0
    assert value(metrics, next_start) is None


def test_cycles_and_errors(metrics: AgentMetrics) -> None:
    last = "etcdagent_last_successful_cycle_timestamp_seconds"
    assert value(metrics, last) is None
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    metrics.cycle_finished(True, 0.5, now)
    metrics.cycle_finished(False, 2.0, now + timedelta(seconds=30), "ClusterUnavailableError")
    assert value(metrics, last) == now.timestamp()
    assert value(metrics, "etcdagent_cycle_duration_seconds_count") == 2
    assert value(metrics, "etcdagent_cycle_duration_seconds_sum") == 2.5
    errors = "etcdagent_cycle_errors_total"
    assert value(metrics, errors, kind="ClusterUnavailableError") == 1

    metrics.scrape_error("m1")
    metrics.scrape_error("m1")
    metrics.request_error("m2")
    assert value(metrics, "etcdagent_scrape_errors_total", member="m1") == 2
    assert value(metrics, "etcdagent_request_errors_total", member="m2") == 1


def test_build_info(metrics: AgentMetrics) -> None:
    assert value(metrics, "etcdagent_build_info", version=__version__) == 1


def test_every_metric_is_documented_and_prefixed(metrics: AgentMetrics) -> None:
    docs = metric_docs(metrics.registry)
    assert len(docs) >= 25
    for doc in docs:
        assert doc.name.startswith("etcdagent_"), doc
        assert len(doc.help) > 20, doc
        if doc.type == "counter":
            assert doc.name.endswith("_total"), doc
    by_name = {d.name: d for d in docs}
    assert by_name["etcdagent_member_db_size_bytes"].labels == ("member", "member_id")
    assert by_name["etcdagent_member_alarm_active"].labels == ("member", "member_id", "alarm")
    assert by_name["etcdagent_defrag_duration_seconds"].type == "histogram"
    assert by_name["etcdagent_maintenance_runs_total"].labels == ("trigger", "result")


def test_exposition_parses_and_help_is_on_every_family(metrics: AgentMetrics) -> None:
    metrics.observe_snapshot(three(), {IDS["m1"]: Signals(IDS["m1"], wal_fsync_p99=0.002)})
    text = generate_latest(metrics.registry).decode()
    families = list(text_string_to_metric_families(text))
    assert families
    for family in families:
        assert family.name.startswith("etcdagent_")
        assert family.documentation


def test_registries_are_independent() -> None:
    one, two = AgentMetrics(), AgentMetrics()
    one.scrape_error("m1")
    assert one.registry is not two.registry
    assert two.registry.get_sample_value("etcdagent_scrape_errors_total", {"member": "m1"}) is None
