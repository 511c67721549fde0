"""/readyz while a long maintenance step runs: ready within the step's budget, as /healthz is,
so a rollout does not stall behind a multi-minute sweep. The clock is injected, never slept on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from etcdagent.act.step_results import StepResult, StepStatus
from etcdagent.agent.cycle import _Heartbeat
from etcdagent.agent.daemon import Daemon
from etcdagent.decide.plan import Step, StepKind
from etcdagent.settings import Settings, load_settings


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_settings() -> Settings:
    return load_settings(
        {
            "connection": {"endpoints": ["http://127.0.0.1:1"], "discover": False},
            "daemon": {"interval": "10s"},
            "defrag": {"recovery_timeout": "30s"},
        }
    )


@pytest.fixture
def monotonic() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def daemon(monotonic: FakeMonotonic) -> Iterator[Daemon]:
    made = Daemon(make_settings, monotonic=monotonic)
    yield made
    made.cluster.close()


def defrag_step(timeout: float) -> Step:
    return Step(
        kind=StepKind.DEFRAG,
        reason="test",
        member_id=0xA1,
        member_name="m1",
        endpoint="http://m1:2379",
        timeout=timeout,
    )


def test_ready_through_a_defrag_longer_than_the_staleness_limit(
    daemon: Daemon, monotonic: FakeMonotonic
) -> None:
    daemon.last_reachable = monotonic()
    beat = _Heartbeat(daemon)
    step = defrag_step(timeout=600)
    beat.started(step)  # budget: 600 s + recovery 30 s + 3 intervals (30 s)
    monotonic.now += 500  # far beyond 3 intervals + 10 s without an observation
    assert daemon.ready() is None
    assert daemon.healthy() is None
    beat.finished(StepResult(step=step, status=StepStatus.DONE))
    # The step reached etcd when it ended: ready again counts from then.
    monotonic.now += 30
    assert daemon.ready() is None
    monotonic.now += 11  # 41 s after the step, nothing observed since
    reason = daemon.ready()
    assert reason is not None and "etcd not reached for 41s" in reason


def test_not_ready_once_a_step_overruns_its_budget(
    daemon: Daemon, monotonic: FakeMonotonic
) -> None:
    daemon.last_reachable = monotonic()
    _Heartbeat(daemon).started(defrag_step(timeout=100))  # budget 160 s
    monotonic.now += 159
    assert daemon.ready() is None
    monotonic.now += 2
    reason = daemon.ready()
    assert reason is not None and "etcd not reached for 161s" in reason


def test_a_failed_step_does_not_count_as_reaching_etcd(
    daemon: Daemon, monotonic: FakeMonotonic
) -> None:
    daemon.last_reachable = monotonic()
    beat = _Heartbeat(daemon)
    step = defrag_step(timeout=100)
    beat.started(step)
    monotonic.now += 120
    beat.finished(StepResult(step=step, status=StepStatus.FAILED, message="timed out"))
    reason = daemon.ready()
    assert reason is not None and "etcd not reached for 120s" in reason
