"""How the consistency check reads in the human output: named in the plan and the step line, its
match on a line of its own, a mismatch as the failed step's message."""

from __future__ import annotations

from etcdagent_testing.snapshots import cluster, settings, snap

from etcdagent.act.run_report import PhasePlan
from etcdagent.act.step_results import (
    ConsistencyCheck,
    ConsistencyResult,
    StepResult,
    StepStatus,
)
from etcdagent.cli.maintenance_view import describe_step, render_plan, render_result
from etcdagent.decide.defrag import plan_defrag


def test_the_plan_names_the_peer_of_each_defrag() -> None:
    snapshot = cluster(*(snap(n, version="3.5.30") for n in ("m1", "m2", "m3")))
    plan = plan_defrag(snapshot, settings())

    lines = render_plan(PhasePlan(phase="defrag", decided="now", plan=plan))

    assert lines[1].startswith("  1. defrag m2, timeout 1m, then compare HashKV with m1: ")
    assert describe_step(plan.steps[-1], short=True) == (
        "defrag m1, timeout 1m, then compare HashKV with m3"
    )


def test_an_old_cluster_says_the_check_is_not_available() -> None:
    plan = plan_defrag(cluster(snap("m1"), snap("m2"), snap("m3")), settings())

    lines = render_plan(PhasePlan(phase="defrag", decided="now", plan=plan))

    note = (
        "  note: etcd 3.5.1 has no HashKV on its gateway (3.5.10+): the consistency check is "
        "not available"
    )
    assert note in lines
    assert not [line for line in lines if "then compare" in line]


def test_a_match_gets_its_own_line_a_mismatch_is_the_message() -> None:
    step = plan_defrag(
        cluster(*(snap(n, version="3.6.14") for n in ("m1", "m2", "m3"))), settings()
    ).steps[0]
    match = ConsistencyCheck(
        result=ConsistencyResult.MATCH, message="HashKV 7 matches m1's at revision 9 (...)"
    )
    done = StepResult(step=step, status=StepStatus.DONE, message="1 MiB -> 0 B", consistency=match)
    assert render_result(done).splitlines()[1] == (
        "   consistency match: HashKV 7 matches m1's at revision 9 (...)"
    )
    failed = StepResult(
        step=step,
        status=StepStatus.FAILED,
        message="HashKV mismatch after the defrag: m2 has 7, m1 has 8 at revision 9 (...)",
        consistency=match.model_copy(update={"result": ConsistencyResult.MISMATCH}),
    )
    assert render_result(failed) == (
        "   failed: HashKV mismatch after the defrag: m2 has 7, m1 has 8 at revision 9 (...)"
    )
