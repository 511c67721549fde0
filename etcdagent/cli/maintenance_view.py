"""How the maintenance commands talk to a person: the plan, each step as it runs, a summary.

``--output json`` prints the RunReport instead (its schema is documented in the README).
"""

from __future__ import annotations

from collections.abc import Callable

from etcdagent.act.run_report import Outcome, PhasePlan, PlanListener, RunReport
from etcdagent.act.step_results import ConsistencyResult, StepResult, StepStatus
from etcdagent.decide.plan import Step, StepKind
from etcdagent.units import format_bytes, format_duration

Echo = Callable[[str], None]


def describe_step(step: Step, *, short: bool = False) -> str:
    """One line per step; ``short`` drops the reason (the plan above already gave it)."""
    member = step.member_label
    why = "" if short else f": {step.reason}"
    if step.kind is StepKind.COMPACT:
        return f"compact to revision {step.revision} (via {member}){why}"
    if step.kind is StepKind.DEFRAG:
        timeout = f", timeout {format_duration(step.timeout)}" if step.timeout else ""
        check = f", then compare HashKV with {step.check_peer_name}" if step.check_peer_name else ""
        return f"defrag {member}{timeout}{check}{why}"
    if step.kind is StepKind.MOVE_LEADER:
        target = step.target_name or (f"{step.target_id:x}" if step.target_id else "?")
        return f"move leadership {member} -> {target}{why}"
    if step.kind is StepKind.DISARM:
        return f"disarm {step.alarm}{why}"
    return f"probe write{why}"


def render_plan(entry: PhasePlan) -> list[str]:
    plan = entry.plan
    lines = [f"plan {entry.phase} ({entry.decided}):"]
    for number, step in enumerate(plan.steps, 1):
        lines.append(f"  {number}. {describe_step(step)}")
    for skip in plan.skipped:
        lines.append(f"  skip {skip.member_name}: {skip.reason}")
    for note in plan.notes:
        lines.append(f"  note: {note}")
    if plan.refusal:
        lines.append(f"  refused: {plan.refusal}")
    elif not plan.steps and entry.provisional:
        lines.append(
            "  no member is worth it on today's sizes: a real run decides after compacting"
        )
    elif not plan.steps:
        lines.append("  nothing to do")
    return lines


def render_result(result: StepResult) -> str:
    took = f" in {format_duration(result.duration)}" if result.duration is not None else ""
    text = f"   {result.status.value}{took}: {result.message}"
    if result.warning:
        text += f" (warning: {result.warning})"
    check = result.consistency
    if check is not None and check.result is ConsistencyResult.MATCH:
        # A mismatch is the step's message, a skipped check its warning, an unavailable one a
        # note of the plan: only a match needs a line of its own.
        text += f"\n   consistency {check.result.value}: {check.message}"
    return text


def render_summary(report: RunReport) -> list[str]:
    done = [r for r in report.results if r.status in (StepStatus.DONE, StepStatus.ALREADY_DONE)]
    not_started = [r for r in report.results if r.status is StepStatus.NOT_STARTED]
    defrags = [r for r in done if r.step.kind is StepKind.DEFRAG]
    lines: list[str] = []
    for note in report.notes:
        lines.append(f"note: {note}")
    if report.dry_run:
        verdict = {
            Outcome.REFUSED: "would refuse",
            Outcome.NOTHING_TO_DO: "nothing to do",
        }.get(report.outcome, "the plan above would run")
        lines.append(f"dry run: nothing was changed; {verdict}")
        if report.reason:
            lines.append(f"  reason: {report.reason}")
        return lines
    elapsed = ""
    if report.finished_at is not None:
        elapsed = f" in {format_duration((report.finished_at - report.started_at).total_seconds())}"
    summary = f"{report.outcome.value}: {len(done)} step(s) done"
    if defrags:
        summary += (
            f", {len(defrags)} member(s) defragmented, "
            f"{format_bytes(report.reclaimed_total)} reclaimed"
        )
    if not_started:
        summary += f", {len(not_started)} not started"
    lines.append(summary + elapsed)
    if report.reason:
        lines.append(f"  reason: {report.reason}")
    for result in not_started:
        lines.append(f"  not started: {describe_step(result.step, short=True)}")
    return lines


class TextListener(PlanListener):
    """Prints as things happen, so an operator watching a long sweep sees progress."""

    def __init__(self, echo: Echo) -> None:
        self.echo = echo

    def plan(self, phase: PhasePlan) -> None:
        for line in render_plan(phase):
            self.echo(line)

    def started(self, step: Step) -> None:
        self.echo(f"-> {describe_step(step, short=True)}")

    def finished(self, result: StepResult) -> None:
        if result.status is StepStatus.NOT_STARTED:
            return
        self.echo(render_result(result))

    def note(self, text: str) -> None:
        self.echo(f"   {text}")
