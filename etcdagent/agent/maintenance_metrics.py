"""What the agent did: maintenance runs, and the compactions and defragmentations in them."""

from __future__ import annotations

from etcdagent.act.run_report import Outcome, RunReport
from etcdagent.act.step_results import ConsistencyResult, StepResult, StepStatus
from etcdagent.agent.metric_factory import MEMBER_LABELS, MetricFactory, discard
from etcdagent.decide.plan import StepKind
from etcdagent.decide.recovery import Unrecoverable

TRIGGERS = ("window", "emergency-nospace", "emergency-quota", "periodic", "once")
RUN_RESULTS = tuple(o.value for o in Outcome)
COMPACTION_RESULTS = ("done", "already-done", "failed", "refused")
DEFRAG_RESULTS = ("done", "failed", "refused")
CONSISTENCY_RESULTS = tuple(r.value for r in ConsistencyResult)

# A defrag takes from ~0.1 s (small file) to tens of minutes (multi-GiB file on slow disks).
DEFRAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800)

_STATUS_RESULT = {
    StepStatus.DONE: "done",
    StepStatus.ALREADY_DONE: "already-done",
    StepStatus.FAILED: "failed",
    StepStatus.REFUSED: "refused",
}


def _step_member(result: StepResult) -> tuple[str, str]:
    step = result.step
    member_id = f"{step.member_id:x}" if step.member_id is not None else ""
    return (step.member_name or step.member_label, member_id)


