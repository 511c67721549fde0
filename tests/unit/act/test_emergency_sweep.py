"""Between members: window maintenance pauses ``defrag.wait_between``; a NOSPACE recovery goes on
as soon as the defrag step is done (it returns only once its member answers, has caught up and
reads defrag_inflight 0). A fake executor: the sweep's own logic, no etcd."""

from __future__ import annotations

from typing import cast

import pytest
from etcdagent_testing.snapshots import WHEN

from etcdagent.act.executor import Executor
from etcdagent.act.run_report import Outcome, PlanListener, RunReport
from etcdagent.act.step_results import StepResult, StepStatus
from etcdagent.act.step_sweep import StepSweep
from etcdagent.decide.plan import Step, StepKind
from etcdagent.settings import load_settings


class FakeExecutor:
    """Records the steps run and the pauses asked for, in order."""

    def __init__(self, fail: str | None = None, stop_in_wait: bool = False) -> None:
        self.events: list[str] = []
        self.fail = fail
        self.stop_in_wait = stop_in_wait
        self.last_snapshot = None

    def run(self, step: Step) -> StepResult:
        self.events.append(f"{step.kind.value} {step.member_label}")
        failed = self.fail is not None and step.member_name == self.fail
        status = StepStatus.FAILED if failed else StepStatus.DONE
        return StepResult(step=step, status=status, duration=0.3)

    def wait(self, seconds: float) -> bool:
        self.events.append(f"wait {seconds:g}")
        return self.stop_in_wait


def defrag(name: str, member_id: int) -> Step:
    return Step(kind=StepKind.DEFRAG, reason="test", member_name=name, member_id=member_id)


STEPS = [
    Step(kind=StepKind.COMPACT, reason="test", revision=10),
    defrag("m2", 2),
    defrag("m3", 3),
    defrag("m1", 1),
]


def sweep(executor: FakeExecutor) -> StepSweep:
    settings = load_settings({"defrag": {"wait_between": "5s"}})
    return StepSweep(cast(Executor, executor), settings, PlanListener())


def new_report() -> RunReport:
    return RunReport(command="recover", dry_run=False, started_at=WHEN)


def test_window_maintenance_pauses_between_members() -> None:
    executor = FakeExecutor()

    assert sweep(executor).run(new_report(), list(STEPS)) is None

    assert executor.events == [
        "compact cluster",
        "defrag m2",
        "wait 5",
        "defrag m3",
        "wait 5",
        "defrag m1",
    ]


def test_an_emergency_goes_on_to_the_next_member_without_the_fixed_pause() -> None:
    executor = FakeExecutor()
    report = new_report()

    assert sweep(executor).run(report, list(STEPS), emergency=True) is None

    assert executor.events == ["compact cluster", "defrag m2", "defrag m3", "defrag m1"]
    assert [r.status for r in report.results] == [StepStatus.DONE] * 4


def test_an_emergency_still_stops_at_a_member_that_did_not_recover() -> None:
    executor = FakeExecutor(fail="m3")
    report = new_report()

    assert sweep(executor).run(report, list(STEPS), emergency=True) is Outcome.FAILED

    assert executor.events == ["compact cluster", "defrag m2", "defrag m3"]
    assert report.results[-1].status is StepStatus.NOT_STARTED  # m1 was never started


@pytest.mark.parametrize("emergency", [False, True])
def test_the_last_member_is_never_followed_by_a_pause(emergency: bool) -> None:
    executor = FakeExecutor()

    sweep(executor).run(new_report(), [defrag("m1", 1)], emergency=emergency)

    assert executor.events == ["defrag m1"]
