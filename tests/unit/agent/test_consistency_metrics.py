"""The consistency check's metrics: every result counted, a mismatch visible (with its revision)
until a later check of the same member matches."""

from __future__ import annotations

from etcdagent_testing.snapshots import IDS, WHEN
from prometheus_client import CollectorRegistry

from etcdagent.act.run_report import Outcome, RunReport
from etcdagent.act.step_results import (
    ConsistencyCheck,
    ConsistencyResult,
    StepResult,
    StepStatus,
)
from etcdagent.agent.metrics import AgentMetrics
from etcdagent.decide.plan import Step, StepKind

MISMATCH = "etcdagent_consistency_mismatch_revision"
CHECKS = "etcdagent_consistency_checks_total"


def defrag(name: str, status: StepStatus, result: ConsistencyResult) -> StepResult:
    step = Step(kind=StepKind.DEFRAG, reason="r", member_id=IDS[name], member_name=name)
    check = ConsistencyCheck(
        result=result, message="m", peer_id=IDS["m3"], peer_name="m3", revision=4242
    )
    return StepResult(step=step, status=status, consistency=check)


def report(*results: StepResult, outcome: Outcome = Outcome.DONE) -> RunReport:
    return RunReport(
        command="defrag", dry_run=False, started_at=WHEN, results=list(results), outcome=outcome
    )


def test_each_result_is_counted_and_a_mismatch_stays_until_a_match_clears_it() -> None:
    metrics = AgentMetrics(CollectorRegistry())
    sample = metrics.registry.get_sample_value
    m1 = {"member": "m1", "member_id": f"{IDS['m1']:x}", "peer": "m3"}
    for result in ("match", "mismatch", "unavailable", "skipped"):
        assert sample(CHECKS, {"result": result}) == 0  # exists before the first check

    metrics.record_report(
        report(
            defrag("m2", StepStatus.DONE, ConsistencyResult.MATCH),
            defrag("m1", StepStatus.FAILED, ConsistencyResult.MISMATCH),
            outcome=Outcome.FAILED,
        ),
        "window",
    )

    assert sample(CHECKS, {"result": "match"}) == 1
    assert sample(CHECKS, {"result": "mismatch"}) == 1
    assert sample(MISMATCH, m1) == 4242

    metrics.record_report(report(defrag("m2", StepStatus.DONE, ConsistencyResult.SKIPPED)), "once")
    assert sample(MISMATCH, m1) == 4242  # another member's check does not clear it

    metrics.record_report(report(defrag("m1", StepStatus.DONE, ConsistencyResult.MATCH)), "once")
    assert sample(MISMATCH, m1) is None
    assert sample(CHECKS, {"result": "skipped"}) == 1
    assert sample(CHECKS, {"result": "match"}) == 2


def test_a_dry_run_counts_no_check() -> None:
    metrics = AgentMetrics(CollectorRegistry())
    dry = report(defrag("m1", StepStatus.DONE, ConsistencyResult.MATCH))
    dry.dry_run = True

    metrics.record_report(dry, "once")

    assert metrics.registry.get_sample_value(CHECKS, {"result": "match"}) == 0
