"""What an operator reads: the plan, the summary after a run, and the JSON report for scripts."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from etcdagent_testing.snapshots import IDS, MIB, WHEN, alarm, cluster, settings, snap

from etcdagent.act.run_report import Outcome, PhasePlan, RunReport
from etcdagent.act.step_results import StepResult, StepStatus
from etcdagent.cli.maintenance_view import describe_step, render_plan, render_summary
from etcdagent.decide.defrag import plan_defrag
from etcdagent.decide.plan import Plan, Step, StepKind
from etcdagent.decide.recovery import plan_recover


def sweep() -> Plan:
    """m1 leads; m2 and m3 are worth defragmenting (m3 more), m4 is not, l1 is a learner."""
    return plan_defrag(
        cluster(
            snap("m1", in_use=50 * MIB),
            snap("m2", in_use=100 * MIB),
            snap("m3", in_use=200 * MIB),
            snap("m4", in_use=399 * MIB),
            snap("l1", learner=True),
        ),
        settings(defrag={"move_leader": True}),
    )


def report(
    *,
    dry_run: bool = False,
    outcome: Outcome = Outcome.DONE,
    results: list[StepResult] | None = None,
    plans: list[PhasePlan] | None = None,
    reason: str | None = None,
    notes: list[str] | None = None,
) -> RunReport:
    return RunReport(
        command="defrag",
        dry_run=dry_run,
        started_at=WHEN,
        finished_at=WHEN + timedelta(seconds=90),
        plans=plans or [],
        results=results or [],
        outcome=outcome,
        reason=reason,
        notes=notes or [],
    )


def done(step: Step, reclaimed: int | None = None) -> StepResult:
    return StepResult(step=step, status=StepStatus.DONE, reclaimed=reclaimed, message="ok")


def not_started(step: Step) -> StepResult:
    return StepResult(step=step, status=StepStatus.NOT_STARTED, message="stop requested")


# -- the plan ----------------------------------------------------------------------------------


def test_render_plan_numbers_the_steps_in_order_and_lists_skips_with_reasons() -> None:
    lines = render_plan(PhasePlan(phase="defrag", decided="now", plan=sweep()))
    assert lines[0] == "plan defrag (now):"
    assert lines[1].startswith(
        "  1. defrag m2, timeout 1m: 75% free, 300 MiB reclaimable of 400 MiB"
    )
    assert lines[2].startswith("  2. defrag m3, timeout 1m: 50% free")
    assert lines[3].startswith("  3. move leadership m1 -> m3: m1 is the leader")
    assert lines[4].startswith("  4. defrag m1, timeout 1m: 87% free")  # 87.5%, rounded down
    assert lines[4].endswith("[leader, last]")
    skips = [line for line in lines if line.startswith("  skip ")]
    assert skips[0].startswith("  skip m4: 0% free")
    assert "not worth it" in skips[0]
    assert skips[1].startswith("  skip l1: learner")
    assert not any("refused" in line or "nothing to do" in line for line in lines)


def test_render_plan_shows_the_refusal() -> None:
    plan = plan_defrag(cluster(snap("m1"), snap("m2"), snap("m3", up=False)), settings())
    lines = render_plan(PhasePlan(phase="defrag", decided="now", plan=plan))
    assert lines[-1].startswith("  refused: cluster not healthy: m3 does not answer")
    assert not any(line.startswith("  1.") for line in lines)


def test_render_plan_shows_notes_and_nothing_to_do() -> None:
    plan = Plan(command="compact", notes=("nothing to compact: no revision is old enough",))
    lines = render_plan(PhasePlan(phase="compact", decided="now", plan=plan))
    assert lines == [
        "plan compact (now):",
        "  note: nothing to compact: no revision is old enough",
        "  nothing to do",
    ]


def test_render_plan_of_a_recovery_names_every_kind_of_step() -> None:
    # The leader's defrag (300 MiB at 50 MiB/s: 6 s) is long enough to move leadership first.
    snapshot = cluster(snap("m1", in_use=300 * MIB), snap("m2"), snap("m3"), alarms=(alarm("m1"),))
    lines = render_plan(
        PhasePlan(phase="recover", decided="now", plan=plan_recover(snapshot, settings()))
    )
    assert lines[1].startswith("  1. compact to revision 5000 (via m1): ")
    assert lines[4].startswith("  4. move leadership m1 -> ")  # defrag.move_leader's default
    assert lines[6].startswith("  6. disarm NOSPACE@a1: ")
    assert lines[7].startswith("  7. probe write: ")
    assert any(line.startswith("  note: retention shortened") for line in lines)


def test_describe_step_short_drops_the_reason() -> None:
    step = sweep().steps[0]
    assert describe_step(step, short=True) == "defrag m2, timeout 1m"


# -- the summary -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "verdict"),
    [
        (Outcome.DONE, "the plan above would run"),
        (Outcome.NOTHING_TO_DO, "nothing to do"),
        (Outcome.REFUSED, "would refuse"),
    ],
)
def test_dry_run_summary_says_nothing_was_changed(outcome: Outcome, verdict: str) -> None:
    lines = render_summary(report(dry_run=True, outcome=outcome))
    assert lines == [f"dry run: nothing was changed; {verdict}"]


def test_dry_run_refusal_gives_the_reason() -> None:
    lines = render_summary(
        report(dry_run=True, outcome=Outcome.REFUSED, reason="cluster not healthy: no leader")
    )
    assert lines == [
        "dry run: nothing was changed; would refuse",
        "  reason: cluster not healthy: no leader",
    ]


def test_summary_of_a_real_run_counts_members_and_bytes_and_lists_steps_not_started() -> None:
    steps = sweep().steps
    lines = render_summary(
        report(
            outcome=Outcome.INTERRUPTED,
            results=[
                done(steps[0], reclaimed=200 * MIB),
                done(steps[1], reclaimed=100 * MIB),
                not_started(steps[2]),
                not_started(steps[3]),
            ],
            reason="stop requested: 2 step(s) done, 2 not started",
            notes=["sizes not refreshed after compaction: timeout"],
        )
    )
    assert lines == [
        "note: sizes not refreshed after compaction: timeout",
        "interrupted: 2 step(s) done, 2 member(s) defragmented, 300 MiB reclaimed, "
        "2 not started in 1m30s",
        "  reason: stop requested: 2 step(s) done, 2 not started",
        "  not started: move leadership m1 -> m3",
        "  not started: defrag m1, timeout 1m",
    ]


def test_summary_of_a_compaction_only_run_mentions_no_defrag() -> None:
    step = Step(kind=StepKind.COMPACT, reason="r", member_id=IDS["m1"], revision=4000)
    lines = render_summary(report(results=[done(step)]))
    assert lines == ["done: 1 step(s) done in 1m30s"]


def test_summary_of_a_failed_run_gives_the_reason() -> None:
    steps = sweep().steps
    failed = StepResult(step=steps[1], status=StepStatus.FAILED, message="timed out")
    lines = render_summary(
        report(
            outcome=Outcome.FAILED,
            results=[done(steps[0], reclaimed=MIB), failed, not_started(steps[3])],
            reason="defrag m3: timed out",
        )
    )
    assert lines[0].startswith("failed: 1 step(s) done, 1 member(s) defragmented, 1.0 MiB")
    assert "  reason: defrag m3: timed out" in lines
    assert lines[-1] == "  not started: defrag m1, timeout 1m"


# -- the JSON report ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        (Outcome.DONE, 0),
        (Outcome.NOTHING_TO_DO, 0),
        (Outcome.REFUSED, 1),
        (Outcome.FAILED, 1),
        (Outcome.INTERRUPTED, 1),
    ],
)
def test_exit_code_in_the_json_report(outcome: Outcome, code: int) -> None:
    data = report(outcome=outcome).model_dump(mode="json")
    assert data["exit_code"] == code
    assert data["outcome"] == outcome.value


def dumped() -> dict[str, Any]:
    plan = sweep()
    steps = plan.steps
    return report(
        plans=[PhasePlan(phase="defrag", decided="now", plan=plan)],
        results=[
            done(steps[0], reclaimed=200 * MIB),
            done(steps[1], reclaimed=100 * MIB),
            done(steps[2]),
            done(steps[3], reclaimed=50 * MIB),
        ],
    ).model_dump(mode="json")


def test_json_report_totals_the_bytes_reclaimed() -> None:
    assert dumped()["reclaimed_total"] == 350 * MIB


def test_json_report_has_member_ids_in_hex_in_steps_and_skips() -> None:
    data = dumped()
    steps = [r["step"] for r in data["results"]]
    assert [s["member_id"] for s in steps] == ["b2", "c3", "a1", "a1"]
    assert steps[2]["kind"] == "move-leader"
    assert steps[2]["target_id"] == "c3"
    skipped = data["plans"][0]["plan"]["skipped"]
    assert [s["member_id"] for s in skipped] == ["d4", "f6"]
    assert data["plans"][0]["plan"]["steps"][0]["member_id"] == "b2"


def test_json_report_is_serialisable_with_utc_times() -> None:
    data = json.loads(json.dumps(dumped()))
    assert data["started_at"] == "2025-01-02T03:04:05Z"
    assert data["finished_at"] == "2025-01-02T03:05:35Z"
    assert data["command"] == "defrag"
    assert data["dry_run"] is False


def test_json_report_has_the_disarmed_alarms_member_id_in_hex() -> None:
    """A DISARM step's alarm names its member in hex, like every other ID in the report."""
    snapshot = cluster(snap("m1"), snap("m2"), snap("m3"), alarms=(alarm("m1"),))
    plan = plan_recover(snapshot, settings())
    disarm = next(s for s in plan.steps if s.kind is StepKind.DISARM)
    data = report(results=[done(disarm)]).model_dump(mode="json")
    step = data["results"][0]["step"]
    assert step["alarm"]["member_id"] == "a1"
