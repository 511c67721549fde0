"""Running a plan's steps in order: one member at a time, the leader last, stopping at the first
step that does not succeed.

The plan orders the defrags with the leader last, but leadership can move while the sweep runs;
and members need a pause between defrags to settle. Both are handled here, between steps, so that
each step runner only ever sees one step.

The pause (``defrag.wait_between``) is for the clients of a cluster that serves them: time for
the member just defragmented to warm up before the next one blocks. A NOSPACE recovery has no
such clients (every write fails until the last member is done), so it waits only for what
safety needs, and that is already in the steps: a defrag returns once its member answers, has
applied what the leader had committed and reads ``etcd_disk_defrag_inflight`` 0
(``DefragStep.wait_recovered``), and the next defrag re-checks quorum and the defrag fence on a
fresh snapshot before its request.
"""

from __future__ import annotations

from etcdagent.act.executor import Executor
from etcdagent.act.run_report import Outcome, PlanListener, RunReport, mark_not_started
from etcdagent.act.step_results import StepResult, StepStatus
from etcdagent.decide.plan import Step, StepKind
from etcdagent.settings import Settings


class StepSweep:
    """Runs a list of steps through the executor and records each result in the report."""

    def __init__(self, executor: Executor, settings: Settings, listener: PlanListener) -> None:
        self.executor = executor
        self.settings = settings
        self.listener = listener

    def run(
        self, report: RunReport, steps: list[Step], *, emergency: bool = False
    ) -> Outcome | None:
        """Run steps in order; the outcome that ends the run early, or None when all went well.

        The leader is defragmented last even if leadership moved during the sweep: a member that
        became the leader is put back behind the remaining followers once. ``emergency`` (NOSPACE
        recovery) goes on to the next member without the fixed pause (see the module docstring).
        """
        queue = list(steps)
        deferred: set[int] = set()
        while queue:
            step = queue.pop(0)
            if self._defer_new_leader(report, step, queue, deferred):
                continue
            result = self.executor.run(step)
            report.results.append(result)
            if not result.ok:
                return self._stopped(report, result, queue)
            more_defrags = any(s.kind is StepKind.DEFRAG for s in queue)
            if step.kind is StepKind.DEFRAG and more_defrags and not emergency:
                self.listener.note(
                    f"waiting {self.settings.defrag.wait_between:g}s before the next member"
                )
                if self.executor.wait(self.settings.defrag.wait_between):
                    mark_not_started(report, queue, "stop requested")
                    return Outcome.INTERRUPTED
        return None

    def _defer_new_leader(
        self, report: RunReport, step: Step, queue: list[Step], deferred: set[int]
    ) -> bool:
        """Put a defrag of a member that became the leader behind the rest, once; True if so."""
        remaining_defrags = [s for s in queue if s.kind is StepKind.DEFRAG]
        current = self.executor.last_snapshot
        if (
            step.kind is StepKind.DEFRAG
            and remaining_defrags
            and current is not None
            and step.member_id == current.leader_id
            and step.member_id is not None
            and step.member_id not in deferred
        ):
            deferred.add(step.member_id)
            queue.append(step)
            report.notes.append(
                f"{step.member_label} became the leader during the sweep: defragmented last"
            )
            return True
        return False

    @staticmethod
    def _stopped(report: RunReport, result: StepResult, queue: list[Step]) -> Outcome:
        """Record the steps left after one that did not succeed; the outcome it means."""
        interrupted = result.status is StepStatus.NOT_STARTED
        mark_not_started(
            report,
            queue,
            "stop requested" if interrupted else "not started: an earlier step did not succeed",
        )
        if interrupted:
            return Outcome.INTERRUPTED
        return Outcome.REFUSED if result.status is StepStatus.REFUSED else Outcome.FAILED
