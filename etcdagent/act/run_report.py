"""What a maintenance command reports: its plans, its step results, its outcome and why.

The report is the one record of a run: ``--output json`` prints it, the human view renders it,
the daemon's metrics count from it. ``RunRecorder`` fills it in the same way for every command,
so that the log events and the listener see exactly what the report holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from enum import StrEnum

import structlog
from pydantic import BaseModel, ConfigDict, Field, computed_field

from etcdagent.act.step_results import StepListener, StepResult, StepStatus
from etcdagent.decide.plan import Plan, Step

log = structlog.get_logger()


class Outcome(StrEnum):
    DONE = "done"
    NOTHING_TO_DO = "nothing-to-do"
    REFUSED = "refused"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class PhasePlan(BaseModel):
    """A plan with the moment it was decided: a defrag after compaction is decided again on the
    sizes the compaction left."""

    model_config = ConfigDict(frozen=True)

    phase: str
    decided: str
    plan: Plan
    provisional: bool = False  # made before a compaction that will change the sizes


class RunReport(BaseModel):
    """Everything one command did or would do; ``--output json`` prints exactly this."""

    command: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    plans: list[PhasePlan] = Field(default_factory=list)
    results: list[StepResult] = Field(default_factory=list)
    outcome: Outcome = Outcome.NOTHING_TO_DO
    reason: str | None = None
    notes: list[str] = Field(default_factory=list)
    lock_busy: bool = False  # refused only because another agent holds the maintenance lock

    @computed_field  # type: ignore[prop-decorator]
    @property
    def exit_code(self) -> int:
        return 0 if self.outcome in (Outcome.DONE, Outcome.NOTHING_TO_DO) else 1

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reclaimed_total(self) -> int:
        return sum(r.reclaimed or 0 for r in self.results)


class PlanListener(StepListener):
    """Adds the moment a plan is decided to the step events."""

    def plan(self, phase: PhasePlan) -> None:  # pragma: no cover - default does nothing
        """A plan was decided."""


def mark_not_started(report: RunReport, steps: Iterable[Step], message: str) -> None:
    """Record steps the run will not start, so the report lists the whole plan."""
    for step in steps:
        report.results.append(StepResult(step=step, status=StepStatus.NOT_STARTED, message=message))


def final_outcome(report: RunReport, early: Outcome | None) -> tuple[Outcome, str | None]:
    """The outcome of a run whose steps ran (``early``: what ended them early) and its reason.

    An interrupted run counts what was done and left; a refused or failed one names the step.
    """
    if early is None:
        done = any(r.status is StepStatus.DONE for r in report.results)
        return (Outcome.DONE if done else Outcome.NOTHING_TO_DO), None
    failed = next((r for r in report.results if not r.ok), None)
    reason = failed.message if failed else None
    if early is Outcome.INTERRUPTED:
        reason = "stop requested: " + (
            f"{sum(r.status is StepStatus.DONE for r in report.results)} step(s) done, "
            f"{sum(r.status is StepStatus.NOT_STARTED for r in report.results)} not "
            "started"
        )
    elif failed is not None:
        reason = f"{failed.step.kind.value} {failed.step.member_label}: {failed.message}"
    return early, reason


class RunRecorder:
    """Starts, fills in and closes the reports of one ``Maintenance``, logging as it goes."""

    def __init__(
        self, listener: PlanListener, clock: Callable[[], datetime], *, dry_run: bool
    ) -> None:
        self.listener = listener
        self.clock = clock
        self.dry_run = dry_run

    def start(self, command: str) -> RunReport:
        return RunReport(command=command, dry_run=self.dry_run, started_at=self.clock())

    def decided(
        self,
        report: RunReport,
        phase: str,
        decided: str,
        plan: Plan,
        *,
        provisional: bool = False,
    ) -> Plan:
        """Record a plan and tell the listener; returns the plan so callers can go on with it."""
        entry = PhasePlan(phase=phase, decided=decided, plan=plan, provisional=provisional)
        report.plans.append(entry)
        self.listener.plan(entry)
        if plan.refusal:
            log.warning("maintenance refused", command=report.command, reason=plan.refusal)
        return plan

    def finish(self, report: RunReport, outcome: Outcome, reason: str | None = None) -> RunReport:
        report.outcome = outcome
        report.reason = reason
        report.finished_at = self.clock()
        log.info(
            "maintenance finished",
            command=report.command,
            outcome=outcome.value,
            reason=reason,
            reclaimed=report.reclaimed_total,
            dry_run=self.dry_run,
        )
        return report

    def end(self, report: RunReport, early: Outcome | None) -> RunReport:
        """Finish a run whose steps ran, with the outcome they add up to."""
        outcome, reason = final_outcome(report, early)
        return self.finish(report, outcome, reason)
