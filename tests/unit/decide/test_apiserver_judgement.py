"""Who compacts: the judgement on kube-apiserver's compact_rev_key and what the plan does with it
(pure: the key, the markers' ages and the daemon's record are passed in)."""

from __future__ import annotations

from etcdagent_testing.snapshots import settings, three

from etcdagent.decide.apiserver import KeyWitness, judge_apiserver, quiet_by_markers
from etcdagent.decide.compaction import Marker, plan_compaction
from etcdagent.decide.plan import Plan, StepKind
from etcdagent.observe.compact_rev_key import CompactRevKey, parse_value

MIN = 60.0
AUTO = settings(compaction={"retain_revisions": 100})
KEY = CompactRevKey(revision=5000, version=7, value=4500, mod_revision=4800)
OURS = CompactRevKey(revision=5000, version=8, value=4700, mod_revision=4900, agent_revision=4900)
ABSENT = CompactRevKey(revision=5000)


def witness(quiet: float, interval: float | None = None) -> KeyWitness:
    return KeyWitness(
        quiet_for=quiet, interval=interval, version=KEY.version, mod_revision=KEY.mod_revision
    )


def plan(key: CompactRevKey | None, *, quiet: float | None = None, mode: str = "auto") -> Plan:
    s = settings(compaction={"retain_revisions": 100, "mode": mode})
    witness = None
    if quiet is not None and key is not None:
        witness = KeyWitness(quiet_for=quiet, version=key.version, mod_revision=key.mod_revision)
    judged = judge_apiserver(key, s.compaction, (), witness, error="refused")
    return plan_compaction(three(revision=5000), s, [], (), judged)


def test_a_moving_key_leaves_compaction_to_kube_apiserver_and_says_so() -> None:
    result = plan(KEY, quiet=3 * MIN)
    assert not result.steps
    note = result.notes[0]
    assert note.startswith("nothing to compact: kube-apiserver compacts every 5m")
    assert "last to revision 4500, at least 3m ago" in note
    assert "takes over once it has been quiet for 10m" in note


def test_a_key_of_unknown_age_counts_as_moving() -> None:
    result = plan(KEY)  # no witness, no marker after its last move
    assert not result.steps
    assert "how long ago is not known yet" in result.notes[0]


def test_a_key_quiet_for_two_intervals_is_taken_over_through_its_transaction() -> None:
    result = plan(KEY, quiet=10 * MIN)
    (step,) = result.steps
    assert step.kind is StepKind.COMPACT and step.revision == 4900
    assert step.cas_version == 7
    assert "moves compact_rev_key from version 7" in step.reason


def test_the_agents_own_move_restarts_the_quiet_time() -> None:
    assert not plan(OURS, quiet=9 * MIN).steps
    assert plan(OURS, quiet=10 * MIN).steps


def test_without_the_key_the_agent_compacts_and_creates_none() -> None:
    (step,) = plan(ABSENT).steps
    assert step.cas_version is None


def test_an_unreadable_key_compacts_nothing_in_auto_mode() -> None:
    result = plan(None)
    assert not result.steps
    assert "compact_rev_key not readable (refused)" in result.notes[0]


def test_always_compacts_under_a_moving_key_and_never_compacts_without_one() -> None:
    (step,) = plan(KEY, quiet=1, mode="always").steps
    assert step.cas_version == 7
    never = plan(ABSENT, mode="never")
    assert not never.steps
    assert "compaction.mode is never" in never.notes[0]


def test_markers_written_after_the_last_move_prove_its_age_only_they() -> None:
    markers = [
        Marker(revision=4700, age=30 * MIN),  # before the move: says nothing
        Marker(revision=4850, age=12 * MIN),
        Marker(revision=4950, age=2 * MIN),
    ]
    assert quiet_by_markers(markers, 4800) == 12 * MIN
    assert quiet_by_markers(markers, 4960) is None
    judged = judge_apiserver(KEY, AUTO.compaction, markers)
    assert judged.quiet and not judged.apiserver_compacts
    assert "no kube-apiserver compacts" in judged.describe()


def test_a_longer_measured_interval_waits_longer_a_shorter_one_does_not_hurry() -> None:
    longer = judge_apiserver(KEY, AUTO.compaction, (), witness(15 * MIN, 600))
    assert longer.horizon == 20 * MIN and not longer.quiet
    assert "every ~10m" in longer.describe()
    shorter = judge_apiserver(KEY, AUTO.compaction, (), witness(9 * MIN, 60))
    assert shorter.horizon == 10 * MIN and not shorter.quiet


def test_what_the_daemon_saw_of_another_state_of_the_key_proves_nothing() -> None:
    """Moved between the daemon's read and this one: the long quiet time was the old state's."""
    moved = KEY.model_copy(update={"version": 8, "mod_revision": 4990})
    assert judge_apiserver(KEY, AUTO.compaction, (), witness(15 * MIN)).quiet
    judged = judge_apiserver(moved, AUTO.compaction, (), witness(15 * MIN))
    assert judged.quiet_for is None and not judged.quiet


def test_the_value_is_read_as_apiservers_write_it() -> None:
    assert parse_value(b"12345") == 12345
    assert parse_value(b"0") == 0
    assert parse_value(b"not a revision") is None
    assert parse_value(b"-3") is None
