"""The daemon's pure logic: back-off, /healthz and /readyz answers, the `run --once` verdict, the
logged configuration, and one cycle against a cluster that does not answer (127.0.0.1:1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from etcdagent_testing.snapshots import GIB, WHEN, three

from etcdagent.act.run_report import Outcome, RunReport
from etcdagent.agent.daemon import Daemon, effective_config
from etcdagent.decide.defrag_budget import within_grace
from etcdagent.decide.triggers import CycleDecision, Trigger, decide_cycle
from etcdagent.decide.windows import WindowState
from etcdagent.errors import ConfigError
from etcdagent.observe.signals import MemberSignals
from etcdagent.observe.snapshot import ClusterSnapshot
from etcdagent.settings import Settings, load_settings

PASSWORD = "hunter2-Zq9!secret"
UNREACHABLE = "http://127.0.0.1:1"


class FakeMonotonic:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeClock:
    def __init__(self, start: datetime = WHEN) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def make_settings(**groups: Any) -> Settings:
    data: dict[str, Any] = {
        "connection": {
            "endpoints": [UNREACHABLE],
            "discover": False,
            "retry_deadline": "10ms",
            "request_timeout": "1s",
        },
    }
    for key, value in groups.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return load_settings(data)


@pytest.fixture
def monotonic() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    yield made
    for daemon in made:
        daemon.cluster.close()


def build(
    daemons: list[Daemon],
    monotonic: FakeMonotonic,
    settings: Settings | None = None,
    *,
    once: bool = False,
) -> Daemon:
    chosen = settings if settings is not None else make_settings()
    daemon = Daemon(lambda: chosen, clock=FakeClock(), monotonic=monotonic, once=once)
    daemons.append(daemon)
    return daemon


# -- back-off ----------------------------------------------------------------------------------


def test_pause_is_the_interval_without_failures(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    daemon = build(daemons, monotonic, make_settings(daemon={"interval": "15s"}))
    assert daemon.failures == 0
    assert daemon.pause() == 15.0


def test_pause_doubles_per_consecutive_failure_up_to_the_maximum(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    settings = make_settings(daemon={"interval": "10s", "error_backoff_max": "100s"})
    daemon = build(daemons, monotonic, settings)
    pauses = []
    for failures in range(1, 7):
        daemon.failures = failures
        pauses.append(daemon.pause())
    assert pauses == [20.0, 40.0, 80.0, 100.0, 100.0, 100.0]


def test_pause_is_capped_after_very_many_failures(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    settings = make_settings(daemon={"interval": "15s", "error_backoff_max": "5m"})
    daemon = build(daemons, monotonic, settings)
    for failures in (5, 16, 17, 1000, 10**6):
        daemon.failures = failures
        assert daemon.pause() == 300.0


def test_pause_never_shrinks_as_failures_grow(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    daemon = build(daemons, monotonic, make_settings(daemon={"interval": "1s"}))
    previous = 0.0
    for failures in range(50):
        daemon.failures = failures
        pause = daemon.pause()
        assert pause >= previous
        previous = pause


def test_pause_after_a_failure_is_never_shorter_than_the_interval(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    # A back-off must not retry a failing cluster sooner than a healthy one is watched: with an
    # interval longer than error_backoff_max (default 5m), a failure would shorten the pause.
    daemon = build(daemons, monotonic, make_settings(daemon={"interval": "10m"}))
    assert daemon.pause() == 600.0
    daemon.failures = 1
    assert daemon.pause() >= 600.0


# -- /healthz ----------------------------------------------------------------------------------


def health_settings() -> Settings:
    # 3 intervals = 30 s, plus the slack of 4 request timeouts = 8 s: 38 s.
    return make_settings(daemon={"interval": "10s"}, connection={"request_timeout": "2s"})


def test_healthy_right_after_a_beat(daemons: list[Daemon], monotonic: FakeMonotonic) -> None:
    daemon = build(daemons, monotonic, health_settings())
    daemon.beat()
    assert daemon.healthy() is None
    monotonic.advance(30)
    assert daemon.healthy() is None
    monotonic.advance(8)
    assert daemon.healthy() is None


def test_unhealthy_after_three_intervals_and_slack_without_a_beat(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    daemon = build(daemons, monotonic, health_settings())
    daemon.beat()
    monotonic.advance(39)
    reason = daemon.healthy()
    assert reason is not None
    assert "39s ago" in reason
    daemon.beat()
    assert daemon.healthy() is None


def test_unhealthy_before_any_cycle_when_not_started(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    daemon = build(daemons, monotonic, health_settings())
    assert daemon.healthy() == "no cycle has finished yet"


def test_healthy_during_the_first_cycle_then_not(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    daemon = build(daemons, monotonic, health_settings())
    daemon.started_at = monotonic()
    monotonic.advance(20)
    assert daemon.healthy() is None
    monotonic.advance(20)
    assert daemon.healthy() == "no cycle has finished yet"


def test_healthy_while_busy_until_is_in_the_future(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    daemon = build(daemons, monotonic, health_settings())
    daemon.beat()
    daemon.busy_until = monotonic() + 600
    monotonic.advance(500)
    assert daemon.healthy() is None
    monotonic.advance(101)  # the step's budget is over: the stale beat counts again
    assert daemon.healthy() is not None


def test_busy_covers_a_daemon_that_never_finished_a_cycle(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    daemon = build(daemons, monotonic, health_settings())
    daemon.busy_until = monotonic() + 10
    assert daemon.healthy() is None


# -- /readyz -----------------------------------------------------------------------------------


def test_not_ready_before_etcd_was_reached(daemons: list[Daemon], monotonic: FakeMonotonic) -> None:
    daemon = build(daemons, monotonic, health_settings())
    assert daemon.ready() == "etcd not reached yet"


def test_ready_after_reaching_etcd_then_stale(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    daemon = build(daemons, monotonic, health_settings())
    daemon.last_reachable = monotonic()
    assert daemon.ready() is None
    monotonic.advance(40)  # 3 intervals + 10 s
    assert daemon.ready() is None
    monotonic.advance(1)
    reason = daemon.ready()
    assert reason is not None
    assert "41s" in reason
    daemon.last_reachable = monotonic()
    assert daemon.ready() is None


# -- effective_config --------------------------------------------------------------------------


def test_effective_config_never_contains_the_password(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    settings = make_settings(auth={"username": "root", "password": PASSWORD})
    assert settings.auth.resolved_password() == PASSWORD
    config = effective_config(settings)
    dumped = json.dumps(config)
    assert PASSWORD not in dumped
    assert config["auth"]["username"] == "root"
    assert config["auth"]["password"] == "[REDACTED]"
    # The rest is there, as in force.
    assert config["connection"]["endpoints"] == [UNREACHABLE]
    assert config["daemon"]["interval"] == settings.daemon.interval


def test_effective_config_without_auth(daemons: list[Daemon], monotonic: FakeMonotonic) -> None:
    config = effective_config(make_settings())
    assert config["auth"]["password"] is None
    assert config["auth"]["username"] is None
    json.dumps(config)  # serializable as is


def test_effective_config_is_a_fresh_copy() -> None:
    settings = make_settings(auth={"username": "root", "password": PASSWORD})
    effective_config(settings)["auth"]["username"] = "changed"
    assert settings.auth.username == "root"
    assert effective_config(settings)["auth"]["username"] == "root"


# -- one cycle against an unreachable cluster --------------------------------------------------


def errors(daemon: Daemon, kind: str = "unreachable") -> float | None:
    return daemon.registry.get_sample_value("etcdagent_cycle_errors_total", {"kind": kind})


def test_cycle_against_an_unreachable_cluster_fails_softly(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    settings = make_settings(daemon={"interval": "10s", "error_backoff_max": "1m"})
    daemon = build(daemons, monotonic, settings)
    assert daemon.cycle() is False
    assert errors(daemon) == 1.0
    assert errors(daemon, "internal") is None
    assert daemon.failures == 1
    assert daemon.pause() == 20.0
    assert daemon.last_reachable is None
    assert daemon.ready() == "etcd not reached yet"
    assert daemon.last_beat == monotonic()  # the loop is alive even though etcd is not
    assert daemon.healthy() is None
    assert daemon.last_decision is None
    assert daemon.last_report is None

    assert daemon.cycle() is False
    assert errors(daemon) == 2.0
    assert daemon.failures == 2
    assert daemon.pause() == 40.0


def test_cycle_after_a_failed_reload_keeps_the_running_configuration(
    monotonic: FakeMonotonic,
) -> None:
    settings = make_settings()
    calls = 0

    def loader() -> Settings:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ConfigError("invalid configuration: daemon.interval: bad")
        return settings

    daemon = Daemon(loader, clock=FakeClock(), monotonic=monotonic)
    try:
        daemon.request_reload()
        assert daemon.cycle() is False  # still unreachable, and never raises
        assert calls == 2
        assert daemon.settings == within_grace(settings)  # the budget capped, nothing else
        assert errors(daemon) == 1.0
    finally:
        daemon.cluster.close()


# -- run --once verdict ------------------------------------------------------------------------


def calm_signals(snapshot: ClusterSnapshot, **fields: Any) -> dict[int, MemberSignals]:
    values: dict[str, Any] = {
        "samples": 10,
        "wal_fsync_p99": 0.002,
        "backend_commit_p99": 0.002,
        "wal_fsyncs": 100,
        "backend_commits": 100,
        "leader_changes": 0,
        "request_rate": 1.0,
    }
    values.update(fields)
    return {m.member.id: MemberSignals(member_id=m.member.id, **values) for m in snapshot.members}


def decision_for(
    daemon: Daemon,
    snapshot: ClusterSnapshot,
    signals: dict[int, MemberSignals],
    *,
    rate: float | None = 1.0,
) -> CycleDecision:
    now = daemon.clock()
    window = daemon._window(now)
    return decide_cycle(
        snapshot,
        signals,
        daemon.settings,
        window,
        now,
        cluster_request_rate=rate,
        last_compaction=now - timedelta(seconds=1),
    )


def test_pass_fails_without_any_decision(daemons: list[Daemon], monotonic: FakeMonotonic) -> None:
    daemon = build(daemons, monotonic, once=True)
    assert daemon.pass_succeeded() is False


@pytest.mark.parametrize(
    ("outcome", "succeeded"),
    [
        (Outcome.DONE, True),
        (Outcome.NOTHING_TO_DO, True),
        (Outcome.REFUSED, False),
        (Outcome.FAILED, False),
        (Outcome.INTERRUPTED, False),
    ],
)
def test_pass_follows_the_report_outcome(
    daemons: list[Daemon], monotonic: FakeMonotonic, outcome: Outcome, succeeded: bool
) -> None:
    daemon = build(daemons, monotonic, once=True)
    daemon.last_report = RunReport(
        command="defrag", dry_run=False, started_at=WHEN, outcome=outcome
    )
    assert daemon.pass_succeeded() is succeeded


def test_once_without_windows_treats_the_pass_as_a_window(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    daemon = build(daemons, monotonic, once=True)
    state = daemon._window(daemon.clock())
    assert state == WindowState(open=True, window=None, ends_at=None, next_start=None)
    not_once = build(daemons, monotonic)
    assert not_once._window(not_once.clock()).open is False


def test_pass_fails_when_the_window_is_blocked(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    daemon = build(daemons, monotonic, once=True)
    snapshot = three()
    daemon.last_decision = decision_for(daemon, snapshot, calm_signals(snapshot), rate=1e6)
    assert daemon.last_decision.blocking.keys() == {"traffic"}
    assert daemon.pass_succeeded() is False


def test_pass_succeeds_outside_windows_with_nothing_due(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    # 02:00-03:00 UTC; the clock says 03:04.
    settings = make_settings(windows=[{"schedule": "0 2 * * *", "duration": "1h"}])
    daemon = build(daemons, monotonic, settings, once=True)
    snapshot = three()
    decision = decision_for(daemon, snapshot, calm_signals(snapshot), rate=1e6)
    daemon.last_decision = decision
    assert decision.action is None
    assert decision.blocking.keys() == {"traffic"}  # blocking, but nothing was due
    assert daemon.pass_succeeded() is True


def test_pass_fails_when_quota_pressure_is_left_blocked(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    # Outside the window, quota pressure calls for maintenance but a safety gate blocks it:
    # something due was left blocked, so `run --once` must not report success.
    settings = make_settings(windows=[{"schedule": "0 2 * * *", "duration": "1h"}])
    daemon = build(daemons, monotonic, settings, once=True)
    snapshot = three(db_size=int(0.95 * GIB), quota=GIB)
    signals = calm_signals(snapshot, leader_changes=50)
    decision = decision_for(daemon, snapshot, signals)
    daemon.last_decision = decision
    assert decision.action is None
    assert "leader_changes" in decision.blocking
    assert any("quota pressure" in r for r in decision.reasons)
    assert daemon.pass_succeeded() is False


def test_pass_fails_when_nospace_recovery_is_reported_blocked(
    daemons: list[Daemon], monotonic: FakeMonotonic
) -> None:
    daemon = build(daemons, monotonic, once=True)
    daemon.last_decision = CycleDecision(
        action=None,
        trigger=Trigger.EMERGENCY_NOSPACE,
        compact=False,
        gates={"cluster_health": "m3 does not answer"},
        reasons=(),
    )
    assert daemon.pass_succeeded() is False