class MaintenanceMetrics:
    """Counters of runs and steps, updated from each finished run's report."""

    def __init__(self, make: MetricFactory) -> None:
        self.compactions = make.counter(
            "compactions_total",
            "Compactions the agent asked for, by result: done, already-done (the revision was "
            "already compacted), failed, refused (a gate or the lock refused it).",
            ("result",),
        )
        self.last_compacted_revision = make.optional(
            "last_compacted_revision",
            "The revision of the agent's last successful (or already done) compaction; absent "
            "until there is one.",
        )
        self.defrags = make.counter(
            "defragmentations_total",
            "Defragmentations of a member the agent attempted, by result: done, failed, refused "
            "(a safety gate said no just before it).",
            (*MEMBER_LABELS, "result"),
        )
        self.defrag_duration = make.histogram(
            "defrag_duration_seconds",
            "Duration of the agent's successful defragmentations, from the request until the "
            "member answered again and caught up with the leader.",
            DEFRAG_BUCKETS,
            ("member",),
        )
        self.defrag_reclaimed = make.counter(
            "defrag_reclaimed_bytes_total",
            "Bytes the member's database file shrank by in the agent's defragmentations.",
            ("member",),
        )
        self.runs = make.counter(
            "maintenance_runs_total",
            "Maintenance runs by what started them (`trigger`: window, emergency-nospace, "
            "emergency-quota, periodic (compaction), once) and how they ended "
            "(`result`: done, nothing-to-do, refused, failed, interrupted). Dry runs are not "
            "counted.",
            ("trigger", "result"),
        )
        self.consistency_checks = make.counter(
            "consistency_checks_total",
            "HashKV comparisons of a defragmented member with a peer at one revision, by "
            "result: match, mismatch (the step failed and the sweep stopped), unavailable (etcd "
            "before 3.5.10 has no HashKV on its gateway), skipped (no peer, an error, or the "
            "compacted revisions never agreed).",
            ("result",),
        )
        self.consistency_mismatch = make.gauge(
            "consistency_mismatch_revision",
            "The revision at which a defragmented member's HashKV differed from its peer's "
            "(`peer`); present from the mismatch until a later check of the member matches.",
            (*MEMBER_LABELS, "peer"),
        )
        self.nospace_unrecoverable = make.gauge(
            "nospace_unrecoverable",
            "1 while the last NOSPACE recovery was refused because a member's data in use "
            "(after compaction) reaches defrag.recover_max_quota_use of its quota: no defrag "
            "can make room, nothing was defragmented, the alarm stays armed until data is "
            "deleted or the quota raised; 0 otherwise.",
        )
        self.nospace_unrecoverable_total = make.counter(
            "nospace_unrecoverable_refusals_total",
            "NOSPACE recoveries refused because the data in use fills a member's quota (the "
            "daemon does not try again until a member's in-use size or quota changes, or "
            "defrag.recover_retry_unrecoverable passed).",
        )
        self.nospace_to_delete = make.gauge(
            "nospace_to_delete_bytes",
            "Per member, the live data to delete before a refused NOSPACE recovery can work "
            "(or raise the quota); present while etcdagent_nospace_unrecoverable is 1.",
            MEMBER_LABELS,
        )
        # Series that must exist before the first event, so that rate() and alerts see the
        # first increment.
        for result in CONSISTENCY_RESULTS:
            self.consistency_checks.labels(result)
        for result in COMPACTION_RESULTS:
            self.compactions.labels(result)
        for trigger in TRIGGERS:
            for result in RUN_RESULTS:
                self.runs.labels(trigger, result)

    def record_report(self, report: RunReport, trigger: str) -> None:
        """Count one finished maintenance run and its compactions and defragmentations.

        A dry run changed nothing and is not counted. Steps that never started, or were skipped
        because there was nothing left to do, are not counted either.
        """
        if report.dry_run:
            return
        self.runs.labels(trigger, report.outcome.value).inc()
        for result in report.results:
            self._record_consistency(result)
            outcome = _STATUS_RESULT.get(result.status)
            if outcome is None:
                continue
            if result.step.kind is StepKind.COMPACT:
                self._record_compaction(result, outcome)
            elif result.step.kind is StepKind.DEFRAG:
                self._record_defrag(result, outcome)

    def record_nospace(self, refused: Unrecoverable | None, *, counted: bool = True) -> None:
        """After a recovery attempt (or once no NOSPACE alarm is left): whether it was refused as
        unrecoverable, and per member how much to delete. ``counted=False`` only updates the
        gauges (nothing was attempted)."""
        self.nospace_unrecoverable.set(1 if refused is not None else 0)
        self.nospace_to_delete.clear()
        if refused is None:
            return
        if counted:
            self.nospace_unrecoverable_total.inc()
        for shortfall in refused.shortfalls:
            member_id = f"{shortfall.member_id:x}"
            self.nospace_to_delete.labels(shortfall.member_name, member_id).set(shortfall.to_delete)

    def _record_compaction(self, result: StepResult, outcome: str) -> None:
        self.compactions.labels(outcome).inc()
        ok = result.status in (StepStatus.DONE, StepStatus.ALREADY_DONE)
        if ok and result.step.revision is not None:
            self.last_compacted_revision.set(result.step.revision)

    def _record_defrag(self, result: StepResult, outcome: str) -> None:
        name, member_id = _step_member(result)
        self.defrags.labels(name, member_id, outcome).inc()
        if result.status is StepStatus.DONE:
            if result.duration is not None:
                self.defrag_duration.labels(name).observe(max(0.0, result.duration))
            if result.reclaimed:
                self.defrag_reclaimed.labels(name).inc(max(0, result.reclaimed))
            else:
                self.defrag_reclaimed.labels(name)  # exists, at 0

    def _record_consistency(self, result: StepResult) -> None:
        """Count a defrag's HashKV comparison; a mismatch stays visible until a match clears it."""
        check = result.consistency
        if check is None:
            return
        self.consistency_checks.labels(check.result.value).inc()
        name, member_id = _step_member(result)
        if check.result is ConsistencyResult.MISMATCH and check.revision is not None:
            self.consistency_mismatch.labels(name, member_id, check.peer_name or "").set(
                check.revision
            )
        elif check.result is ConsistencyResult.MATCH:
            for labels in self._mismatches_of(name, member_id):
                discard(self.consistency_mismatch, *labels)

    def _mismatches_of(self, name: str, member_id: str) -> list[tuple[str, ...]]:
        """The label values of the mismatch series of one member."""
        found: list[tuple[str, ...]] = []
        for family in self.consistency_mismatch.collect():
            for sample in family.samples:
                labels = sample.labels
                if labels.get("member") == name and labels.get("member_id") == member_id:
                    found.append((name, member_id, labels.get("peer", "")))
        return found
