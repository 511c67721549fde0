"""When the daemon's pause between cycles watches for a NOSPACE alarm, and what it logs of a
recovery's timing: pure logic, no etcd (the endpoint, 127.0.0.1:1, never answers)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from etcdagent_testing.snapshots import WHEN

from etcdagent.act.run_report import Outcome, RunReport
from etcdagent.act.step_results import StepResult, StepStatus
from etcdagent.agent.alarm_watch import AlarmWatch
from etcdagent.agent.daemon import Daemon, recovery_timing
from etcdagent.decide.plan import Step, StepKind
from etcdagent.decide.triggers import Action, CycleDecision, Trigger
from etcdagent.settings import Settings, load_settings


def make_settings(**groups: Any) -> Settings:
    data: dict[str, Any] = {
        "connection": {
            "endpoints": ["http://127.0.0.1:1"],
            "discover": False,
            "retry_deadline": "10ms",
            "request_timeout": "1s",
        },
        "daemon": {"interval": "60s", "listen": "127.0.0.1:0"},
    }
    for key, value in groups.items():
        data[key] = {**data.get(key, {}), **value}
    return load_settings(data)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    yield made
    for daemon in made:
        daemon.cluster.close()


def build(daemons: list[Daemon], settings: Settings | None = None, *, once: bool = False) -> Daemon:
    chosen = settings if settings is not None else make_settings()
    daemon = Daemon(lambda: chosen, once=once)
    daemons.append(daemon)
    return daemon


def decision(trigger: Trigger | None = None) -> CycleDecision:
    action = Action.RECOVER if trigger is Trigger.EMERGENCY_NOSPACE else None
    return CycleDecision(action=action, trigger=trigger, compact=False, gates={}, reasons=())


def report(outcome: Outcome, *, lock_busy: bool = False) -> RunReport:
    return RunReport(
        command="recover", dry_run=False, started_at=WHEN, outcome=outcome, lock_busy=lock_busy
    )


# -- whether the pause watches -----------------------------------------------------------------


def test_a_pause_after_a_calm_cycle_watches_for_nospace(daemons: list[Daemon]) -> None:
    daemon = build(daemons)
    daemon.last_decision = decision()

    assert daemon.watch_alarms(before=None) is True


def test_a_pause_after_a_recovery_that_brought_writes_back_watches_for_the_next_incident(
    daemons: list[Daemon],
) -> None:
    daemon = build(daemons)
    daemon.last_decision = decision(Trigger.EMERGENCY_NOSPACE)
    daemon.last_report = report(Outcome.DONE)

    assert daemon.watch_alarms(before=None) is True


@pytest.mark.parametrize(
    "last",
    [
        report(Outcome.REFUSED),
        report(Outcome.FAILED),
        report(Outcome.REFUSED, lock_busy=True),
        None,
    ],
    ids=["refused", "failed", "another agent recovers", "no run"],
)
def test_a_pause_after_a_recovery_that_did_not_help_backs_off_instead(
    daemons: list[Daemon], last: RunReport | None
) -> None:
    # The alarm is still listed: waking for it every second would repeat the same recovery.
    daemon = build(daemons)
    daemon.last_decision = decision(Trigger.EMERGENCY_NOSPACE)
    daemon.last_report = last

    assert daemon.watch_alarms(before=None) is False


def test_a_pause_after_a_failed_cycle_keeps_its_back_off(daemons: list[Daemon]) -> None:
    daemon = build(daemons)
    daemon.last_decision = decision()
    daemon.failures = 1

    assert daemon.watch_alarms(before=None) is False


def test_a_cycle_that_decided_nothing_does_not_arm_the_watch(daemons: list[Daemon]) -> None:
    daemon = build(daemons)
    stale = decision()
    daemon.last_decision = stale  # left over from an earlier cycle

    assert daemon.watch_alarms(before=stale) is False


def test_no_watch_with_the_nospace_emergency_off(daemons: list[Daemon]) -> None:
    daemon = build(daemons, make_settings(emergency={"nospace": False}))
    daemon.last_decision = decision()

    assert daemon.watch_alarms(before=None) is False


def test_no_watch_in_run_once(daemons: list[Daemon]) -> None:
    daemon = build(daemons, once=True)
    daemon.last_decision = decision()

    assert daemon.watch_alarms(before=None) is False


# -- the loop ----------------------------------------------------------------------------------


class RecordingWatch(AlarmWatch):
    def __init__(self) -> None:
        super().__init__(lambda: None, wake=threading.Event())
        self.pauses: list[float] = []

    def sleep(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        return True  # as if a NOSPACE alarm had ended the pause at once


def drive(daemon: Daemon, monkeypatch: pytest.MonkeyPatch, cycles: int) -> list[float]:
    """Run the loop for ``cycles`` fake cycles; the plain (unwatched) waits it made."""
    done: list[int] = []
    plain: list[float] = []

    def cycle() -> bool:
        done.append(1)
        daemon.last_decision = decision()
        if len(done) == cycles:
            daemon.stop.set()
        return True

    def wait(timeout: float | None = None) -> bool:
        plain.append(timeout or 0.0)
        return False

    monkeypatch.setattr(daemon, "cycle", cycle)
    monkeypatch.setattr(daemon.wake, "wait", wait)
    daemon._loop()
    assert len(done) == cycles
    return plain


def test_the_loop_spends_its_pauses_in_the_alarm_watch(
    daemons: list[Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = build(daemons)
    watch = RecordingWatch()
    daemon.alarm_watch = watch

    plain = drive(daemon, monkeypatch, cycles=3)

    assert watch.pauses == [60.0, 60.0]  # the interval, ended by the watch, not slept out
    assert plain == []


def test_the_loop_sleeps_plainly_with_the_nospace_emergency_off(
    daemons: list[Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = build(daemons, make_settings(emergency={"nospace": False}))
    watch = RecordingWatch()
    daemon.alarm_watch = watch

    plain = drive(daemon, monkeypatch, cycles=2)

    assert watch.pauses == []
    assert plain == [60.0]


# -- what a recovery's timing log says -----------------------------------------------------------


def result(kind: StepKind, name: str | None, seconds: float | None) -> StepResult:
    step = Step(kind=kind, reason="test", member_name=name, member_id=1 if name else None)
    status = StepStatus.DONE if seconds is not None else StepStatus.NOT_STARTED
    return StepResult(step=step, status=status, duration=seconds)


def test_recovery_timing_sums_the_steps_own_durations() -> None:
    run = report(Outcome.DONE)
    run.finished_at = WHEN + timedelta(seconds=1.5)
    run.results = [
        result(StepKind.COMPACT, None, 0.05),
        result(StepKind.DEFRAG, "m2", 0.3),
        result(StepKind.DEFRAG, "m3", 0.35),
        result(StepKind.DISARM, None, 0.02),
        result(StepKind.PROBE_WRITE, None, None),  # never started: no duration
    ]

    timing = recovery_timing(run)

    assert timing["steps_seconds"] == pytest.approx(0.72)
    assert timing["run_seconds"] == pytest.approx(1.5)
    assert [s["action"] for s in timing["steps"]] == ["compact", "defrag", "defrag", "disarm"]
    assert timing["steps"][1]["member"] == "m2"
    assert timing["outcome"] == "done"
