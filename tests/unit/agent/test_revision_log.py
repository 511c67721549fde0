"""The daemon's own (monotonic time, revision) record that checks the retention markers."""

from __future__ import annotations

from etcdagent.agent.revision_log import RevisionLog


def test_observations_are_aged_by_the_monotonic_clock() -> None:
    now = [100.0]
    log = RevisionLog(lambda: now[0])
    log.record(10)
    now[0] = 130.0
    log.record(20)
    log.record(None)  # no member answered: nothing learnt
    now[0] = 200.0
    assert log.observations() == [(100.0, 10), (70.0, 20)]


def test_the_record_stays_bounded_and_keeps_its_oldest_and_newest() -> None:
    now = [0.0]
    log = RevisionLog(lambda: now[0], limit=8)
    for revision in range(100):
        now[0] = float(revision)
        log.record(revision)
    assert len(log) <= 8
    revisions = [rev for _, rev in log.observations()]
    assert revisions[0] == 0
    assert revisions[-1] == 99
    assert revisions == sorted(revisions)
